"""Limits inside the claim script, against a real Redis: token buckets on the Redis clock,
concurrency counted across every way a run leaves flight, and no blocking of other types."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from host.limits import Limits
from host.queue.queue import Queue, QueuedRun


def runs(type: str, n: int, start: int = 0, max_attempts: int = 3) -> list[QueuedRun]:
    return [
        QueuedRun(f"{type}-{i:03}", type, 0, max_attempts, 0, b"{}")
        for i in range(start, start + n)
    ]


@pytest.fixture
def queue(redis: Redis, namespace: str) -> Queue:
    return Queue(redis, namespace)


async def claim(queue: Queue, types=("a",), n=100, lease_ms=30_000, worker="w1"):
    return await queue.claim(worker, list(types), n, lease_ms)


def test_limits_encode_for_the_claim_script() -> None:
    assert Limits().encode() is None
    assert Limits(rate="10/s", burst=5).encode() == "10.0|5||||"
    assert Limits(rate="120/min").encode() == "2.0|2||||"  # burst: one second's worth
    assert Limits(rate="1/hour").encode() == f"{1 / 3600!r}|1||||"
    assert Limits(concurrency=3).encode() == "||3|||"
    assert Limits(lane_rate="5/s", lane_concurrency=2).encode() == "|||5.0|5|2"


async def test_token_bucket_allows_the_burst_then_the_rate(queue: Queue, redis: Redis) -> None:
    await queue.set_limits({"a": Limits(rate="10/s", burst=3).encode()})
    await queue.enqueue(runs("a", 20))
    first = await claim(queue)
    assert len(first.leases) == 3  # the full bucket
    empty = await claim(queue)
    assert empty.leases == [] and 0 < empty.next_due_ms <= 100  # next token due in <= 100 ms
    assert int(await redis.hget(queue.keys.throttled, "a")) == 1
    await asyncio.sleep(0.25)
    assert len((await claim(queue)).leases) == 2  # 0.25 s at 10/s refilled two whole tokens


async def test_a_throttled_type_does_not_block_the_others(queue: Queue) -> None:
    await queue.set_limits({"a": Limits(rate="1/s", burst=1).encode()})
    await queue.enqueue(runs("a", 5) + runs("b", 5))
    got = await claim(queue, ("a", "b"))
    assert sorted(x.id for x in got.leases) == ["a-000"] + [f"b-{i:03}" for i in range(5)]
    got = await claim(queue, ("a", "b"))
    assert got.leases == [] and 0 < got.next_due_ms <= 1000


async def test_concurrency_limit_counts_every_exit_from_flight(queue: Queue, redis: Redis) -> None:
    await queue.set_limits({"a": Limits(concurrency=2).encode()})
    await queue.enqueue(runs("a", 10, max_attempts=1))

    async def active() -> int:
        return int(await redis.hget(queue.keys.active, "a") or 0)

    first = await claim(queue)
    assert len(first.leases) == 2 and await active() == 2
    assert (await claim(queue)).leases == []
    one, two = first.leases
    await redis.delete(queue.keys.wake)
    await queue.ack([(one.id, one.token)])
    assert await active() == 1
    assert await redis.llen(queue.keys.wake) == 1  # a slot opened: an idle worker is woken
    three = (await claim(queue)).leases[0]
    await queue.retry([(two.id, two.token, 60_000)])
    four = (await claim(queue)).leases[0]
    await queue.release([(three.id, three.token)])
    assert await active() == 1
    five = (await claim(queue, lease_ms=50)).leases[0]
    assert await active() == 2 and five.id == three.id  # released runs go first
    await asyncio.sleep(0.1)
    await queue.reap()  # five's lease expired: requeued (or dying), no longer in flight
    assert await active() == 1
    await queue.ack([(four.id, four.token)])
    assert await active() == 0


async def test_limits_change_at_once_without_new_scripts(queue: Queue) -> None:
    await queue.enqueue(runs("a", 10))
    await queue.set_limits({"a": Limits(concurrency=1).encode()})
    assert len((await claim(queue)).leases) == 1
    await queue.set_limits({"a": Limits(concurrency=4).encode()})
    assert len((await claim(queue)).leases) == 3
    await queue.set_limits({"a": None})
    assert len((await claim(queue)).leases) == 6


async def test_limit_status_reports_tokens_flight_and_throttling(queue: Queue) -> None:
    await queue.set_limits({"a": Limits(rate="5/s", burst=2, concurrency=10).encode()})
    await queue.enqueue(runs("a", 5))
    await claim(queue)
    await claim(queue)
    status = await queue.limit_status(["a", "b"])
    assert status["a"]["rate_per_s"] == 5 and status["a"]["burst"] == 2
    assert status["a"]["concurrency"] == 10 and status["a"]["in_flight"] == 2
    assert 0 <= status["a"]["tokens"] < 1 and status["a"]["throttled_claims"] == 1
    assert status["b"] == {
        "rate_per_s": None, "burst": None, "concurrency": None, "tokens": None,
        "lane_rate_per_s": None, "lane_burst": None, "lane_concurrency": None,
        "in_flight": 0, "throttled_claims": 0,
    }  # fmt: skip


# -- lanes: fairness and keyed limits -----------------------------------------------------------


def lane_runs(lane: str, n: int, type: str = "a") -> list[QueuedRun]:
    # Zero-padded: within one millisecond, FIFO falls back to run-id order.
    return [QueuedRun(f"{lane}{i:03}", type, 0, 3, 0, b"{}", lane=lane) for i in range(1, n + 1)]


async def test_lanes_take_turns_so_a_big_backlog_cannot_starve_a_small_one(
    queue: Queue, redis: Redis
) -> None:
    await queue.enqueue(lane_runs("A", 100))
    await queue.enqueue(lane_runs("B", 3))  # enqueued after all of A's
    got = [x.id for x in (await claim(queue, n=4)).leases]
    assert got == ["A001", "B001", "A002", "B002"]
    got = [x.id for x in (await claim(queue, n=4)).leases]
    assert got == ["A003", "B003", "A004", "A005"]  # B ran dry: A fills the rest of the claim
    assert await redis.zrange(queue.keys.lanes("a"), 0, -1) == [b"A"]  # B left the ring


async def test_the_ring_rotates_across_claims(queue: Queue) -> None:
    for lane in "PQRST":
        await queue.enqueue(lane_runs(lane, 2))
    first = [x.id for x in (await claim(queue, n=2)).leases]
    second = [x.id for x in (await claim(queue, n=2)).leases]
    third = [x.id for x in (await claim(queue, n=2)).leases]
    assert (first, second, third) == (["P001", "Q001"], ["R001", "S001"], ["T001", "P002"])


async def test_lane_rate_limits_each_lane_separately(queue: Queue) -> None:
    await queue.set_limits({"a": Limits(lane_rate="2/s", lane_burst=1).encode()})
    await queue.enqueue(lane_runs("X", 3) + lane_runs("Y", 3))
    assert sorted(x.id for x in (await claim(queue)).leases) == ["X001", "Y001"]
    empty = await claim(queue)
    assert empty.leases == [] and 0 < empty.next_due_ms <= 500
    await asyncio.sleep(0.55)
    assert sorted(x.id for x in (await claim(queue)).leases) == ["X002", "Y002"]


async def test_lane_concurrency_frees_a_slot_per_lane(queue: Queue, redis: Redis) -> None:
    await queue.set_limits({"a": Limits(lane_concurrency=1).encode()})
    await queue.enqueue(lane_runs("X", 3) + lane_runs("Y", 3))
    first = {x.id: x for x in (await claim(queue)).leases}
    assert sorted(first) == ["X001", "Y001"]
    assert (await claim(queue)).leases == []
    await queue.ack([(first["X001"].id, first["X001"].token)])
    assert [x.id for x in (await claim(queue)).leases] == ["X002"]  # Y still holds its slot
    assert int(await redis.hget(queue.keys.active, "a#Y")) == 1
    await queue.retry([(first["Y001"].id, first["Y001"].token, 60_000)])
    assert await redis.hget(queue.keys.active, "a#Y") is None  # slot freed, field cleaned


async def test_priority_still_orders_runs_within_a_lane(queue: Queue) -> None:
    await queue.enqueue(
        [QueuedRun("low", "a", 0, 3, 0, b"{}", lane="X"),
         QueuedRun("high", "a", 5, 3, 0, b"{}", lane="X")]
    )  # fmt: skip
    assert [x.id for x in (await claim(queue)).leases] == ["high", "low"]


async def test_a_batch_ack_frees_every_slot_of_every_lane_it_held(
    queue: Queue, redis: Redis
) -> None:
    # Counted per distinct meta in the batch: the counts must still add up per type and lane.
    await queue.set_limits({"a": Limits(lane_concurrency=10).encode()})
    mixed = lane_runs("X", 4) + lane_runs("Y", 3)
    mixed += [QueuedRun("hi", "a", 5, 3, 0, b"{}", lane="X")]
    await queue.enqueue(mixed)
    leases = {x.id: x for x in (await claim(queue)).leases}
    assert len(leases) == 8 and int(await redis.hget(queue.keys.active, "a")) == 8
    done = [(x.id, x.token) for x in leases.values() if x.id != "Y003"]
    assert await queue.ack([*done, ("Y003", "w0:1")]) == ["Y003"]  # a stale token is fenced
    assert int(await redis.hget(queue.keys.active, "a")) == 1
    assert await redis.hget(queue.keys.active, "a#X") is None
    assert int(await redis.hget(queue.keys.active, "a#Y")) == 1
