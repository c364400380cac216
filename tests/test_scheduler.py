"""The scheduler against real PostgreSQL and Redis, in this process: the leader scripts, the
PostgreSQL epoch fence, cron firing (exactly once per tick, misfire and overlap policies,
invalid definitions), cancellation and job definition management."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from host.client import Client, RunRequest
from host.definitions import JobDefinitions
from host.errors import JobExists, JobNotFound, StaleLeader, ValidationFailed
from host.queue.queue import Queue, QueuedRun
from host.scheduler.leader import LeaderLease, Term, fenced, recorded_epoch
from host.scheduler.scheduler import Scheduler
from host.services import Services
from host.store import jobs as job_store
from host.store import runs as run_store
from tests.helpers import running_scheduler, running_worker, wait_until

# -- the leader lease scripts ---------------------------------------------------------------------


async def test_only_one_process_holds_the_lease_and_epochs_increase(
    redis: Redis, namespace: str
) -> None:
    keys = Queue(redis, namespace).keys
    a, b = LeaderLease(redis, keys, 5), LeaderLease(redis, keys, 5)
    term_a = await a.try_acquire(floor=0)
    assert term_a is not None and term_a.epoch == 1 and a.is_leader
    assert await b.try_acquire(floor=0) is None and not b.is_leader
    assert await b.renew() is False
    assert await a.renew() is True
    await a.release()
    assert not a.is_leader and await redis.get(keys.leader) is None
    term_b = await b.try_acquire(floor=0)
    assert term_b is not None and term_b.epoch == 2


async def test_renew_after_losing_the_lease_fails(redis: Redis, namespace: str) -> None:
    """fault-matrix S5: compare-and-extend fails for a non-owner, and the old leader demotes."""
    keys = Queue(redis, namespace).keys
    old, new = LeaderLease(redis, keys, 5), LeaderLease(redis, keys, 5)
    await old.try_acquire(0)
    await redis.pexpire(keys.leader, 1)
    await asyncio.sleep(0.01)
    assert await new.try_acquire(0) is not None
    assert await old.renew() is False and old.term is None
    await old.release()  # compare-and-delete: does not remove the new owner's lease
    assert await new.renew() is True


async def test_a_leader_that_cannot_renew_stops_acting_before_its_lease_ends(
    redis: Redis, namespace: str
) -> None:
    """fault-matrix S4 in small: without a renewal (Redis unreachable, or the process froze) the
    leader's own clock ends its tenure, even while Redis still holds its key."""
    keys = Queue(redis, namespace).keys
    lease = LeaderLease(redis, keys, 1)
    assert await lease.try_acquire(0) is not None and lease.is_leader
    await redis.pexpire(keys.leader, 60_000)  # the key outlives the lease as seen locally
    await asyncio.sleep(1.05)
    assert not lease.is_leader and lease.term is not None


async def test_the_epoch_is_lifted_above_postgres_when_redis_lost_its_counter(
    redis: Redis, namespace: str
) -> None:
    keys = Queue(redis, namespace).keys
    term = await LeaderLease(redis, keys, 5).try_acquire(floor=41)
    assert term is not None and term.epoch == 42
    assert int(await redis.get(keys.leader_epoch)) == 42


async def test_a_superseded_epoch_cannot_write(services: Services) -> None:
    """fault-matrix S2: the PostgreSQL check rejects a leader once a newer epoch wrote."""
    ns, pool = services.settings.namespace, services.pool
    old, new = Term("old", 1), Term("new", 2)
    async with fenced(pool, ns, old):
        pass
    async with fenced(pool, ns, old):  # its own epoch again: fine
        pass
    async with fenced(pool, ns, new):
        pass
    with pytest.raises(StaleLeader) as info:
        async with fenced(pool, ns, old) as conn:
            await conn.execute("SELECT 1")
    assert (info.value.epoch, info.value.current) == (1, 2)
    with pytest.raises(StaleLeader):  # same epoch, other owner (Redis lost its counter)
        async with fenced(pool, ns, Term("impostor", 2)):
            pass
    assert await recorded_epoch(pool, ns) == 2


