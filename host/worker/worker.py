"""The worker role: claim runs in batches, run them on a fixed pool of runner tasks, and record
results in batches: PostgreSQL first (the truth), then Redis (ack, retry).

Tasks and how they overlap:
  claimer    one Lua claim for up to `claim_batch` runs; when idle, BLPOP on the wake list and
             the claim pipelined in one round trip (Redis claims as the BLPOP returns)
  runners    `concurrency` tasks, each running one handler at a time, inline
  finisher   coalesces finished attempts; one PostgreSQL statement and one Lua call per flush
  marker     marks runs still running after START_MARK_AFTER_S as running in PostgreSQL
  heartbeat  extends every held lease every lease/3, publishes this worker's liveness
  reaper     recovers expired leases of dead workers (idempotent, any worker may run it)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from host import limits
from host.backoff import after_failure
from host.errors import JobhostError
from host.queue.queue import ClaimResult, Lease
from host.services import Services
from host.states import Outcome, RunState
from host.store import runs as run_store
from host.worker.executor import AttemptResult, execute

log = logging.getLogger("jobhost.worker")

#: Runs started this long ago and still running get a "running" mark in PostgreSQL; faster runs
#: go straight to their final state, saving a write.
START_MARK_AFTER_S = 0.2
#: Longest an idle worker blocks on the wake list before claiming again (a safety net: enqueues,
#: retries and reaps push wake tokens, and claims report when the next delayed run is due).
IDLE_WAIT_S = 5.0
#: How long a stopping worker waits for its idle claimer's wait to end before cancelling it.
STOP_WAIT_S = 2.0
#: How long past its grace period a stopping worker keeps retrying writes that fail.
ABANDON_AFTER_S = 10.0
#: With the default (adaptive) prefetch, a worker holds about this much work ahead of its
#: runners, at its recent finishing rate: short runs are claimed in batches of up to
#: claim_batch, long runs about `concurrency` at a time, as with a fixed prefetch of C.
PREFETCH_HORIZON_S = 0.05

_SUCCEEDED = Outcome.SUCCEEDED
_SUCCEEDED_VALUE = Outcome.SUCCEEDED.value
_RUN_SUCCEEDED = RunState.SUCCEEDED


class _Abandoned(Exception):
    """Raised inside a stopping worker that gave up retrying a write."""


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    fenced: int = 0
    released: int = 0
    reaped: int = 0
    flushes: int = 0


@dataclass(slots=True)
class _Running:
    lease: Lease
    started_at: float
    marked: bool = False


@dataclass
class _Flush:
    """One finisher batch, with what PostgreSQL and Redis are told about it."""

    results: list[AttemptResult]
    finishes: list[run_store.Finish] = field(default_factory=list)
    retry_delays: dict[str, float] = field(default_factory=dict)


class _Handoff:
    """The claimed runs waiting for a runner: a FIFO that hands an item straight to a waiting
    runner. Cheaper than asyncio.Queue (no bound, no task accounting, no getter bookkeeping on
    every put), which cost a tenth of a worker's CPU on short runs.

    A claim's runs wake one idle runner (`put_all`), not one each: a runner works through the
    FIFO, and wakes the next idle runner (`wake_one`) only when its handler is about to wait.
    Runs that never wait (most short ones) then go through one runner back to back instead of
    a wake-up, a future and an event-loop pass each; runs that wait still get up to
    `concurrency` runners, one more each time a handler suspends."""

    __slots__ = ("_waiters", "items")

    def __init__(self) -> None:
        #: Items waiting: a runner may pop one directly (`items.popleft()` when not empty)
        #: instead of awaiting `get`, which saves a coroutine per run while work is queued.
        self.items: deque[Lease | None] = deque()
        self._waiters: deque[asyncio.Future[Lease | None]] = deque()

    def put(self, item: Lease | None) -> None:
        self.items.append(item)
        self.wake_one()

    def put_all(self, items: Sequence[Lease]) -> None:
        self.items.extend(items)
        self.wake_one()

    def wake_one(self) -> None:
        """Hand the next waiting item to an idle runner, if there are both."""
        while self.items and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self.items.popleft())
                return

    async def get(self) -> Lease | None:
        if self.items:
            return self.items.popleft()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        item: Lease | None = await waiter
        return item

    def empty(self) -> bool:
        return not self.items

    def take_all(self) -> list[Lease | None]:
        """Every item not yet handed to a runner."""
        items = list(self.items)
        self.items.clear()
        return items


class Worker:
    """One worker process's engine. `await worker.run(stop)` until `stop` is set."""

    def __init__(
        self,
        services: Services,
        *,
        concurrency: int = 10,
        types: Sequence[str] | None = None,
        prefetch: int | None = None,
        claim_batch: int = 200,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise JobhostError("concurrency must be at least 1")
        self.services = services
        self.settings = services.settings
        self.queue = services.queue
        self.registry = services.registry
        self.types = list(types) if types else sorted(self.registry.types)
        for name in self.types:
            self.registry.get(name)  # raises UnknownJobType naming it
        self.concurrency = concurrency
        self.prefetch = prefetch  #: None: adaptive (see PREFETCH_HORIZON_S), from C to K
        self.capacity = concurrency + (concurrency if prefetch is None else prefetch)
        self.claim_batch = claim_batch
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.lease_ms = int(self.settings.lease_s * 1000)
        self.stats = WorkerStats()
        self._ready = _Handoff()
        # Finished attempts wait here for the finisher, up to `_done_limit` (then runners wait).
        self._done: list[AttemptResult] = []
        self._done_limit = 2 * claim_batch
        self._done_added = asyncio.Event()
        self._done_room = asyncio.Event()
        self._done_closed = False
        self._finished = 0  # runs finished running, for the adaptive prefetch
        self._rate_mark = (time.monotonic(), 0)
        self._rate = 0.0  # runs finished per second, smoothed
        self._held: dict[str, Lease] = {}  # claimed until Redis has acked, retried or released
        self._running: dict[str, _Running] = {}
        self._slots = 0  # claimed and not yet finished running
        self._slot_free = asyncio.Event()
        self._refill_slots = self.capacity - self.capacity // 2
        self._run_started = asyncio.Event()
        self._stopping = False
        self._claimer_idle = False
        self._abandon_at: float | None = None
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="jobhost")
        self._extend_cb = self._extend_one  # bound once, not per run
        self._progress_cb = self._progress
        self._started = time.time()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then shut down gracefully (see `_shutdown`)."""
        log.info("worker %s serving %s, concurrency %d", self.id, self.types, self.concurrency)
        claimer = asyncio.create_task(self._claimer(), name="claimer")
        runners = [asyncio.create_task(self._runner()) for _ in range(self.concurrency)]
        finisher = asyncio.create_task(self._finisher(), name="finisher")
        background = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._reaper(), name="reaper"),
            asyncio.create_task(self._start_marker(), name="start-marker"),
        ]
        try:
            await self._publish()
            await self.queue.set_priority_ageing(self.settings.priority_ageing_s)
            async with self.services.pool.acquire() as conn:
                await limits.publish(self.queue, await limits.effective_limits(self.registry, conn))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, claimer, finisher], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for task in (claimer, finisher):
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]
            await self._shutdown(claimer, runners, finisher)
        finally:
            for task in [claimer, finisher, *runners, *background]:
                task.cancel()
            await asyncio.gather(claimer, finisher, *runners, *background, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.services.redis.hdel(self.queue.keys.workers, self.id)
            self._threads.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped: %s", self.id, self.stats)

    async def _shutdown(
        self,
        claimer: asyncio.Task[None],
        runners: list[asyncio.Task[None]],
        finisher: asyncio.Task[None],
    ) -> None:
        """Stop claiming, hand back unstarted runs at once, let running handlers finish within the
        grace period, hand back the ones that did not, and flush every result before returning."""
        self._stopping = True
        self._abandon_at = time.monotonic() + self.settings.shutdown_grace_s + ABANDON_AFTER_S
        self._slot_free.set()  # a claimer waiting for a free slot looks again and stops
        await self._stop_claimer(claimer)
        unstarted = [item for item in self._ready.take_all() if item is not None]
        self._slots -= len(unstarted)
        await self._release(unstarted)
        for _ in runners:
            self._ready.put(None)
        _, late = await asyncio.wait(runners, timeout=self.settings.shutdown_grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        interrupted = [r.lease for r in self._running.values()]
        self._running.clear()
        if interrupted:
            log.warning(
                "handing back %d runs still running after the grace period", len(interrupted)
            )
        await self._release(interrupted)
        self._done_closed = True
        self._done_added.set()
        await finisher

    # -- claiming -------------------------------------------------------------------------------

    async def _claimer(self) -> None:
        errors = 0
        idle_s: float | None = None  # after an empty claim: how long to wait for a wake token
        while not self._stopping:
            if self.prefetch is None:
                self._adapt_capacity()
            free = self.capacity - self._slots
            # Refill when half the capacity is free or the runners have drained the buffer, so a
            # busy worker makes a few large claims rather than many small ones. Runners wake
            # this task only then (at or below `_refill_slots` claimed, or an empty buffer).
            if free <= 0 or (free < self.capacity // 2 and not self._ready.empty()):
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            limit = min(free, self.claim_batch)
            try:
                if idle_s is None:
                    claimed = await self.queue.claim(self.id, self.types, limit, self.lease_ms)
                else:  # the last claim found nothing: wait for a wake token, then claim
                    claimed = await self._wait_and_claim(limit, idle_s)
                errors = 0
            except Exception as exc:  # Redis down: back off, do not spin
                errors += 1
                idle_s = None
                await self._pause_after_error("claim", exc, errors)
                continue
            idle_s = None
            if claimed.leases:
                self.stats.claimed += len(claimed.leases)
                for lease in claimed.leases:
                    self._held[lease.id] = lease
                self._slots += len(claimed.leases)
                self._ready.put_all(claimed.leases)
                continue
            due_s = claimed.next_due_ms / 1000
            idle_s = IDLE_WAIT_S if due_s < 0 else min(IDLE_WAIT_S, due_s)

    def _adapt_capacity(self) -> None:
        """Adaptive prefetch: hold about PREFETCH_HORIZON_S of work at the recent finishing
        rate, at least `concurrency` and at most `claim_batch` runs ahead of the runners."""
        now = time.monotonic()
        since, finished = self._rate_mark
        elapsed = now - since
        if elapsed >= PREFETCH_HORIZON_S:
            rate = (self._finished - finished) / elapsed
            self._rate = rate if rate > self._rate else (self._rate + rate) / 2
            self._rate_mark = (now, self._finished)
        ahead = int(self._rate * PREFETCH_HORIZON_S)
        self.capacity = self.concurrency + max(self.concurrency, min(ahead, self.claim_batch))
        self._refill_slots = self.capacity - self.capacity // 2

    async def _wait_and_claim(self, limit: int, timeout_s: float) -> ClaimResult:
        """Idle: one round trip that waits for a wake token and then claims (see
        Queue.wait_and_claim); a stopping worker ends the wait with `interrupt_wait`."""
        self._claimer_idle = True
        try:
            return await self.queue.wait_and_claim(
                self.id, self.types, limit, self.lease_ms, timeout_s
            )
        finally:
            self._claimer_idle = False

    async def _stop_claimer(self, claimer: asyncio.Task[None]) -> None:
        """End an idle claimer's wait by its own wake token, so a claim already on its way
        comes back and its leases are handed back with the other unstarted runs; cancel it
        only if Redis does not answer (leases claimed meanwhile then expire and are reaped)."""
        if self._claimer_idle:
            try:
                await asyncio.wait_for(self.queue.interrupt_wait(self.id), STOP_WAIT_S)
            except Exception as exc:
                log.warning("cannot end the idle claim wait (%s); cancelling it", exc)
                claimer.cancel()
        done, _ = await asyncio.wait([claimer], timeout=STOP_WAIT_S)
        if not done:
            claimer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await claimer

    async def _pause_after_error(self, what: str, exc: Exception, errors: int) -> None:
        delay = min(5.0, 0.1 * 2 ** min(errors, 6))
        log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
        await asyncio.sleep(delay)

    # -- running --------------------------------------------------------------------------------

    async def _runner(self) -> None:
        ready, done, running = self._ready, self._done, self._running
        waiting, run_one, now = ready.items, self._run_one, time.time
        while True:
            lease = waiting.popleft() if waiting else await ready.get()
            if lease is None:
                return
            if not running:
                self._run_started.set()
            running[lease.id] = _Running(lease, now())
            result = await run_one(lease)
            running.pop(lease.id, None)
            self._slots -= 1
            self._finished += 1
            if self._slots <= self._refill_slots or not waiting:
                self._slot_free.set()  # the claimer claims again (see _claimer)
            while len(done) >= self._done_limit:  # the finisher is behind: wait for room
                self._done_room.clear()
                await self._done_room.wait()
            done.append(result)
            self._done_added.set()

    def _run_one(self, lease: Lease) -> Awaitable[AttemptResult]:
        """The attempt, to await: `execute`'s coroutine itself (no wrapping coroutine per run),
        or an already failed result for an envelope that cannot start."""
        try:
            envelope = orjson.loads(lease.envelope)
            jt = self.registry.get(envelope["type"])
        except (orjson.JSONDecodeError, KeyError, JobhostError) as exc:
            now = time.time()
            return _resolved(
                AttemptResult(
                    lease, "?", 1, now, now, Outcome.FAILED,
                    error=f"cannot start run: {type(exc).__name__}: {exc}", permanent=True,
                )
            )  # fmt: skip
        return execute(
            lease, envelope, jt, self._threads, self._extend_cb, self._progress_cb,
            self._ready.wake_one,
        )  # fmt: skip

    async def _extend_one(self, run_id: str, seconds: float) -> None:
        lease = self._held.get(run_id)
        if lease is not None:
            ms = max(self.lease_ms, int(seconds * 1000))
            await self.queue.extend([(lease.id, lease.token)], ms)

    async def _progress(self, run_id: str, report: Any) -> None:
        await self.queue.set_progress(run_id, orjson.dumps(report))

    # -- finishing ------------------------------------------------------------------------------

    async def _finisher(self) -> None:
        """Coalesce finished attempts and record them; returns once shutdown has closed the
        list and it is empty."""
        while True:
            if not self._done:
                if self._done_closed:
                    return
                self._done_added.clear()
                await self._done_added.wait()
                continue
            take = 4 * self.claim_batch
            batch = self._done[:take]
            del self._done[:take]
            self._done_room.set()
            try:
                await self._flush(batch)
            except _Abandoned as exc:
                log.error("%s; %d results unrecorded, their runs will run again", exc, len(batch))

    async def _flush(self, results: list[AttemptResult]) -> None:
        flush = self._decide(results)
        applied = await self._persist(
            lambda conn: run_store.finish_attempts(conn, flush.finishes), "record results"
        )
        acks: list[tuple[str, str]] = []
        retries: list[tuple[str, str, int]] = []
        for r in flush.results:
            lease = r.lease
            if lease.id in flush.retry_delays and lease.id in applied:
                retries.append((lease.id, lease.token, int(flush.retry_delays[lease.id] * 1000)))
            else:  # succeeded, dead, or fenced in PostgreSQL (a final state is already recorded)
                acks.append((lease.id, lease.token))
        self.stats.fenced += len(flush.results) - len(applied)
        fenced = await self._redis_retrying(lambda: self.queue.ack(acks), "ack")
        fenced += await self._redis_retrying(lambda: self.queue.retry(retries), "retry")
        if fenced:
            log.warning("%d results fenced off: another attempt holds their lease", len(fenced))
        for r in flush.results:
            self._held.pop(r.lease.id, None)
        self.stats.flushes += 1
        if self.registry.observes_runs:
            await self._notify(flush, applied)

    def _decide(self, results: list[AttemptResult]) -> _Flush:
        """Turn attempt outcomes into run states (retry now or later, or dead). A success needs
        no decision: its Finish is built directly (most runs; no policy lookup)."""
        flush = _Flush(results)
        finishes = flush.finishes
        finish = run_store.Finish
        worker = self.id
        succeeded = 0
        for r in results:
            lease = r.lease
            if r.outcome == _SUCCEEDED:
                succeeded += 1
                finishes.append(
                    finish(
                        lease.id, lease.attempt, _RUN_SUCCEEDED, _SUCCEEDED_VALUE, worker,
                        r.started_at, r.finished_at, r.result_json, r.error, r.traceback, 0.0,
                    )
                )  # fmt: skip
                continue
            state, delay = RunState.DEAD, 0.0
            outcome = r.outcome
            backoff = (
                self.registry.types[r.job_type].policy.backoff
                if r.job_type in self.registry.types
                else None
            )
            next_in = None if backoff is None else after_failure(
                backoff, lease.attempt, r.max_attempts,
                permanent=r.permanent, requested_delay=r.requested_delay,
            )  # fmt: skip
            if next_in is None:
                outcome = Outcome.DEAD if outcome == Outcome.FAILED else outcome
                self.stats.dead += 1
            else:
                state, delay = RunState.RETRYING, next_in
                flush.retry_delays[lease.id] = next_in
                self.stats.retried += 1
            finishes.append(
                finish(
                    lease.id, lease.attempt, state, outcome.value, worker, r.started_at,
                    r.finished_at, r.result_json, r.error, r.traceback, delay,
                )
            )  # fmt: skip
        self.stats.succeeded += succeeded
        return flush

    async def _start_marker(self) -> None:
        """Mark runs that are still running after a moment as running in PostgreSQL."""
        while True:
            if not self._running:
                self._run_started.clear()
                await self._run_started.wait()
            await asyncio.sleep(START_MARK_AFTER_S)
            await self._mark_starts()

    async def _mark_starts(self) -> None:
        cutoff = time.time() - START_MARK_AFTER_S
        due = [r for r in self._running.values() if not r.marked and r.started_at <= cutoff]
        if not due:
            return
        starts = [(r.lease.id, r.lease.attempt, self.id, r.started_at) for r in due]
        await self._persist(lambda conn: run_store.mark_started(conn, starts), "mark started")
        for r in due:
            r.marked = True

    async def _release(self, leases: list[Lease]) -> None:
        """Hand runs back unstarted (no attempt spent) and queue them again in PostgreSQL."""
        if not leases:
            return
        for lease in leases:  # no longer ours to extend
            self._held.pop(lease.id, None)
        pairs = [(lease.id, lease.token) for lease in leases]
        marks = [(lease.id, lease.attempt) for lease in leases]
        try:
            await self._redis_retrying(lambda: self.queue.release(pairs), "release")
            await self._persist(lambda conn: run_store.mark_released(conn, marks), "release")
        except _Abandoned as exc:
            log.error("%s; %d runs come back when their leases expire", exc, len(leases))
            return
        self.stats.released += len(leases)

    async def _persist(self, write: Any, what: str) -> Any:
        """Run a PostgreSQL write, retrying until it succeeds: leases stay extended meanwhile, so
        nothing is acked in Redis before PostgreSQL has it."""
        errors = 0
        while True:
            try:
                async with self.services.hot_pool.acquire() as conn:
                    return await write(conn)
            except Exception as exc:
                errors += 1
                self._check_abandon(what, exc)
                await self._pause_after_error(f"PostgreSQL ({what})", exc, errors)

    async def _redis_retrying(self, call: Any, what: str) -> list[str]:
        errors = 0
        while True:
            try:
                result: list[str] = await call()
                return result
            except Exception as exc:
                errors += 1
                self._check_abandon(what, exc)
                await self._pause_after_error(f"Redis ({what})", exc, errors)

    def _check_abandon(self, what: str, exc: Exception) -> None:
        """A stopping worker retries a failing write only for a while past its grace period;
        then it gives up: the leases it holds expire and the runs are claimed again."""
        if self._abandon_at is not None and time.monotonic() > self._abandon_at:
            raise _Abandoned(f"gave up on {what} while stopping: {type(exc).__name__}: {exc}")

    async def _notify(self, flush: _Flush, applied: set[str]) -> None:
        hook = self.registry.pm.hook
        for r, f in zip(flush.results, flush.finishes, strict=True):
            if r.lease.id not in applied:
                continue
            run = {
                "id": r.lease.id, "type": r.job_type, "attempt": r.lease.attempt,
                "state": f.state.value, "outcome": f.outcome, "result": r.result_json,
                "error": r.error,
            }  # fmt: skip
            await _call_hook(hook.jobhost_run_finished, run)
            if f.state == RunState.DEAD:
                await _call_hook(hook.jobhost_run_dead, run)

    # -- leases and liveness --------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = [(lease.id, lease.token) for lease in self._held.values()]
                lost = await self.queue.extend(held, self.lease_ms)
                if lost:
                    log.warning(
                        "lost the lease of %d runs; their results will be fenced", len(lost)
                    )
                await self._publish()
            except Exception as exc:
                log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)

    async def _publish(self) -> None:
        """Record this worker as alive, with what it runs (read by `jobhost workers`, the API)."""
        info = {
            "id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
            "types": self.types, "concurrency": self.concurrency,
            "running": list(self._running)[:100], "started_at": self._started,
            "seen_at": time.time(), "stats": self.stats.__dict__,
        }  # fmt: skip
        await self.services.redis.hset(self.queue.keys.workers, self.id, orjson.dumps(info))

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval_s)
            try:
                await reap_once(self.services, self.stats)
            except Exception as exc:
                log.warning("reap failed: %s: %s", type(exc).__name__, exc)


async def reap_once(services: Services, stats: WorkerStats | None = None) -> int:
    """Requeue expired leases; record runs whose attempts are spent as dead, then bury them.
    Returns how many runs were requeued or buried."""
    result = await services.queue.reap()
    if result.dying:
        now = time.time()
        finishes = [
            run_store.Finish(
                id=d.id, attempt=d.attempt, state=RunState.DEAD, outcome=Outcome.LOST.value,
                worker=d.token.rsplit(":", 1)[0] or "?", started_at=None, finished_at=now,
                error=f"lease expired during attempt {d.attempt}: the worker died or hung",
            )
            for d in result.dying
        ]  # fmt: skip
        async with services.hot_pool.acquire() as conn:
            await run_store.finish_attempts(conn, finishes)
        await services.queue.bury([d.id for d in result.dying])
    if result.requeued:
        log.info("requeued %d runs whose lease expired", result.requeued)
    if stats is not None:
        stats.reaped += result.requeued + len(result.dying)
    return result.requeued + len(result.dying)


async def _resolved(result: AttemptResult) -> AttemptResult:
    return result


async def _call_hook(hook: Any, run: dict[str, Any]) -> None:
    try:
        for value in hook(run=run):
            if asyncio.iscoroutine(value):
                await value
    except Exception:
        log.exception("plugin hook %s failed for run %s", hook.name, run["id"])
