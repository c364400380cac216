"""Runs one attempt of one run: the handler inline (async) or in a thread (sync), under its
timeout, and turns whatever happens into an AttemptResult. Never raises for a handler's sake."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from host.errors import PermanentFailure, Retry
from host.jobtypes import ResolvedType
from host.queue.queue import Lease
from host.states import Outcome
from host.worker.context import RunContext


@dataclass(slots=True)
class AttemptResult:
    """How one attempt ended, before the retry decision is made."""

    lease: Lease
    job_type: str
    max_attempts: int
    started_at: float  #: epoch seconds
    finished_at: float
    outcome: Outcome  #: SUCCEEDED, FAILED or TIMED_OUT
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    requested_delay: float | None = None  #: from Retry(delay=...)
    permanent: bool = False  #: PermanentFailure, or a problem no retry can fix


async def execute(
    lease: Lease,
    envelope: dict[str, Any],
    jt: ResolvedType,
    threads: ThreadPoolExecutor,
    extend: Callable[[str, float], Awaitable[None]],
    progress: Callable[[str, Any], Awaitable[None]],
) -> AttemptResult:
    """Run the handler for `lease` and describe the outcome."""
    timeout_s = float(envelope.get("timeout_s") or jt.policy.timeout_s)
    max_attempts = int(envelope.get("max_attempts") or jt.policy.max_attempts)
    started = time.time()
    result = AttemptResult(lease, jt.name, max_attempts, started, started, Outcome.FAILED)
    loop = asyncio.get_running_loop()
    cm = asyncio.timeout(timeout_s)
    try:
        async with cm:
            ctx = RunContext(
                lease.id, jt.name, lease.attempt, max_attempts, loop.time() + timeout_s,
                envelope.get("tenant", "default"), envelope.get("job_id"),
                extend=extend, progress=progress, timeout=cm,
            )  # fmt: skip
            if jt.is_async:
                value = await jt.handler(envelope["payload"], ctx)
            else:
                value = await loop.run_in_executor(threads, jt.handler, envelope["payload"], ctx)
        result.result_json = orjson.dumps(value).decode()
        result.outcome = Outcome.SUCCEEDED
    except Retry as exc:
        result.error = f"Retry: {exc.message}"
        result.requested_delay = exc.delay
    except PermanentFailure as exc:
        result.error = f"PermanentFailure: {exc.message}"
        result.traceback = traceback.format_exc()
        result.permanent = True
    except TimeoutError as exc:
        if cm.expired():
            result.outcome = Outcome.TIMED_OUT
            result.error = f"timed out after {timeout_s:g}s"
        else:
            _record_exception(result, exc)
    except orjson.JSONEncodeError as exc:
        result.error = f"result is not JSON-serialisable: {exc}"
        result.permanent = True
    except Exception as exc:
        _record_exception(result, exc)
    result.finished_at = time.time()
    return result


def _record_exception(result: AttemptResult, exc: Exception) -> None:
    result.error = f"{type(exc).__name__}: {exc}"
    result.traceback = traceback.format_exc()