# -- cancel ---------------------------------------------------------------------------------------


async def test_cancel_script_removes_waiting_runs_and_leaves_in_flight_ones(
    redis: Redis, namespace: str
) -> None:
    queue = Queue(redis, namespace)

    def run(i: str, delay_ms: int = 0) -> QueuedRun:
        return QueuedRun(i, "a", 0, 3, delay_ms, b"{}")

    await queue.enqueue([run("1-ready"), run("later", 60_000), run("2-busy")])
    # "1-ready" is first (same millisecond: FIFO falls back to run-id order): claim it.
    await queue.claim("w", ["a"], 1, 10_000)
    assert await queue.cancel(["1-ready", "later", "2-busy", "nope"]) == {
        "1-ready": "in_flight", "later": "removed", "2-busy": "removed", "nope": "unknown",
    }  # fmt: skip
    assert await queue.totals() == {"delayed": 0, "in_flight": 1, "dying": 0, "known": 1}
    assert await queue.cancel([]) == {}


async def test_cancelling_runs_fences_the_running_one(services: Services) -> None:
    client = Client(services)
    waiting = (await client.enqueue("noop", {}, delay_s=60)).id
    running = (await client.enqueue("sleep", {"seconds": 1.0})).id
    async with running_worker(services, concurrency=2):
        await wait_until(lambda: _in_flight(services, running), 10)
        assert await client.cancel([waiting, running, waiting]) == {waiting, running}
        await wait_until(lambda: _forgotten(services, running), 10)
    for run_id in (waiting, running):
        run = await client.get(run_id)
        assert run["state"] == "cancelled" and run["finished_at"], run
    assert (await client.get(running))["attempts"][0]["outcome"] == "succeeded"  # history kept
    assert await client.cancel([running]) == set()  # final: nothing to cancel


async def _in_flight(services: Services, run_id: str) -> bool:
    return await services.redis.zscore(services.queue.keys.inflight, run_id) is not None


async def _forgotten(services: Services, run_id: str) -> bool:
    return not await services.redis.hexists(services.queue.keys.env, run_id)


# -- job definitions ------------------------------------------------------------------------------


async def test_definitions_are_validated_and_managed(services: Services) -> None:
    defs = JobDefinitions(services)
    job = await defs.create("nightly", "noop", {"a": 1}, schedule={"cron": "0 3 * * *",
                            "timezone": "Europe/Paris"})  # fmt: skip
    assert job.schedule and job.next_fire_at and job.next_fire_at > datetime.now(UTC)
    assert job.next_fire_at.astimezone(job.schedule.zone).hour == 3
    with pytest.raises(JobExists):
        await defs.create("nightly", "noop", {})
    with pytest.raises(ValidationFailed) as info:
        await defs.create("bad", "sleep", {"seconds": "x"})
    assert info.value.errors[0].path == "/seconds"
    with pytest.raises(ValidationFailed):
        await defs.create("bad", "noop", {}, schedule={"cron": "nope"})
    assert not (await defs.pause("nightly")).enabled
    assert (await defs.resume("nightly")).enabled
    assert [j.name for j in await defs.list()] == ["nightly"]
    assert len(JobDefinitions.next_times(job, 3)) == 3
    triggered = await defs.trigger("nightly")
    run = await Client(services).get(triggered.id)
    assert run["job_id"] == job.id and run["payload"] == {"a": 1} and run["scheduled_for"] is None
    await defs.delete("nightly")
    with pytest.raises(JobNotFound):
        await defs.get("nightly")
    assert (await Client(services).get(triggered.id))["job_id"] is None  # runs stay


# -- firing ---------------------------------------------------------------------------------------


async def cron_runs(services: Services, job_id: str) -> list[tuple[datetime, int]]:
    rows = await services.pool.fetch(
        """SELECT scheduled_for, count(*) AS n FROM runs WHERE job_id = $1
           AND scheduled_for IS NOT NULL GROUP BY scheduled_for ORDER BY scheduled_for""",
        job_id,
    )
    return [(r["scheduled_for"], r["n"]) for r in rows]


