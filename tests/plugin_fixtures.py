"""Job types for the tests: handlers that fail, retry, hang or record what they saw.

Handlers record each execution in the Redis list `jh:{ns}:test:log` (via the envelope's
namespace passed in the payload), so tests and worker subprocesses share one record.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from redis.asyncio import Redis

from host import JobType, PermanentFailure, Retry, RunContext, hookimpl

ANY_OBJECT: dict[str, Any] = {"type": "object"}


async def record(payload: dict[str, Any], ctx: RunContext, event: str = "ran") -> None:
    """Append an execution record when the payload says where (redis_url, namespace)."""
    url = payload.get("redis_url")
    if not url:
        return
    entry = (
        f"{event}|{payload.get('key', '')}|{ctx.run_id}|{ctx.attempt}|{os.getpid()}|{time.time()}"
    )
    client = Redis.from_url(url)
    try:
        await client.rpush(f"jh:{{{payload['namespace']}}}:test:log", entry)
    finally:
        await client.aclose()


async def recorder(payload: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    await record(payload, ctx)
    await asyncio.sleep(payload.get("sleep_s", 0))
    return {"key": payload.get("key"), "attempt": ctx.attempt}


async def span(payload: dict[str, Any], ctx: RunContext) -> None:
    """Records its start and end, so tests can compute rates and overlap."""
    await record(payload, ctx, "start")
    await asyncio.sleep(payload.get("sleep_s", 0))
    await record(payload, ctx, "end")


async def always_fails(payload: dict[str, Any], ctx: RunContext) -> None:
    await record(payload, ctx)
    raise ValueError(f"boom on attempt {ctx.attempt}")


async def flaky(payload: dict[str, Any], ctx: RunContext) -> dict[str, int]:
    await record(payload, ctx)
    if ctx.attempt < payload["succeed_on"]:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


async def permanent(payload: dict[str, Any], ctx: RunContext) -> None:
    await record(payload, ctx)
    raise PermanentFailure("the input can never work")


async def asks_retry(payload: dict[str, Any], ctx: RunContext) -> str:
    await record(payload, ctx)
    if ctx.attempt == 1:
        raise Retry("not yet", delay=payload.get("delay", 0.2))
    return "done"


async def hangs(payload: dict[str, Any], ctx: RunContext) -> None:
    await record(payload, ctx)
    await asyncio.sleep(3600)


def sync_handler(payload: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    time.sleep(payload.get("sleep_s", 0))
    return {"thread": True, "echo": payload.get("value")}


def unserialisable(payload: dict[str, Any], ctx: RunContext) -> object:
    return object()


@hookimpl
def jobhost_job_types() -> list[JobType]:
    fast = {"base_s": 0.05, "factor": 2.0, "max_s": 0.5, "jitter": 0.0}
    return [
        JobType("test.record", recorder, ANY_OBJECT),
        JobType("test.span", span, ANY_OBJECT),
        JobType("test.keyed", span, ANY_OBJECT, lane_key="customer"),
        JobType("test.fail", always_fails, ANY_OBJECT, max_attempts=3, backoff=fast),
        JobType("test.flaky", flaky, ANY_OBJECT, max_attempts=5, backoff=fast),
        JobType("test.permanent", permanent, ANY_OBJECT, max_attempts=5, backoff=fast),
        JobType("test.retry", asks_retry, ANY_OBJECT, max_attempts=3),
        JobType("test.hang", hangs, ANY_OBJECT, timeout_s=0.5, max_attempts=2, backoff=fast),
        JobType("test.sync", sync_handler, ANY_OBJECT),
        JobType("test.unserialisable", unserialisable, ANY_OBJECT),
        JobType(
            "test.strict",
            recorder,
            {
                "type": "object",
                "properties": {
                    "email": {"type": "string", "format": "email"},
                    "count": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["email", "count"],
                "additionalProperties": False,
            },
        ),
    ]
