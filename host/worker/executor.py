"""Runs one attempt of one run: the handler inline (async) or in a thread (sync), under its
timeout, and turns whatever happens into an AttemptResult. Never raises for a handler's sake."""

from __future__ import annotations

import asyncio
import time
import traceback
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
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


_time = time.time
_running_loop = asyncio.get_running_loop
_FAILED = Outcome.FAILED
_SUCCEEDED = Outcome.SUCCEEDED


class _LazyTimeout:
    """The attempt's timeout, armed only once the handler first suspends. A handler that returns
    without awaiting anything (which asyncio could not interrupt anyway) then costs no timer:
    arming and cancelling one per run was a tenth of a worker's CPU on short runs."""

    __slots__ = ("_when", "cm")

    def __init__(self, when: float) -> None:
        self._when = when
        self.cm: asyncio.Timeout | None = None

    def when(self) -> float | None:
        return self.cm.when() if self.cm is not None else self._when

    def reschedule(self, when: float | None) -> None:
        if self.cm is not None:
            self.cm.reschedule(when)
        elif when is not None:
            self._when = when

    def arm(self) -> asyncio.Timeout:
        self.cm = asyncio.timeout_at(self._when)
        return self.cm

    def expired(self) -> bool:
        return self.cm is not None and self.cm.expired()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Go on driving a coroutine that suspended on `pending` in its first step (what `await`
    does after that step): values and exceptions (a timeout's cancellation) pass through."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def execute(
    lease: Lease,
    envelope: dict[str, Any],
    jt: ResolvedType,
    threads: ThreadPoolExecutor,
    extend: Callable[[str, float], Awaitable[None]],
    progress: Callable[[str, Any], Awaitable[None]],
    suspending: Callable[[], None] = lambda: None,
) -> AttemptResult:
    """Run the handler for `lease` and describe the outcome. `suspending` is called once the
    handler is about to wait (its coroutine suspends, or it goes to a thread): from then on
    this runner is busy, and the worker may start another run beside it."""
    policy = jt.policy
    timeout_s = float(envelope.get("timeout_s") or policy.timeout_s)
    max_attempts = int(envelope.get("max_attempts") or policy.max_attempts)
    started = _time()
    result = AttemptResult(lease, jt.name, max_attempts, started, started, _FAILED)
    loop = _running_loop()
    deadline = loop.time() + timeout_s
    timeout = _LazyTimeout(deadline)
    try:
        ctx = RunContext(
            lease.id, jt.name, lease.attempt, max_attempts, deadline,
            envelope.get("tenant", "default"), envelope.get("job_id"),
            extend=extend, progress=progress, timeout=timeout,
        )  # fmt: skip
        if jt.is_async:
            coro: Coroutine[Any, Any, Any]
            coro = jt.handler(envelope["payload"], ctx)  # type: ignore[assignment]
            try:
                pending = coro.send(None)  # the first step, up to its first suspension
            except StopIteration as stop:
                value = stop.value
            else:
                suspending()
                async with timeout.arm():  # a deadline already past cancels at once
                    value = await _resume(coro, pending)
        else:
            suspending()
            async with timeout.arm():
                value = await loop.run_in_executor(threads, jt.handler, envelope["payload"], ctx)
        result.result_json = "null" if value is None else orjson.dumps(value).decode()
        result.outcome = _SUCCEEDED
    except Retry as exc:
        result.error = f"Retry: {exc.message}"
        result.requested_delay = exc.delay
    except PermanentFailure as exc:
        result.error = f"PermanentFailure: {exc.message}"
        result.traceback = traceback.format_exc()
        result.permanent = True
    except TimeoutError as exc:
        if timeout.expired():
            result.outcome = Outcome.TIMED_OUT
            result.error = f"timed out after {timeout_s:g}s"
        else:
            _record_exception(result, exc)
    except orjson.JSONEncodeError as exc:
        result.error = f"result is not JSON-serialisable: {exc}"
        result.permanent = True
    except Exception as exc:
        _record_exception(result, exc)
    result.finished_at = _time()
    return result


def _record_exception(result: AttemptResult, exc: Exception) -> None:
    result.error = f"{type(exc).__name__}: {exc}"
    result.traceback = traceback.format_exc()