async def test_two_schedulers_fire_every_second_tick_exactly_once(services: Services) -> None:
    job = await JobDefinitions(services).create(
        "every-second", "noop", {}, schedule={"cron": "* * * * * *"}
    )
    async with running_scheduler(services) as a, running_scheduler(services) as b:
        await asyncio.sleep(3.5)
        assert a.is_leader != b.is_leader  # one leader
    ticks = await cron_runs(services, job.id)
    assert len(ticks) >= 3
    assert {n for _, n in ticks} == {1}
    seconds = [t for t, _ in ticks]
    assert all(y - x == timedelta(seconds=1) for x, y in itertools.pairwise(seconds))
    assert all(t.microsecond == 0 for t in seconds)


async def _past_due(services: Services, job_id: str, seconds_ago: float) -> None:
    await services.pool.execute(
        "UPDATE jobs SET next_fire_at = date_trunc('minute', now()) - make_interval(secs => $2)"
        " WHERE id = $1",
        job_id,
        seconds_ago,
    )


@pytest.mark.parametrize(("misfire", "expected_late"), [("skip", 0), ("once", 1), ("catch_up", 3)])
async def test_missed_ticks_after_downtime_follow_the_misfire_policy(
    services: Services, misfire: str, expected_late: int
) -> None:
    """fault-matrix S6 in small: the schedulers were down 10 minutes."""
    job = await JobDefinitions(services).create(
        "minutely",
        "noop",
        {},
        schedule={"cron": "* * * * *", "misfire": misfire, "catch_up_limit": 3},
    )
    await _past_due(services, job.id, 600)
    scheduler = Scheduler(services)
    term = await scheduler.lease.try_acquire(0)
    assert term is not None
    await scheduler.fire_due(term)
    await scheduler.fire_due(term)  # nothing more: the ticks moved on
    ticks = await cron_runs(services, job.id)
    # Ticks within the 60 s grace (the current minute, if it began < 60 s ago) are on time.
    now = datetime.now(UTC)
    late = [t for t, _ in ticks if now - t > timedelta(seconds=61)]
    assert len(late) == expected_late
    assert scheduler.stats.missed >= 10 - expected_late - 1
    row = await job_store.get_job(services.pool, services.settings.tenant, "minutely")
    assert row and row.next_fire_at and row.next_fire_at > now - timedelta(seconds=1)


async def test_overlap_policies(services: Services) -> None:
    defs = JobDefinitions(services)
    jobs = {}
    for policy in ("allow", "skip", "queue_one", "cancel_previous"):
        jobs[policy] = await defs.create(
            policy,
            "noop",
            {},
            schedule={"cron": "* * * * *", "overlap": policy, "misfire": "catch_up"},
        )
    scheduler = Scheduler(services)
    term = await scheduler.lease.try_acquire(0)
    assert term is not None
    for _ in range(3):  # three separate fire rounds, one tick each, no worker running
        for job in jobs.values():
            await _past_due(services, job.id, 0)
            await services.pool.execute(
                "UPDATE runs SET scheduled_for = scheduled_for - interval '1 hour'"
                " WHERE job_id = $1",
                job.id,
            )  # free the tick's UNIQUE slot so the same minute can fire again
        await scheduler.fire_due(term)
    counts = {}
    for policy, job in jobs.items():
        rows = await services.pool.fetch("SELECT state FROM runs WHERE job_id = $1", job.id)
        counts[policy] = sorted(r["state"] for r in rows)
    assert counts["allow"] == ["queued"] * 3
    assert counts["skip"] == ["queued"]
    assert counts["queue_one"] == ["queued"]
    assert counts["cancel_previous"] == ["cancelled", "cancelled", "queued"]
    assert scheduler.stats.cancelled == 2 and scheduler.stats.overlap_skipped == 4
    assert await services.queue.totals() == {"delayed": 0, "in_flight": 0, "dying": 0, "known": 6}


