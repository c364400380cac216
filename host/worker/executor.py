"""Runs one attempt of one run: the handler inline (async) or in a thread (sync), under its
timeout, and turns whatever happens into an AttemptResult. Never raises for a handler's sake."""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger("jobhost.worker")


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


class _RunLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {}).update(self.extra or {})
        return msg, kwargs


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
            ctx = _context(lease, envelope, jt, max_attempts, loop.time() + timeout_s)
            ctx._extend = lambda s: _extend_attempt(cm, loop, s, extend, lease.id)
            ctx._progress = lambda report: progress(lease.id, report)
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


def _context(
    lease: Lease, envelope: dict[str, Any], jt: ResolvedType, max_attempts: int, deadline: float
) -> RunContext:
    extra = {"run_id": lease.id, "job_type": jt.name, "attempt": lease.attempt}
    return RunContext(
        run_id=lease.id,
        job_type=jt.name,
        attempt=lease.attempt,
        max_attempts=max_attempts,
        deadline=deadline,
        tenant_id=envelope.get("tenant", "default"),
        job_id=envelope.get("job_id"),
        log=_RunLog(log, extra),
    )


async def _extend_attempt(
    cm: asyncio.Timeout,
    loop: asyncio.AbstractEventLoop,
    seconds: float,
    extend: Callable[[str, float], Awaitable[None]],
    run_id: str,
) -> None:
    """Push this attempt's timeout back to at least `seconds` from now, and its lease with it."""
    new_deadline = loop.time() + seconds
    current = cm.when()
    if current is None or new_deadline > current:
        cm.reschedule(new_deadline)
    await extend(run_id, seconds)
