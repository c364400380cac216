"""`noop`: does nothing and returns nothing. For tests, health checks and benchmarks."""

from __future__ import annotations

from typing import Any

from host import JobType, RunContext, hookimpl
from plugins._schemas import schema_path


async def handle(payload: dict[str, Any], ctx: RunContext) -> None:
    return None


@hookimpl
def jobhost_job_types() -> list[JobType]:
    return [JobType("noop", handle, schema_path("noop"), description="Does nothing.")]