async def test_a_definition_that_no_longer_validates_is_skipped_not_queued(
    services: Services,
) -> None:
    job = await JobDefinitions(services).create(
        "sleepy", "sleep", {"seconds": 0}, schedule={"cron": "* * * * *"}
    )
    await services.pool.execute(
        """UPDATE jobs SET payload = '{"seconds": "x"}' WHERE id = $1""", job.id
    )
    await _past_due(services, job.id, 0)
    scheduler = Scheduler(services)
    term = await scheduler.lease.try_acquire(0)
    assert term is not None
    await scheduler.fire_due(term)
    assert scheduler.stats.invalid == 1 and await cron_runs(services, job.id) == []
    row = await job_store.get_job(services.pool, services.settings.tenant, "sleepy")
    assert row and row.next_fire_at and row.next_fire_at > datetime.now(UTC)


async def test_a_stale_leader_fires_nothing(services: Services) -> None:
    job = await JobDefinitions(services).create("s2", "noop", {}, schedule={"cron": "* * * * *"})
    old, new = Scheduler(services), Scheduler(services)
    old_term = await old.lease.try_acquire(0)
    assert old_term is not None
    await services.redis.delete(services.queue.keys.leader)  # its lease "expired" while frozen
    new_term = await new.lease.try_acquire(0)
    assert new_term is not None and new_term.epoch > old_term.epoch
    await new.fire_due(new_term)  # records the newer epoch (nothing due yet)
    await _past_due(services, job.id, 0)
    with pytest.raises(StaleLeader):
        await old.fire_due(old_term)
    assert await cron_runs(services, job.id) == []
    await new.fire_due(new_term)
    assert len(await cron_runs(services, job.id)) == 1


# -- retention and promotion ----------------------------------------------------------------------


async def test_retention_prunes_old_finished_runs_in_batches(services: Services) -> None:
    from host.scheduler import retention

    client = Client(services)
    ids = [r.id for r in await client.enqueue_many([RunRequest("noop", {})] * 25)]
    keep = (await client.enqueue("noop", {})).id
    await services.pool.execute(
        """UPDATE runs SET state = 'succeeded', finished_at = now() - interval '40 days'
           WHERE id = ANY($1::uuid[])""",
        ids,
    )
    term = Term("me", 1)
    ns = services.settings.namespace
    assert await retention.prune(services.pool, ns, term, 0) == 0  # 0 keeps everything
    assert await retention.prune(services.pool, ns, term, 30, batch=10, max_batches=2) == 20
    assert await retention.prune(services.pool, ns, term, 30, batch=10) == 5
    assert await run_store.count_by_state(services.pool) == {"queued": 1}
    assert (await client.get(keep))["state"] == "queued"


async def test_dead_letters_are_kept_longer_than_other_finished_runs(services: Services) -> None:
    from host.scheduler import retention

    client = Client(services)
    done = [r.id for r in await client.enqueue_many([RunRequest("noop", {})] * 3)]
    dead = [r.id for r in await client.enqueue_many([RunRequest("noop", {})] * 2)]
    for ids, state in ((done, "succeeded"), (dead, "dead")):
        await services.pool.execute(
            """UPDATE runs SET state = $2, finished_at = now() - interval '40 days'
               WHERE id = ANY($1::uuid[])""",
            ids, state,
        )  # fmt: skip
    defaults = services.settings
    term, ns = Term("me", 1), defaults.namespace
    pruned = await retention.prune(
        services.pool, ns, term, defaults.retention_days,
        dead_retention_days=defaults.dead_retention_days,
    )  # fmt: skip
    assert (defaults.retention_days, defaults.dead_retention_days) == (30.0, 90.0)
    assert pruned == 3
    assert await run_store.count_by_state(services.pool) == {"dead": 2}


