"""Lanes: how a job type's ready runs are split so that claims can serve them in turn.

A run's lane is its tenant, or its tenant and the value of the type's `lane_key` payload field
(`acme/customer-42`). Claims take lanes round robin, so one tenant or customer with 100,000
runs waiting cannot starve another with 100, and lane limits (`lane_rate`, `lane_concurrency`)
apply to each lane separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from host.policy import Policy


def lane_of(policy: Policy, tenant: str, payload: Mapping[str, Any]) -> str:
    """The lane of a run of a type with `policy`, for `tenant` and `payload`."""
    if policy.lane_key is None:
        return tenant
    value = payload.get(policy.lane_key)
    text = value if isinstance(value, str) else "" if value is None else repr(value)
    return f"{tenant}/{text}"
