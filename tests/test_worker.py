"""The worker against real PostgreSQL and Redis: outcomes, retries, dead letters, timeouts,
priorities, leases and graceful shutdown."""

from __future__ import annotations

import asyncio
import itertools
import time

import asyncpg
import orjson
import pytest

from host.client import Client, RunRequest
from host.errors import ValidationFailed
from host.services import Services
from host.store import runs as run_store
from host.worker.worker import Worker, reap_once
from tests.helpers import executions, recorded, running_worker, wait_until


@pytest.fixture
def client(services: Services) -> Client:
    return Client(services)


async def test_a_run_succeeds_and_its_attempt_is_recorded(client: Client, services) -> None:
    enqueued = await client.enqueue("noop", {"x": 1})
    assert enqueued.created and enqueued.state == "queued"
    async with running_worker(services, concurrency=2):
        run = await client.wait(enqueued.id, 10)
    assert run["state"] == "succeeded" and run["attempt"] == 1
    assert run["payload"] == {"x": 1} and run["result"] is None
    assert [a["outcome"] for a in run["attempts"]] == ["succeeded"]
    assert run["attempts"][0]["worker"] and run["finished_at"] >= run["started_at"]
    assert await services.queue.totals() == {"delayed": 0, "in_flight": 0, "dying": 0, "known": 0}


async def test_results_are_stored(client: Client, services) -> None:
    run_id = (await client.enqueue("test.sync", {"value": [1, "two"]})).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["result"] == {"thread": True, "echo": [1, "two"]}


async def test_invalid_payload_is_rejected_with_paths_and_nothing_queued(
    client: Client, services
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await client.enqueue("test.strict", {"email": "not-an-email", "count": 0, "extra": 1})
    paths = [e.path for e in info.value.errors]
    assert paths == ["", "/count", "/email"]
    assert "extra" in info.value.errors[0].message
    assert "is not a 'email'" in info.value.errors[2].message
    assert await client.list() == []
    assert await services.redis.zcard(services.queue.keys.ready("test.strict")) == 0


async def test_a_batch_with_one_invalid_run_queues_nothing(client: Client, services) -> None:
    good = RunRequest("test.strict", {"email": "a@example.com", "count": 1})
    bad = RunRequest("test.strict", {"email": "a@example.com", "count": "many"})
    with pytest.raises(ValidationFailed) as info:
        await client.enqueue_many([good, good, bad])
    assert [e.path for e in info.value.errors] == ["/2/payload/count"]
    assert await client.list() == []


async def test_flaky_run_is_retried_with_backoff_until_it_succeeds(client: Client, services):
    run_id = (await client.enqueue("test.flaky", {"succeed_on": 3, **recorded(services)})).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "succeeded" and run["result"] == {"attempt": 3}
    assert [a["outcome"] for a in run["attempts"]] == ["failed", "failed", "succeeded"]
    assert "ConnectionError: attempt 1 failed" in run["attempts"][0]["error"]
    assert "Traceback" in run["attempts"][0]["traceback"]
    seen = await executions(services)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(seen)]
    # Backoff for test.flaky: 0.05 s then 0.1 s (no jitter); a retry never comes early.
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1


async def test_spent_attempts_make_the_run_dead(client: Client, services) -> None:
    run_id = (await client.enqueue("test.fail", recorded(services))).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "dead" and run["attempt"] == 3
    assert [a["outcome"] for a in run["attempts"]] == ["failed", "failed", "dead"]
    assert "boom on attempt 3" in run["error"]
    assert len(await executions(services)) == 3
    assert (await services.queue.totals())["known"] == 0


async def test_max_attempts_can_be_overridden_per_run(client: Client, services) -> None:
    run_id = (await client.enqueue("test.fail", recorded(services), max_attempts=1)).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "dead" and len(run["attempts"]) == 1


async def test_permanent_failure_dead_letters_at_once(client: Client, services) -> None:
    run_id = (await client.enqueue("test.permanent", recorded(services))).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "dead" and run["attempt"] == 1
    assert run["error"] == "PermanentFailure: the input can never work"


async def test_retry_exception_waits_the_requested_delay(client: Client, services) -> None:
    run_id = (await client.enqueue("test.retry", {"delay": 0.3, **recorded(services)})).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "succeeded" and run["result"] == "done"
    first, second = await executions(services)
    assert second["at"] - first["at"] >= 0.3
    assert run["attempts"][0]["error"] == "Retry: not yet"