async def test_retention_prunes_the_inbound_log_and_replay_rows_by_scheme(
    services: Services,
) -> None:
    """The delivery log goes after retention_days; replay rows of timestamped schemes too, but
    not before 7 days; those of schemes without a timestamp only with replay_retention_days."""
    import uuid

    from host.scheduler import retention
    from host.store import triggers as trigger_store

    pool, ns, term = services.pool, services.settings.namespace, Term("me", 1)
    schemes = {"standard": {}, "stripe": {}, "github": {}, "hmac": {},
               "hmac-ts": {"timestamp_header": "X-Ts"}}  # fmt: skip
    ids = {}
    for name, options in schemes.items():
        t = await trigger_store.create(pool, "default", {
            "name": name, "scheme": name.removesuffix("-ts"), "type": "noop", "tolerance_s": 300,
            "max_body_bytes": 1000, "options": options,
        }, ["s3cret"])  # fmt: skip
        ids[name] = t.id
        for age_days in (40, 3, 0):
            async with pool.acquire() as conn, conn.transaction():
                await trigger_store.claim_delivery(conn, t.id, f"d{age_days}", str(uuid.uuid4()))
            await trigger_store.record(pool, trigger_store.Delivery(
                t, "accepted", "accepted", 202, f"d{age_days}"))  # fmt: skip
            for table in ("trigger_replays", "trigger_deliveries"):
                await pool.execute(
                    f"""UPDATE {table} SET received_at = now() - make_interval(days => $3)
                        WHERE trigger_id = $1 AND delivery_id = $2""",
                    t.id, f"d{age_days}", age_days,
                )  # fmt: skip

    async def left(table: str) -> dict[str, list[str]]:
        rows = await pool.fetch(f"SELECT trigger_id, delivery_id FROM {table} ORDER BY 2")
        return {n: [r["delivery_id"] for r in rows if str(r["trigger_id"]) == i]
                for n, i in ids.items()}  # fmt: skip

    everything = {n: ["d0", "d3", "d40"] for n in ids}
    assert await retention.prune(pool, ns, term, 0, replay_retention_days=0) == 0
    assert await left("trigger_deliveries") == await left("trigger_replays") == everything
    await retention.prune(pool, ns, term, 1, batch=2)  # batches of 2: several transactions
    assert await left("trigger_deliveries") == {n: ["d0"] for n in ids}
    timed = {"standard", "stripe", "hmac-ts"}
    assert await left("trigger_replays") == {
        n: ["d0", "d3"] if n in timed else ["d0", "d3", "d40"] for n in ids
    }  # the 3-day rows stay: senders retry the same id for days
    await retention.prune(pool, ns, term, 1, replay_retention_days=30)
    assert await left("trigger_replays") == {n: ["d0", "d3"] for n in ids}


def test_replay_retention_comes_from_the_environment_and_is_checked() -> None:
    from host.config import Settings
    from host.errors import ConfigError

    env = {"JOBHOST_REPLAY_RETENTION_DAYS": "365"}
    assert Settings.from_env(env).replay_retention_days == 365.0
    assert Settings.from_env({}).replay_retention_days == 0.0  # kept by default
    with pytest.raises(ConfigError, match="retention days"):
        Settings.from_env({"JOBHOST_REPLAY_RETENTION_DAYS": "-1"})


async def test_due_runs_show_as_queued_in_postgres(services: Services) -> None:
    client = Client(services)
    soon = (await client.enqueue("noop", {}, delay_s=0.05)).id
    later = (await client.enqueue("noop", {}, delay_s=60)).id
    await asyncio.sleep(0.1)
    assert await run_store.promote_due(services.pool) == 1
    assert (await client.get(soon))["state"] == "queued"
    assert (await client.get(later))["state"] == "scheduled"


