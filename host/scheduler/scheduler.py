"""The scheduler role. Any number run; only the leader acts, every action idempotent, so a
brief overlap of two leaders does no harm (docs/scheduler.md says why for each action).

Tasks:
  lease   followers try to take the lease every third of it; the leader renews it as often
  work    while leader: fire due cron ticks, rebuild Redis when its generation marker is gone,
          promote due delayed runs, reap expired leases, sweep drift, prune old runs
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from host.client import Client, RunRequest
from host.cron import Overlap, due_ticks, jitter_offset
from host.errors import JobhostError, StaleLeader
from host.queue.queue import QueuedRun
from host.scheduler import reconcile, retention
from host.scheduler.leader import LeaderLease, Term, fenced, recorded_epoch
from host.services import Services
from host.states import RunState
from host.store import jobs as job_store
from host.store import runs as run_store
from host.worker.worker import reap_once

log = logging.getLogger("jobhost.scheduler")

#: Most job definitions handled per fire transaction.
FIRE_BATCH = 100
#: How often the leader prunes old runs.
RETENTION_INTERVAL_S = 60.0
_WAITING = {RunState.SCHEDULED.value, RunState.QUEUED.value}


@dataclass
class SchedulerStats:
    terms: int = 0  #: times this process became leader
    fired: int = 0  #: runs created by cron ticks
    duplicate_ticks: int = 0  #: ticks another leader had already fired (UNIQUE conflict)
    missed: int = 0  #: ticks dropped by a misfire policy
    overlap_skipped: int = 0  #: ticks not fired by an overlap policy
    cancelled: int = 0  #: runs cancelled by cancel_previous
    invalid: int = 0  #: ticks not fired because the definition no longer validates
    rebuilt: int = 0  #: runs re-enqueued after Redis lost its data
    swept: int = 0  #: runs re-enqueued by the drift sweep
    promoted: int = 0  #: delayed runs promoted in Redis
    pruned: int = 0  #: finished runs deleted by retention
    stale_rejections: int = 0  #: leader transactions rejected by the PostgreSQL epoch check


@dataclass
class _Fired:
    queued: list[QueuedRun]
    cancelled: list[str]


class Scheduler:
    """One scheduler process's engine. `await scheduler.run(stop)` until `stop` is set."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.namespace = services.settings.namespace
        self.lease = LeaderLease(services.redis, services.queue.keys, self.settings.leader_lease_s)
        self.stats = SchedulerStats()
        self._wake = asyncio.Event()
        self._last_sweep = 0.0
        self._last_prune = 0.0

    @property
    def is_leader(self) -> bool:
        return self.lease.is_leader

    async def run(self, stop: asyncio.Event) -> None:
        log.info("scheduler started (lease %.1fs)", self.settings.leader_lease_s)
        lease_task = asyncio.create_task(self._lease_loop(), name="lease")
        try:
            await self._work_loop(stop)
        finally:
            lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease_task
            with contextlib.suppress(Exception):
                await self.lease.release()
            log.info("scheduler stopped: %s", self.stats)

    # -- the lease ------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        interval = self.settings.leader_lease_s / 3
        while True:
            try:
                await self._lease_step()
            except Exception as exc:  # Redis or PostgreSQL down: the lease runs out by itself
                log.warning("leader lease: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)

    async def _lease_step(self) -> None:
        if self.lease.term is not None:
            if not await self.lease.renew():
                log.warning("lost the leader lease to another scheduler; now a follower")
            return
        floor = await recorded_epoch(self.services.pool, self.namespace)
        term = await self.lease.try_acquire(floor)
        if term is not None:
            self.stats.terms += 1
            log.info("became leader, epoch %d", term.epoch)
            self._wake.set()

    async def _step_down(self, exc: StaleLeader) -> None:
        """A newer epoch exists in PostgreSQL. If this process still holds the Redis lease,
        Redis lost its epoch counter: give the lease up so the next acquisition (this process
        or another) takes an epoch above PostgreSQL's. Otherwise another leader took over."""
        self.stats.stale_rejections += 1
        log.warning("leader write rejected (%s); stepping down", exc.message)
        if self.lease.term is not None and await self.lease.renew():
            await self.lease.release()
        else:
            self.lease.demote()

    # -- the work -------------------------------------------------------------------------------

    async def _work_loop(self, stop: asyncio.Event) -> None:
        errors = 0
        while not stop.is_set():
            delay = self.settings.scheduler_tick_s
            term = self.lease.term
            if term is not None and self.lease.is_leader:
                try:
                    delay = await self.tick(term)
                    errors = 0
                except StaleLeader as exc:
                    await self._step_down(exc)
                except Exception as exc:  # PostgreSQL or Redis trouble: back off, stay up
                    errors += 1
                    delay = min(5.0, 0.1 * 2 ** min(errors, 6))
                    log.warning("scheduler tick failed (%s: %s)", type(exc).__name__, exc)
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=max(delay, 0.01), return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()

    def _count_rebuilt(self, n: int) -> None:
        self.stats.rebuilt += n

    def _count_swept(self, n: int) -> None:
        self.stats.swept += n

    async def tick(self, term: Term) -> float:
        """One round of leader work; returns how long to sleep before the next."""
        services = self.services
        still = self._still_leader(term)
        await reconcile.rebuild_if_lost(services, term.epoch, still, counted=self._count_rebuilt)
        while still() and await self.fire_due(term) >= FIRE_BATCH:
            pass
        if not still():
            return self.settings.scheduler_tick_s
        self.stats.promoted += await services.queue.promote()
        async with fenced(services.pool, self.namespace, term) as conn:
            await run_store.promote_due(conn)
        await reap_once(services)
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.sweep_interval_s:
            self._last_sweep = now
            await reconcile.reenqueue_unknown(
                services, older_than_s=self.settings.sweep_age_s, still_leader=still,
                counted=self._count_swept,
            )  # fmt: skip
        if now - self._last_prune >= RETENTION_INTERVAL_S:
            self._last_prune = now
            self.stats.pruned += await retention.prune(
                services.pool,
                self.namespace,
                term,
                self.settings.retention_days,
                dead_retention_days=self.settings.dead_retention_days,
                replay_retention_days=self.settings.replay_retention_days,
            )
        return await self._sleep_for()

    def _still_leader(self, term: Term) -> Callable[[], bool]:
        return lambda: self.lease.is_leader and self.lease.term == term

    async def _sleep_for(self) -> float:
        next_at = await job_store.next_due_at(self.services.pool)
        tick = self.settings.scheduler_tick_s
        if next_at is None:
            return tick
        now: datetime = await self.services.pool.fetchval("SELECT clock_timestamp()")
        return max(0.0, min(tick, (next_at - now).total_seconds()))

    # -- cron -----------------------------------------------------------------------------------

    async def fire_due(self, term: Term) -> int:
        """Fire the due ticks of up to FIRE_BATCH definitions in one fenced transaction, then
        enqueue the new runs in Redis. Returns how many definitions were due."""
        async with fenced(self.services.pool, self.namespace, term) as conn:
            jobs = await job_store.due_jobs(conn, FIRE_BATCH)
            if not jobs:
                return 0
            fired = await self._fire(conn, jobs)
        # After the commit: the rows exist, so a worker finishing these runs finds them. A crash
        # here leaves rows the sweep enqueues; a second leader enqueueing too is skipped by id.
        if fired.cancelled:
            await self.services.queue.cancel(fired.cancelled)
        await self.services.queue.enqueue(fired.queued)
        return len(jobs)

    async def _fire(self, conn: asyncpg.Connection, jobs: list[job_store.JobDef]) -> _Fired:
        now: datetime = await conn.fetchval("SELECT clock_timestamp()")
        grace = timedelta(seconds=self.settings.misfire_grace_s)
        active = await run_store.active_runs_of_jobs(conn, [j.id for j in jobs])
        prepared: list[tuple[run_store.NewRun, QueuedRun]] = []
        cancel: list[str] = []
        moves: list[tuple[str, datetime, datetime | None]] = []
        for job in jobs:
            assert job.schedule is not None and job.next_fire_at is not None
            due = due_ticks(job.schedule, job.next_fire_at, now, grace)
            self.stats.missed += due.missed
            if due.missed:
                log.warning("job %s: %d ticks missed (misfire %s)", job.name, due.missed,
                            job.schedule.misfire.value)  # fmt: skip
            runs = list(active.get(job.id, []))
            last: datetime | None = None
            ticks = due.fire
            if job.schedule.overlap == Overlap.CANCEL_PREVIOUS:
                ticks = ticks[-1:]  # each would cancel the one before: only the last counts
            for tick in ticks:
                if not self._overlap_allows(job, runs, cancel):
                    self.stats.overlap_skipped += 1
                    continue
                delay = (tick - now).total_seconds()
                delay += jitter_offset(job.id, tick, job.schedule.jitter_s)
                request = RunRequest(
                    job.type, job.payload, priority=job.priority, delay_s=max(0.0, delay),
                    job_id=job.id, scheduled_for=tick,
                )  # fmt: skip
                try:
                    prepared.append(Client(self.services, tenant=job.tenant_id).prepare(request))
                except JobhostError as exc:  # the type or its schema changed since creation
                    self.stats.invalid += 1
                    log.error("job %s: tick %s not fired: %s", job.name, tick, exc)
                    continue
                runs.append(("new", RunState.QUEUED.value))
                last = tick
            moves.append((job.id, due.next_at, last))
        cancelled = await run_store.cancel_runs(
            conn, cancel, "cancelled: a newer run of its job started (overlap cancel_previous)"
        )
        self.stats.cancelled += len(cancelled)
        inserted = await run_store.insert_runs(conn, [row for row, _ in prepared])
        await job_store.advance(conn, moves)
        self.stats.fired += len(inserted)
        self.stats.duplicate_ticks += len(prepared) - len(inserted)
        return _Fired([q for row, q in prepared if row.id in inserted], sorted(cancelled))

    @staticmethod
    def _overlap_allows(
        job: job_store.JobDef, runs: list[tuple[str, str]], cancel: list[str]
    ) -> bool:
        """Apply the overlap policy to one tick given the job's active runs (updated in place:
        a fired tick adds a waiting run, cancel_previous empties the list)."""
        assert job.schedule is not None
        policy = job.schedule.overlap
        if policy == Overlap.SKIP:
            return not runs
        if policy == Overlap.QUEUE_ONE:
            return not any(state in _WAITING for _, state in runs)
        if policy == Overlap.CANCEL_PREVIOUS:
            cancel.extend(run_id for run_id, _ in runs if run_id != "new")
            runs.clear()
        return True
