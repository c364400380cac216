"""jobhost: the plugin author's API.

A plugin module implements `jobhost_job_types()` (marked with `@hookimpl`) returning `JobType`
objects; handlers receive the payload and a `RunContext`, and may raise `Retry` or
`PermanentFailure`.
"""

from __future__ import annotations

import pluggy

from host.errors import PermanentFailure, Retry
from host.jobtypes import JobType
from host.worker.context import RunContext

#: Marks a plugin's hook implementations (pluggy project name "jobhost").
hookimpl = pluggy.HookimplMarker("jobhost")

__all__ = ["JobType", "PermanentFailure", "Retry", "RunContext", "hookimpl"]
