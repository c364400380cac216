"""Reconciliation: Redis loses everything (FLUSHALL on a private server) with thousands of runs
queued, delayed and in flight, and the leader rebuilds it from PostgreSQL (fault-matrix R1, in
small); and a crash between a run's PostgreSQL insert and its Redis enqueue is healed by the
sweep."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from host.client import Client, RunRequest
from host.config import Settings
from host.embedded import ServerURLs
from host.registry import Registry
from host.scheduler import reconcile
from host.scheduler.scheduler import Scheduler
from host.services import Services, open_services
from host.store import runs as run_store
from tests.conftest import PrivateRedis
from tests.helpers import executions, running_scheduler, running_worker, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def private_services(
    settings: Settings, registry: Registry, private_redis_url: str, redis: Redis
) -> AsyncIterator[Services]:
    """Services whose queue lives on a private Redis (which the test may flush); the handlers'
    execution log stays on the suite's Redis, so it survives the flush."""
    fast = replace(
        settings, redis_url=private_redis_url, leader_lease_s=2.0, scheduler_tick_s=0.2,
        sweep_interval_s=1.0, sweep_age_s=1.0,
    )  # fmt: skip
    async with open_services(fast, registry) as svc:
        yield svc


def logged(servers: ServerURLs, namespace: str, **extra: object) -> dict[str, object]:
    return {"redis_url": servers.redis_url, "namespace": namespace, **extra}


@pytest.mark.parametrize("loss", ["flushall", "restart"])
async def test_redis_data_loss_is_rebuilt_from_postgres(
    private_services: Services,
    servers: ServerURLs,
    namespace: str,
    services: Services,
    private_redis: PrivateRedis,
    loss: str,
) -> None:
    svc = private_services
    client = Client(svc)
    slow = [RunRequest("test.record", logged(servers, namespace, key=f"s{i}", sleep_s=1.5),
                       priority=10) for i in range(100)]  # fmt: skip
    ready = [RunRequest("test.record", logged(servers, namespace, key=f"q{i}"))
             for i in range(2000)]  # fmt: skip
    later = [RunRequest("test.record", logged(servers, namespace, key=f"d{i}"), delay_s=3)
             for i in range(500)]  # fmt: skip
    ids = [r.id for r in await client.enqueue_many(slow + ready + later)]
    async with running_scheduler(svc) as scheduler:
        await wait_until(lambda: svc.redis.exists(svc.queue.keys.generation), 10)
        async with running_worker(svc, concurrency=100, prefetch=0):
            await wait_until(lambda: _in_flight_at_least(svc, 100), 20)
            in_flight = len(await svc.redis.zrange(svc.queue.keys.inflight, 0, -1))
            totals = await svc.queue.totals()
            assert totals["delayed"] == 500 and totals["known"] >= 2500
            lost_at = time.monotonic()
            if loss == "flushall":
                await svc.redis.flushall()  # the private server: Redis lost everything
            else:
                private_redis.restart_empty()  # crashed, back without persistence
            # Generous: after a restart the leader must notice, re-acquire and rebuild; on a
            # loaded machine that can take a while (the figure printed below is the real one).
            await wait_until(lambda: _generation_back(svc), 60)
            rebuilt_after = time.monotonic() - lost_at
            await wait_until(lambda: _all_final(svc, ids), 90, 0.5)
        # The rebuild re-enqueues them (the drift sweep would too, later, if it were cut short).
        assert scheduler.stats.rebuilt + scheduler.stats.swept >= 2000
    states = await run_store.count_by_state(svc.pool)
    assert states == {"succeeded": 2600}  # lost = 0
    seen = await executions(services)
    per_run = collections.Counter(e["run_id"] for e in seen)
    assert set(per_run) == set(ids)
    duplicated = sum(n - 1 for n in per_run.values())
    print(
        orjson.dumps(
            {"id": f"R1-small-{loss}", "jobs": len(ids), "in_flight_at_loss": in_flight,
             "rebuilt": scheduler.stats.rebuilt, "rebuild_s": round(rebuilt_after, 2),
             "lost": 0, "duplicated": duplicated, "max_exec_per_job": max(per_run.values())}
        ).decode()
    )  # fmt: skip
    assert duplicated <= in_flight  # only runs in flight at the loss may run twice
    assert await svc.queue.totals() == {"delayed": 0, "in_flight": 0, "dying": 0, "known": 0}


async def _generation_back(svc: Services) -> bool:
    try:
        return bool(await svc.redis.exists(svc.queue.keys.generation))
    except RedisConnectionError:  # this client's pooled connections died with the old server
        return False


async def _in_flight_at_least(svc: Services, n: int) -> bool:
    return int(await svc.redis.zcard(svc.queue.keys.inflight)) >= n


async def _all_final(svc: Services, ids: list[str]) -> bool:
    states = await run_store.count_by_state(svc.pool)
    return sum(states.get(s, 0) for s in ("succeeded", "dead", "cancelled")) == len(ids)


async def test_a_crash_between_insert_and_enqueue_is_healed_by_the_sweep(
    private_services: Services, servers: ServerURLs, namespace: str
) -> None:
    svc = private_services
    row, _ = Client(svc).prepare(RunRequest("test.record", logged(servers, namespace)))
    assert await run_store.insert_runs(svc.pool, [row]) == {row.id}  # ...and then the crash
    assert await svc.queue.known([row.id]) == set()
    await reconcile.mark_generation(svc, 0)  # Redis has its data: only the sweep can heal this
    client = Client(svc)
    async with running_scheduler(svc) as scheduler, running_worker(svc, concurrency=2):
        run = await client.wait(row.id, 20)
    assert run["state"] == "succeeded" and run["attempt"] == 1
    assert scheduler.stats.swept == 1


async def test_the_sweep_leaves_known_and_fresh_runs_alone(private_services: Services) -> None:
    svc = private_services
    client = Client(svc)
    known = (await client.enqueue("noop", {}, delay_s=60)).id
    fresh, _ = Client(svc).prepare(RunRequest("noop", {}))
    await run_store.insert_runs(svc.pool, [fresh])
    await reconcile.mark_generation(svc, 0)
    async with running_scheduler(svc) as scheduler:
        await wait_until(lambda: _led(scheduler), 10)
        await asyncio.sleep(0.3)
        assert scheduler.stats.swept == 0  # `fresh` is younger than sweep_age_s
        await wait_until(lambda: _swept(scheduler, 1), 10)
        await asyncio.sleep(1.2)  # another sweep (interval 1 s) must leave both alone
    assert scheduler.stats.swept == 1  # `fresh` once it aged; `known` never
    assert await svc.queue.known([known, fresh.id]) == {known, fresh.id}
    assert await svc.queue.totals() == {"delayed": 1, "in_flight": 0, "dying": 0, "known": 2}


async def _led(scheduler: Scheduler) -> bool:
    return scheduler.stats.terms > 0


async def _swept(scheduler: Scheduler, n: int) -> bool:
    return scheduler.stats.swept >= n
