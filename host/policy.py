"""Per-type policy: defaults, parsing and merging. Pure: no I/O.

A job type's effective policy is the host default, overlaid by the plugin's defaults, overlaid by
plugins.toml; a run may then override priority, max_attempts and timeout_s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from host.errors import ConfigError

#: Priorities are bounded so that a ready-queue score (priority, then FIFO) fits a double exactly.
MIN_PRIORITY = -1000
MAX_PRIORITY = 1000

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PER_SECONDS |= {"h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: delay = min(max_s, base_s * factor ** (attempt - 1)), then jitter."""

    base_s: float = 1.0  #: delay before the second attempt
    factor: float = 2.0  #: growth per further attempt
    max_s: float = 3600.0  #: ceiling for any single delay
    jitter: float = 0.2  #: fraction of the delay drawn at random, 0 for none


@dataclass(frozen=True)
class Policy:
    """How runs of one job type are queued, retried and limited."""

    priority: int = 0  #: higher runs first
    max_attempts: int = 3  #: attempts before the run is dead, 1 for no retries
    timeout_s: float = 300.0  #: an attempt running longer fails as timed out
    backoff: Backoff = Backoff()  #: delay between attempts
    rate: str | None = None  #: token bucket refill, e.g. "10/s", "600/min" (enforced by the claim)
    burst: int | None = None  #: token bucket capacity
    concurrency: int | None = None  #: most runs of this type running at once, across workers
    #: Lanes: runs of a type are split by tenant, and by this top-level payload field if set
    #: (e.g. "customer_id"); claims serve lanes in turn, and lane limits apply to each lane.
    lane_key: str | None = None
    lane_rate: str | None = None  #: token bucket per lane, e.g. "5/s"
    lane_burst: int | None = None  #: capacity of each lane's bucket
    lane_concurrency: int | None = None  #: most runs of one lane running at once


def parse_rate(text: str) -> float:
    """Parse "10/s", "600/min", "3/hour" into tokens per second."""
    match = _RATE.match(text)
    if not match:
        raise ConfigError(f"rate {text!r} is not of the form N/s, N/min or N/hour")
    return float(match.group(1)) / _PER_SECONDS[match.group(2)]


_POLICY_FIELDS = {f.name for f in fields(Policy)}
_BACKOFF_FIELDS = {f.name for f in fields(Backoff)}


def merge_policy(base: Policy, overrides: Mapping[str, Any], *, where: str) -> Policy:
    """Overlay `overrides` (from a plugin or plugins.toml) on `base`, checking every field."""
    unknown = set(overrides) - _POLICY_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown policy field(s) {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = dict(overrides)
    if "backoff" in changes:
        changes["backoff"] = _merge_backoff(base.backoff, changes["backoff"], where=where)
    merged = replace(base, **changes)
    check_policy(merged, where=where)
    return merged


def _merge_backoff(base: Backoff, value: Any, *, where: str) -> Backoff:
    if isinstance(value, Backoff):
        return value
    if not isinstance(value, Mapping):
        names = ", ".join(sorted(_BACKOFF_FIELDS))
        raise ConfigError(f"{where}: backoff must be a table of {names}")
    unknown = set(value) - _BACKOFF_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown backoff field(s) {', '.join(sorted(unknown))}")
    return replace(base, **dict(value))


def check_policy(policy: Policy, *, where: str) -> None:
    """Raise ConfigError naming `where` and the field when a value is out of range."""
    problems: list[str] = []
    if not _is_int(policy.priority) or not MIN_PRIORITY <= policy.priority <= MAX_PRIORITY:
        problems.append(f"priority must be an integer in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
    if not _is_int(policy.max_attempts) or policy.max_attempts < 1:
        problems.append("max_attempts must be an integer >= 1")
    if not _is_number(policy.timeout_s) or policy.timeout_s <= 0:
        problems.append("timeout_s must be a positive number")
    b = policy.backoff
    numbers = all(_is_number(v) for v in (b.base_s, b.factor, b.max_s, b.jitter))
    if not numbers or b.base_s < 0 or b.factor < 1 or b.max_s < 0 or not 0 <= b.jitter <= 1:
        problems.append("backoff needs base_s >= 0, factor >= 1, max_s >= 0, 0 <= jitter <= 1")
    for prefix in ("", "lane_"):
        problems += _limit_problems(policy, prefix)
    if policy.lane_key is not None and (
        not isinstance(policy.lane_key, str) or not policy.lane_key
    ):
        problems.append("lane_key must be the name of a top-level payload field")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _limit_problems(policy: Policy, prefix: str) -> list[str]:
    problems = []
    rate = getattr(policy, prefix + "rate")
    if rate is not None and not isinstance(rate, str):
        problems.append(f'{prefix}rate must be a string such as "10/s", not {rate!r}')
    elif rate is not None:
        try:
            parse_rate(rate)
        except ConfigError as exc:
            problems.append(f"{prefix}{exc.message}")
    for name in ("burst", "concurrency"):
        value = getattr(policy, prefix + name)
        if value is not None and (not _is_int(value) or value < 1):
            problems.append(f"{prefix}{name} must be an integer >= 1")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def policy_as_dict(policy: Policy) -> dict[str, Any]:
    """The policy as plain JSON-ready data (for `jobhost plugins` and the API)."""
    data = {f.name: getattr(policy, f.name) for f in fields(Policy)}
    data["backoff"] = {f.name: getattr(policy.backoff, f.name) for f in fields(Backoff)}
    return data