async def test_promoting_due_runs_reads_an_index_not_the_history(services: Services) -> None:
    """promote_due runs every few seconds on the ordinary pool (sequential scans allowed); on a
    large history of queued and finished runs it must find the few waiting ones through the
    runs_due index (scheduled and retrying runs only), not by scanning the table."""
    async with services.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO runs (id, type, state, payload, max_attempts, timeout_s, run_at)
               SELECT gen_random_uuid(), 'noop',
                      (ARRAY['queued', 'succeeded', 'succeeded', 'succeeded'])[1 + i % 4],
                      '{}', 3, 30, now() - interval '1 hour'
               FROM generate_series(1, 20000) AS i"""
        )
        await conn.execute(
            """INSERT INTO runs (id, type, state, payload, max_attempts, timeout_s, run_at)
               SELECT gen_random_uuid(), 'noop', 'scheduled', '{}', 3, 30, now() + interval '1 h'
               FROM generate_series(1, 5)"""
        )
        await conn.execute("ANALYZE runs")
        plan = await conn.fetch("EXPLAIN " + run_store.PROMOTE_DUE, 1000)
    text = "\n".join(r[0] for r in plan)
    assert "runs_due" in text, text
    assert "Seq Scan on runs" not in text, text
    assert await run_store.promote_due(services.pool) == 0  # the five are not due yet


async def test_a_stampede_of_schedulers_elects_one_leader_at_a_time(services: Services) -> None:
    """fault-matrix S3 in small: five schedulers start at the same instant."""
    schedulers = [Scheduler(services) for _ in range(5)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    most = 0
    try:
        for _ in range(40):
            await asyncio.sleep(0.05)
            most = max(most, sum(s.is_leader for s in schedulers))
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert most == 1
    assert sum(s.stats.terms for s in schedulers) >= 1


async def test_a_leader_whose_epoch_redis_forgot_takes_a_higher_one(services: Services) -> None:
    ns = services.settings.namespace
    async with fenced(services.pool, ns, Term("before-the-loss", 7)):
        pass  # PostgreSQL saw epoch 7; then Redis lost its counter
    scheduler = Scheduler(services)
    await services.redis.delete(services.queue.keys.leader_epoch)
    term = await scheduler.lease.try_acquire(floor=0)  # a floor read before the loss, say
    assert term is not None and term.epoch == 1
    with pytest.raises(StaleLeader) as info:
        await scheduler.tick(term)
    await scheduler._step_down(info.value)  # holds the lease: gives it up to re-acquire
    assert (
        scheduler.lease.term is None
        and await services.redis.get(services.queue.keys.leader) is None
    )
    await scheduler._lease_step()  # reads the floor from PostgreSQL again
    assert scheduler.lease.term is not None and scheduler.lease.term.epoch == 8
    await scheduler.tick(scheduler.lease.term)
    assert await recorded_epoch(services.pool, ns) == 8


@pytest.mark.parametrize(("backfill", "misfire", "owed"), [(False, "once", 0), (True, "once", 1)])
async def test_paused_jobs_do_not_fire_and_resume_backfills_only_if_asked(
    services: Services, backfill: bool, misfire: str, owed: int
) -> None:
    defs = JobDefinitions(services)
    job = await defs.create(
        "paused", "noop", {},
        schedule={"cron": "* * * * *", "misfire": misfire, "backfill_on_resume": backfill},
    )  # fmt: skip
    await defs.pause("paused")
    await _past_due(services, job.id, 600)  # paused through ten minutely ticks
    scheduler = Scheduler(services)
    term = await scheduler.lease.try_acquire(0)
    assert term is not None
    await scheduler.fire_due(term)
    assert await cron_runs(services, job.id) == []  # paused: nothing fires
    await defs.resume("paused")
    await scheduler.fire_due(term)
    now = datetime.now(UTC)
    late = [t for t, _ in await cron_runs(services, job.id) if now - t > timedelta(seconds=61)]
    assert len(late) == owed


def test_cron_aliases_are_accepted() -> None:
    from host.cron import next_fire, parse_schedule

    hourly = parse_schedule({"cron": "@hourly"})
    fire = next_fire(hourly, datetime(2026, 1, 1, 10, 30, tzinfo=UTC))
    assert fire == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    with pytest.raises(ValidationFailed, match="or an alias"):
        parse_schedule({"cron": "@sometimes"})