async def test_a_handler_past_its_timeout_is_timed_out(client: Client, services) -> None:
    run_id = (await client.enqueue("test.hang", {})).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "dead"
    assert [a["outcome"] for a in run["attempts"]] == ["timed_out", "timed_out"]
    assert run["error"] == "timed out after 0.5s"


async def test_unserialisable_result_is_a_permanent_failure(client: Client, services) -> None:
    run_id = (await client.enqueue("test.unserialisable", {})).id
    async with running_worker(services):
        run = await client.wait(run_id, 10)
    assert run["state"] == "dead" and "not JSON-serialisable" in run["error"]


async def test_idempotency_key_returns_the_existing_run(client: Client, services) -> None:
    first = await client.enqueue("test.record", recorded(services), idempotency_key="order-7")
    again = await client.enqueue("test.record", recorded(services), idempotency_key="order-7")
    assert again.id == first.id and first.created and not again.created
    async with running_worker(services):
        await client.wait(first.id, 10)
        third = await client.enqueue("test.record", recorded(services), idempotency_key="order-7")
        assert third.id == first.id and third.state == "succeeded"
    assert len(await executions(services)) == 1


async def test_a_run_id_inserted_twice_is_an_error_unless_the_run_is_keyed(
    client: Client, services
) -> None:
    row, _ = client.prepare(RunRequest("noop", {}))
    assert await run_store.insert_runs(services.hot_pool, [row]) == {row.id}
    with pytest.raises(asyncpg.UniqueViolationError):  # fresh ids never repeat: say so loudly
        await run_store.insert_runs(services.hot_pool, [row])
    keyed, _ = client.prepare(RunRequest("noop", {}, idempotency_key="k-1"))
    again, _ = client.prepare(RunRequest("noop", {}, idempotency_key="k-1"))
    assert await run_store.insert_runs(services.hot_pool, [keyed]) == {keyed.id}
    assert await run_store.insert_runs(services.hot_pool, [again, row]) == set()  # skipped


async def test_priorities_order_execution_then_fifo(client: Client, services) -> None:
    def req(key: str, priority: int) -> RunRequest:
        return RunRequest("test.record", {"key": key, **recorded(services)}, priority=priority)

    await client.enqueue_many([req("low-1", -1), req("mid-1", 0), req("high-1", 5)])
    await client.enqueue_many([req("mid-2", 0), req("high-2", 5), req("low-2", -1)])
    async with running_worker(services, concurrency=1, prefetch=0):
        await wait_until(lambda: _count(services, 6))
    order = [e["key"] for e in await executions(services)]
    assert order == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


async def test_delayed_run_does_not_start_before_its_time(client: Client, services) -> None:
    began = time.time()
    run_id = (await client.enqueue("test.record", recorded(services), delay_s=0.5)).id
    assert (await client.get(run_id))["state"] == "scheduled"
    async with running_worker(services):
        await client.wait(run_id, 10)
    (execution,) = await executions(services)
    assert execution["at"] - began >= 0.5


async def test_worker_serves_only_its_types(client: Client, services) -> None:
    noop = (await client.enqueue("noop", {})).id
    other = (await client.enqueue("test.record", {})).id
    async with running_worker(services, types=["noop"]):
        await client.wait(noop, 10)
        await asyncio.sleep(0.2)
        assert (await client.get(other))["state"] == "queued"


async def test_long_run_keeps_its_lease_by_heartbeat(client: Client, services) -> None:
    # Lease 5 s in these tests; a 7 s run needs two heartbeats and must still run only once.
    run_id = (await client.enqueue("test.record", {"sleep_s": 7, **recorded(services)})).id
    async with running_worker(services):
        await wait_until(lambda: _state(client, run_id, "running"), 5)
        run = await client.wait(run_id, 20)
        assert run["state"] == "succeeded"
    assert len(await executions(services)) == 1 and run["attempt"] == 1


