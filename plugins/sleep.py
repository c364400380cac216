"""`sleep`: waits a given number of seconds, reporting progress. For trying out leases,
timeouts and graceful shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from host import JobType, RunContext, hookimpl
from plugins._schemas import schema_path


async def handle(payload: dict[str, Any], ctx: RunContext) -> dict[str, float]:
    seconds = float(payload["seconds"])
    began = time.monotonic()
    step = min(1.0, seconds) if seconds > 0 else 0
    while (left := seconds - (time.monotonic() - began)) > 0:
        await asyncio.sleep(min(step, left))
        await ctx.progress({"slept_s": round(time.monotonic() - began, 3), "of_s": seconds})
    return {"slept_s": round(time.monotonic() - began, 3)}


@hookimpl
def jobhost_job_types() -> list[JobType]:
    return [
        JobType(
            "sleep",
            handle,
            schema_path("sleep"),
            description="Sleeps for `seconds`.",
            timeout_s=3600,
        )
    ]
