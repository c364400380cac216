"""The benchmark's own job type, loaded next to the bundled plugins (never listed in plugins.toml).

`bench.stamp` returns the wall-clock time at which its handler started, so pickup latency is
`result.started - payload.t`, where the producer puts the time its enqueue call started in `t`.
"""

from __future__ import annotations

import time
from typing import Any

from host import JobType, RunContext, hookimpl

STAMP = "bench.stamp"


async def stamp(payload: dict[str, Any], ctx: RunContext) -> dict[str, float]:
    return {"started": time.time()}


@hookimpl
def jobhost_job_types() -> list[JobType]:
    return [
        JobType(
            STAMP,
            stamp,
            {"type": "object"},
            description="Returns the time its handler started (benchmark pickup latency).",
        )
    ]
