"""Make Redis agree with PostgreSQL again: every active run (scheduled, queued, running,
retrying) that Redis does not know is enqueued again, with its envelope, priority, remaining
delay and attempt count.

Two triggers, one procedure:
- the generation marker (a key the leader writes) is missing: Redis lost its data (FLUSHALL, a
  restart without persistence, a failover to an empty replica); every active run is checked;
- the periodic sweep: active runs older than `sweep_age_s` are checked, which heals a crash
  between a run's PostgreSQL insert and its Redis enqueue.

Runs Redis lost while `running` are queued again (at-least-once): the restored attempt count
makes the next claim attempt k+1, so PostgreSQL's fencing (a row's attempt never goes back, a
final state is never left) keeps a late result of attempt k from overwriting anything newer.
Everything is batched: one PostgreSQL page, one pipelined HEXISTS round trip and one enqueue
script call per `batch` runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import orjson

from host.client import envelope
from host.lanes import lane_of
from host.queue.queue import QueuedRun
from host.registry import Registry
from host.services import Services
from host.store import runs as run_store

log = logging.getLogger("jobhost.scheduler")

BATCH = 1000


def queued_run(run: run_store.ActiveRun, registry: Registry) -> QueuedRun:
    """How a PostgreSQL run goes back into Redis (into the lane the client would choose)."""
    env = envelope(
        run.id, run.type, run.tenant_id, run.max_attempts, run.timeout_s, run.job_id,
        run.payload_json.encode(),
    )  # fmt: skip
    # A run whose attempts were all started still gets one attempt: it never finished.
    done = max(0, min(run.attempt, run.max_attempts - 1))
    delay_ms = int(run.delay_s * 1000)
    jt = registry.types.get(run.type)
    lane = run.tenant_id
    if jt is not None and jt.policy.lane_key is not None:
        lane = lane_of(jt.policy, run.tenant_id, orjson.loads(run.payload_json))
    return QueuedRun(
        run.id, run.type, run.priority, run.max_attempts, delay_ms, env, done, lane=lane
    )


async def generation_missing(services: Services) -> bool:
    return not await services.redis.exists(services.queue.keys.generation)


async def mark_generation(services: Services, epoch: int) -> None:
    """Record that Redis is (being) rebuilt from PostgreSQL. Written before the rebuild, so a
    data loss during it removes the marker again and the next tick rebuilds once more."""
    await services.redis.set(services.queue.keys.generation, f"{epoch}:{time.time():.3f}")


async def reenqueue_unknown(
    services: Services,
    *,
    older_than_s: float,
    still_leader: Callable[[], bool] = lambda: True,
    batch: int = BATCH,
    counted: Callable[[int], None] = lambda n: None,
) -> int:
    """Enqueue every active run created at least `older_than_s` ago that Redis does not know;
    returns how many were enqueued. Stops early when `still_leader()` turns false. `counted`
    hears each batch's count as it lands, so a pass cut short by an error is still counted."""
    pool, queue = services.pool, services.queue
    after: str | None = None
    enqueued = 0
    while still_leader():
        ids = await run_store.active_run_ids(
            pool, after=after, limit=batch, older_than_s=older_than_s
        )
        if not ids:
            break
        after = ids[-1]
        known = await queue.known(ids)
        unknown = [run_id for run_id in ids if run_id not in known]
        if unknown:
            # Read again after the Redis check: a run that finished in between (acked, so
            # unknown to Redis) is no longer active and must not run again.
            runs = await run_store.active_runs(pool, unknown)
            skipped = await queue.enqueue([queued_run(r, services.registry) for r in runs])
            enqueued += len(runs) - len(skipped)
            counted(len(runs) - len(skipped))
        if len(ids) < batch:
            break
    if enqueued:
        log.warning("re-enqueued %d runs PostgreSQL has but Redis did not know", enqueued)
    return enqueued


async def rebuild_if_lost(
    services: Services,
    epoch: int,
    still_leader: Callable[[], bool] = lambda: True,
    counted: Callable[[int], None] = lambda n: None,
) -> int | None:
    """When the generation marker is missing, rebuild Redis from PostgreSQL; returns the runs
    enqueued, or None when Redis still has its data."""
    if not await generation_missing(services):
        return None
    started = time.monotonic()
    await mark_generation(services, epoch)
    try:
        count = await reenqueue_unknown(
            services, older_than_s=0.0, still_leader=still_leader, counted=counted
        )
    except BaseException:
        # Not rebuilt after all: drop the marker so the next tick tries the whole rebuild again
        # (if Redis is unreachable the marker is gone with it anyway).
        with contextlib.suppress(Exception):
            await services.redis.delete(services.queue.keys.generation)
        raise
    log.warning(
        "Redis generation marker missing: rebuilt %d runs from PostgreSQL in %.2fs",
        count,
        time.monotonic() - started,
    )
    return count
