"""Each Lua script's contract, against a real Redis: ordering, idempotency, fencing, expiry."""

from __future__ import annotations

import asyncio
import os

import pytest
from redis.asyncio import Redis

from host.queue.queue import Queue, QueuedRun
from host.queue.scripts import SCRIPT_NAMES, script_source


def run(id: str, type: str = "a", priority: int = 0, delay_ms: int = 0, max_attempts: int = 3):
    return QueuedRun(id, type, priority, max_attempts, delay_ms, b'{"id":"%s"}' % id.encode())


@pytest.fixture
def queue(redis: Redis, namespace: str) -> Queue:
    return Queue(redis, namespace)


async def ids(queue: Queue, types=("a",), n=100, lease_ms=30_000) -> list[str]:
    claimed = await queue.claim("w1", list(types), n, lease_ms)
    return [lease.id for lease in claimed.leases]


def test_every_script_has_a_contract_header_and_resolves_includes() -> None:
    for name in SCRIPT_NAMES:
        source = script_source(name)
        assert source.startswith("--[[\n  " + name + ":"), name
        assert "@include" not in source, name
        assert "KEYS[1]" in source and "Returns:" in source, name


# -- enqueue ------------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_by_run_id(queue: Queue, redis: Redis) -> None:
    assert await queue.enqueue([run("r1"), run("r2")]) == []
    assert await queue.enqueue([run("r1"), run("r3")]) == ["r1"]
    assert await redis.zcard(queue.keys.ready("a")) == 3
    assert await ids(queue) == ["r1", "r2", "r3"]
    # Known while in flight, too: a reconciliation pass must not duplicate it.
    assert await queue.enqueue([run("r1")]) == ["r1"]
    assert await redis.zcard(queue.keys.ready("a")) == 0


async def test_enqueue_can_restore_the_attempt_count(queue: Queue) -> None:
    restored = QueuedRun("r1", "a", 0, 5, 0, b"{}", attempts_done=2)
    await queue.enqueue([restored])
    claimed = await queue.claim("w1", ["a"], 1, 10_000)
    assert [(x.attempt, x.token) for x in claimed.leases] == [(3, "w1:3")]


async def test_enqueue_with_delay_goes_to_the_delayed_set(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("later", delay_ms=60_000), run("now")])
    assert await redis.zcard(queue.keys.delayed) == 1
    assert await ids(queue) == ["now"]


async def test_enqueue_mixed_batch_keeps_each_runs_meta_score_and_lane(
    queue: Queue, redis: Redis
) -> None:
    # One batch repeating types, lanes, priorities and max_attempts: the per-batch memos must
    # still give every run its own meta and the ready score of its own priority.
    batch = []
    for i in range(24):
        batch.append(
            QueuedRun(
                f"r{i:02}", ("a", "b")[i % 2], i % 3, 2 + i % 4, 60_000 if i % 5 == 0 else 0,
                b"{}", lane=("x", "y|z")[i // 12],
            )
        )  # fmt: skip
    assert await queue.enqueue(batch) == []
    metas = await redis.hgetall(queue.keys.meta)
    for r in batch:
        want = f"{r.priority}|{r.max_attempts}|{r.type}|{r.lane}"
        assert metas[r.id.encode()].decode() == want
    ready = [r for r in batch if r.delay_ms == 0]
    scores = {}
    for r in ready:
        score = await redis.zscore(queue.keys.ready(r.type, r.lane), r.id)
        assert score is not None
        scores.setdefault(r.priority, set()).add(score)
    assert all(len(s) == 1 for s in scores.values())  # one clock reading per batch
    by_priority = {p: min(s) for p, s in scores.items()}
    assert by_priority[0] > by_priority[1] > by_priority[2]  # higher priority: lower score
    assert await redis.zcard(queue.keys.delayed) == len(batch) - len(ready)
    assert sorted(await redis.smembers(queue.keys.types)) == [b"a", b"b"]
    for t in ("a", "b"):
        assert sorted(await redis.zrange(queue.keys.lanes(t), 0, -1)) == [b"x", b"y|z"]


async def test_enqueue_leaves_one_wake_token(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("r1")])
    await queue.enqueue([run("r2")])
    assert await redis.llen(queue.keys.wake) == 1
    assert await redis.blpop([queue.keys.wake], timeout=0.01) is not None
    assert await redis.blpop([queue.keys.wake], timeout=0.01) is None


# -- claim --------------------------------------------------------------------------------------


async def test_claim_on_empty_queue_returns_nothing(queue: Queue) -> None:
    result = await queue.claim("w1", ["a", "b"], 10, 1000)
    assert result.leases == [] and result.next_due_ms == -1


async def test_claim_orders_by_priority_then_fifo(queue: Queue) -> None:
    # Within one millisecond FIFO falls back to run-id order (UUIDv7 ids are time-ordered).
    await queue.enqueue([run("low1", priority=-5), run("mid1"), run("high1", priority=10)])
    await queue.enqueue([run("mid2"), run("high2", priority=10), run("low2", priority=-5)])
    assert await ids(queue) == ["high1", "high2", "mid1", "mid2", "low1", "low2"]