async def test_runs_of_a_vanished_worker_are_reaped_and_completed(client: Client, services) -> None:
    ids = [r.id for r in await client.enqueue_many([RunRequest("noop", {}) for _ in range(20)])]
    # A worker claims them and dies without a word: its leases expire.
    await services.queue.claim("ghost", ["noop"], 20, 300)
    await asyncio.sleep(0.4)
    async with running_worker(services):
        runs = [await client.wait(i, 20) for i in ids]
    assert {r["state"] for r in runs} == {"succeeded"}
    assert {r["attempt"] for r in runs} == {2}


async def test_a_run_dying_of_lost_leases_is_dead_with_outcome_lost(
    client: Client, services
) -> None:
    run_id = (await client.enqueue("noop", {}, max_attempts=1)).id
    await services.queue.claim("ghost", ["noop"], 1, 100)
    await asyncio.sleep(0.2)
    assert await reap_once(services) == 1
    run = await client.get(run_id)
    assert run["state"] == "dead"
    assert run["attempts"][0]["outcome"] == "lost" and run["attempts"][0]["worker"] == "ghost"
    assert "lease expired" in run["error"]
    assert (await services.queue.totals())["known"] == 0


async def test_graceful_shutdown_finishes_short_runs_and_hands_back_long_ones(
    client: Client, services
) -> None:
    short = [await client.enqueue("test.record", {"sleep_s": 0.3}) for _ in range(3)]
    long = await client.enqueue("test.record", {"sleep_s": 60})
    waiting = [await client.enqueue("noop", {}, priority=-5) for _ in range(3)]
    stop = asyncio.Event()
    services.settings = services.settings.__class__(
        **{**services.settings.__dict__, "shutdown_grace_s": 1.0}
    )
    worker = Worker(services, concurrency=4, prefetch=10, types=["test.record"])
    task = asyncio.create_task(worker.run(stop))
    await wait_until(lambda: _state(client, long.id, "running"), 5)
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - began < 5  # the grace period (1 s) bounds the stop
    for run in short:
        assert (await client.get(run.id))["state"] == "succeeded"
    handed_back = await client.get(long.id)
    assert handed_back["state"] == "queued" and handed_back["attempt"] == 0
    assert await services.redis.zscore(services.queue.keys.ready("test.record"), long.id)
    assert worker.stats.released == 1
    for run in waiting:  # another type, never claimed by this worker
        assert (await client.get(run.id))["state"] == "queued"


async def test_prefetched_runs_are_handed_back_unspent(client: Client, services) -> None:
    ids = [r.id for r in await client.enqueue_many([RunRequest("test.record", {"sleep_s": 5})] * 6)]
    stop = asyncio.Event()
    worker = Worker(services, concurrency=1, prefetch=5, types=["test.record"])
    task = asyncio.create_task(worker.run(stop))
    await wait_until(lambda: _any_running(client, ids), 20)
    stop.set()
    await asyncio.wait_for(task, 30)
    states = [(await client.get(i)) for i in ids]
    assert sorted(r["state"] for r in states) == ["queued"] * 5 + ["succeeded"]
    assert all(r["attempt"] == 0 for r in states if r["state"] == "queued")
    for i in ids:  # handed back with the attempt count undone (or acked and forgotten)
        assert await services.queue.attempts_started(i) == 0


async def test_the_finish_statement_uses_index_lookups_on_a_grown_table(services) -> None:
    """performance.md: a plan made while `runs` was small must not scan it once it has grown."""
    async with services.pool.acquire() as conn:
        await conn.execute("ANALYZE runs")  # statistics say: empty table
        await conn.execute(
            """INSERT INTO runs (id, type, state, payload, max_attempts, timeout_s)
               SELECT gen_random_uuid(), 'noop', 'queued', '{}', 3, 30
               FROM generate_series(1, 20000)"""
        )
    async with services.hot_pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM runs LIMIT 200")]
        batch = [
            {"id": str(i), "attempt": 1, "state": "succeeded", "outcome": "succeeded",
             "worker": "w", "started_at": 0.0, "finished_at": 1.0, "retry_in_s": 0.0}
            for i in ids
        ]  # fmt: skip
        plan = await conn.fetch("EXPLAIN " + run_store._FINISH, orjson.dumps(batch).decode())
        # The plan the hot pool caches and reuses (plan_cache_mode = force_generic_plan): the
        # same statement PREPAREd, its generic plan shown by EXPLAIN EXECUTE.
        await conn.execute(f"PREPARE finish_probe(json) AS {run_store._FINISH}")
        literal = orjson.dumps(batch).decode().replace("'", "''")
        generic = await conn.fetch(f"EXPLAIN EXECUTE finish_probe('{literal}')")
        await conn.execute("DEALLOCATE finish_probe")
    for rows in (plan, generic):
        text = "\n".join(r[0] for r in rows)
        assert "Seq Scan on runs" not in text, text
        assert "Index Scan using runs_pkey" in text, text