async def test_claim_across_types_takes_highest_priority_first(queue: Queue) -> None:
    await queue.enqueue([run("a1", "a", 0), run("b1", "b", 5), run("a2", "a", 9), run("b2", "b")])
    assert await ids(queue, ("a", "b"), n=3) == ["a2", "b1", "a1"]
    assert await ids(queue, ("a", "b")) == ["b2"]


async def test_priority_ageing_lets_a_long_wait_overtake_higher_priority(
    queue: Queue,
) -> None:
    await queue.set_priority_ageing(0.1)  # 100 ms of waiting is worth one priority level
    await queue.enqueue([run("old-low", priority=0)])
    await asyncio.sleep(0.25)
    await queue.enqueue([run("new-high", priority=2), run("new-mid", priority=1)])
    # old-low waited 250 ms: worth 2.5 levels, so it is ahead of priority 2 enqueued now.
    assert await ids(queue) == ["old-low", "new-high", "new-mid"]
    await queue.enqueue([run("low"), run("high", priority=1), run("low2")])
    assert await ids(queue) == ["high", "low", "low2"]  # same instant: priority, then FIFO


async def test_claim_only_serves_the_types_asked(queue: Queue) -> None:
    await queue.enqueue([run("a1", "a"), run("b1", "b")])
    assert await ids(queue, ("b",)) == ["b1"]


async def test_claim_respects_the_limit_and_counts_attempts(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run(f"r{i}") for i in range(5)])
    claimed = await queue.claim("w1", ["a"], 2, 10_000)
    assert [lease.id for lease in claimed.leases] == ["r0", "r1"]
    assert [lease.attempt for lease in claimed.leases] == [1, 1]
    assert claimed.leases[0].token == "w1:1"
    assert claimed.leases[0].envelope == b'{"id":"r0"}'
    deadline = await redis.zscore(queue.keys.inflight, "r0")
    assert claimed.now_ms + 10_000 == deadline


async def test_full_claim_passes_the_wake_token_on(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run(f"r{i}") for i in range(3)])
    await redis.delete(queue.keys.wake)
    await queue.claim("w1", ["a"], 2, 10_000)
    assert await redis.llen(queue.keys.wake) == 1


async def test_claim_promotes_due_delayed_runs_and_reports_next_due(queue: Queue) -> None:
    await queue.enqueue([run("soon", delay_ms=150), run("late", delay_ms=60_000)])
    first = await queue.claim("w1", ["a"], 10, 1000)
    assert first.leases == [] and 0 < first.next_due_ms <= 150
    await asyncio.sleep(0.2)
    assert await ids(queue) == ["soon"]


# -- ack, retry, release, extend ----------------------------------------------------------------


async def test_ack_forgets_the_run_only_for_the_lease_owner(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("r1"), run("r2")])
    await queue.claim("w1", ["a"], 2, 10_000)
    assert await queue.ack([("r1", "w1:1"), ("r2", "w2:1")]) == ["r2"]
    assert await redis.hexists(queue.keys.env, "r1") == 0
    assert await redis.zscore(queue.keys.inflight, "r1") is None
    assert await redis.hexists(queue.keys.env, "r2") == 1  # fenced: still leased to w1


async def test_retry_returns_the_run_after_its_delay_as_next_attempt(queue: Queue) -> None:
    await queue.enqueue([run("r1")])
    await queue.claim("w1", ["a"], 1, 10_000)
    assert await queue.retry([("r1", "w1:1", 100)]) == []
    assert await ids(queue) == []
    await asyncio.sleep(0.15)
    claimed = await queue.claim("w2", ["a"], 1, 10_000)
    assert [(x.id, x.attempt, x.token) for x in claimed.leases] == [("r1", 2, "w2:2")]


async def test_retry_by_a_stale_owner_is_fenced(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("r1")])
    await queue.claim("w1", ["a"], 1, 10_000)
    assert await queue.retry([("r1", "w0:1", 0)]) == ["r1"]
    assert await redis.zscore(queue.keys.inflight, "r1") is not None


async def test_release_undoes_the_attempt_and_goes_to_the_front(queue: Queue) -> None:
    await queue.enqueue([run("r1"), run("r2"), run("r3")])
    await queue.claim("w1", ["a"], 1, 10_000)
    assert await queue.release([("r1", "w1:1")]) == []
    claimed = await queue.claim("w2", ["a"], 3, 10_000)
    assert [(x.id, x.attempt) for x in claimed.leases] == [("r1", 1), ("r2", 1), ("r3", 1)]


async def test_extend_pushes_the_deadline_and_reports_lost_leases(
    queue: Queue, redis: Redis
) -> None:
    await queue.enqueue([run("r1"), run("r2")])
    claimed = await queue.claim("w1", ["a"], 2, 1000)
    lost = await queue.extend([("r1", "w1:1"), ("r2", "wX:1"), ("gone", "w1:1")], 60_000)
    assert lost == ["r2", "gone"]
    assert await redis.zscore(queue.keys.inflight, "r1") >= claimed.now_ms + 60_000
    assert await redis.zscore(queue.keys.inflight, "r2") == claimed.now_ms + 1000