async def _count(services: Services, n: int) -> bool:
    return len(await executions(services)) >= n


async def _state(client: Client, run_id: str, state: str) -> bool:
    return (await client.get(run_id))["state"] == state


async def _any_running(client: Client, ids: list[str]) -> bool:
    states = [(await client.get(i))["state"] for i in ids]
    return "running" in states


async def test_a_stopping_worker_gives_up_on_an_unreachable_database(
    client: Client, services: Services, registry
) -> None:
    """Its results cannot be recorded: it stops anyway (grace + 10 s), and the runs it held come
    back through lease expiry and complete on another worker."""
    import dataclasses

    from host.services import open_services

    ids = [r.id for r in await client.enqueue_many([RunRequest("noop", {})] * 3)]
    settings = dataclasses.replace(services.settings, shutdown_grace_s=0.5)
    services.settings = settings
    await services.hot_pool.close()  # this worker can no longer write results
    stop = asyncio.Event()
    worker = Worker(services, types=["noop"])
    task = asyncio.create_task(worker.run(stop))
    await wait_until(lambda: _all_in_flight(services, 3), 10)
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 30)
    assert time.monotonic() - began < 20
    async with open_services(settings, registry) as fresh, running_worker(fresh):
        runs = [await Client(fresh).wait(i, 30) for i in ids]
    assert {r["state"] for r in runs} == {"succeeded"} and {r["attempt"] for r in runs} == {2}


async def _all_in_flight(services: Services, n: int) -> bool:
    return (await services.queue.totals())["in_flight"] >= n


async def test_an_idle_worker_picks_up_a_run_at_once_and_stops_without_waiting_out_its_wait(
    client: Client, services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("host.worker.worker.IDLE_WAIT_S", 120.0)  # no timeout to rescue it,
    monkeypatch.setattr("host.worker.worker.STOP_WAIT_S", 120.0)  # nor a cancel
    stop = asyncio.Event()
    worker = Worker(services, concurrency=2, types=["noop"])
    task = asyncio.create_task(worker.run(stop))
    await wait_until(lambda: _idle(worker), 10)
    run = await client.enqueue("noop", {})  # woken by the enqueue's token, not by a timeout
    await wait_until(lambda: _state(client, run.id, "succeeded"), 20)
    await wait_until(lambda: _idle(worker), 10)
    stop.set()
    await asyncio.wait_for(task, 10)  # the stop ends the blocked wait (before the socket timeout)
    assert await services.redis.zcard(services.queue.keys.inflight) == 0
    later = await client.enqueue("noop", {})
    assert (await client.get(later.id))["state"] == "queued"
    assert await services.redis.zscore(services.queue.keys.ready("noop"), later.id) is not None


async def _idle(worker: Worker) -> bool:
    return worker._claimer_idle


@pytest.mark.parametrize("job_type", ["sleep", "test.sync"], ids=["async", "thread"])
async def test_waiting_handlers_fill_the_concurrency_and_never_exceed_it(
    client: Client, services: Services, job_type: str
) -> None:
    """Runners are woken one at a time, as handlers suspend (worker._Handoff): runs that wait
    (an async sleep, or a sync handler in a thread) must still run `concurrency` at once."""
    payload = {"seconds": 0.3} if job_type == "sleep" else {"sleep_s": 0.3}
    enqueued = await client.enqueue_many([RunRequest(job_type, payload) for _ in range(12)])
    async with running_worker(services, concurrency=4, types=[job_type]):
        for e in enqueued:
            await client.wait(e.id, 30)
    rows = await services.pool.fetch("SELECT started_at, finished_at FROM attempts")
    assert len(rows) == 12
    events = sorted([(r["started_at"], 1) for r in rows] + [(r["finished_at"], -1) for r in rows])
    in_flight = list(itertools.accumulate(step for _, step in events))
    assert max(in_flight) == 4