# -- reap, bury, promote ------------------------------------------------------------------------


async def test_reap_requeues_expired_leases_only(queue: Queue) -> None:
    await queue.enqueue([run("1-short"), run("2-long")])
    await queue.claim("w1", ["a"], 1, 50)
    await queue.claim("w1", ["a"], 1, 60_000)
    await asyncio.sleep(0.1)
    result = await queue.reap()
    assert (result.requeued, result.dying) == (1, [])
    assert (await queue.reap()).requeued == 0  # idempotent
    claimed = await queue.claim("w2", ["a"], 5, 60_000)
    assert [(x.id, x.attempt) for x in claimed.leases] == [("1-short", 2)]


async def test_reap_moves_spent_runs_to_dying_until_buried(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("poison", max_attempts=1)])
    await queue.claim("w1", ["a"], 1, 50)
    await asyncio.sleep(0.1)
    first = await queue.reap()
    assert first.requeued == 0
    assert [(d.id, d.attempt, d.token) for d in first.dying] == [("poison", 1, "w1:1")]
    # Until buried it is reported again (a crash before recording it dead loses nothing).
    assert [d.id for d in (await queue.reap()).dying] == ["poison"]
    assert await queue.bury(["poison", "unknown"]) == 1
    assert (await queue.reap()).dying == []
    assert await redis.hexists(queue.keys.env, "poison") == 0
    assert await ids(queue) == []


async def test_bury_ignores_runs_that_are_not_dying(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("alive")])
    assert await queue.bury(["alive"]) == 0
    assert await redis.hexists(queue.keys.env, "alive") == 1


async def test_promote_moves_only_due_runs(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("soon", delay_ms=50), run("late", delay_ms=60_000)])
    assert await queue.promote() == 0
    await asyncio.sleep(0.1)
    assert await queue.promote() == 1
    assert await redis.zrange(queue.keys.ready("a"), 0, -1) == [b"soon"]
    assert await redis.zcard(queue.keys.delayed) == 1


@pytest.mark.skipif(
    bool(os.environ.get("JOBHOST_TEST_REDIS_URL")),
    reason="SCRIPT FLUSH runs only on the suite's own Redis, never a shared one",
)
async def test_scripts_reload_after_redis_forgets_them(queue: Queue, redis: Redis) -> None:
    await queue.enqueue([run("r1")])
    await redis.script_flush()
    await queue.enqueue([run("r2")])
    assert await ids(queue) == ["r1", "r2"]


# -- wait_and_claim (an idle worker's one round trip: BLPOP, then the claim) ---------------------


async def test_wait_and_claim_wakes_on_an_enqueue_and_claims_it(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.wait_and_claim("w1", ["a"], 10, 30_000, 30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await queue.enqueue([run("r1"), run("r2")])
    claimed = await asyncio.wait_for(waiting, 10)
    assert [lease.id for lease in claimed.leases] == ["r1", "r2"]
    assert [lease.token for lease in claimed.leases] == ["w1:1", "w1:1"]
    assert await queue.redis.llen(queue.keys.wake) == 0  # the token was taken, not left


async def test_wait_and_claim_claims_after_the_timeout_too(queue: Queue) -> None:
    empty = await queue.wait_and_claim("w1", ["a"], 10, 30_000, 0.01)
    assert empty.leases == []
    await queue.enqueue([run("r1")])
    await queue.redis.delete(queue.keys.wake)  # a run whose wake token another worker took
    claimed = await queue.wait_and_claim("w1", ["a"], 10, 30_000, 0.01)
    assert [lease.id for lease in claimed.leases] == ["r1"]


async def test_interrupt_wait_ends_only_that_workers_wait(queue: Queue) -> None:
    mine = asyncio.create_task(queue.wait_and_claim("w1", ["a"], 10, 30_000, 30.0))
    other = asyncio.create_task(queue.wait_and_claim("w2", ["a"], 10, 30_000, 30.0))
    await asyncio.sleep(0.05)
    await queue.interrupt_wait("w1")
    assert (await asyncio.wait_for(mine, 10)).leases == []
    await asyncio.sleep(0.05)
    assert not other.done()
    await queue.enqueue([run("r1")])
    assert [lease.id for lease in (await asyncio.wait_for(other, 10)).leases] == ["r1"]


@pytest.mark.skipif(
    bool(os.environ.get("JOBHOST_TEST_REDIS_URL")),
    reason="SCRIPT FLUSH runs only on the suite's own Redis, never a shared one",
)
async def test_wait_and_claim_reloads_the_claim_script_after_redis_forgets_it(
    queue: Queue, redis: Redis
) -> None:
    await queue.enqueue([run("r1")])
    await redis.script_flush()
    claimed = await queue.wait_and_claim("w1", ["a"], 10, 30_000, 1.0)
    assert [lease.id for lease in claimed.leases] == ["r1"]
