"""claim.lua's one-type, one-lane fast path against its general path: the same scenario runs on
two copies of one namespace's state, one claim script with the fast path and one without, on a
fixed Redis clock; replies and every key of both namespaces must end identical."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from host.queue.keys import Keys
from host.queue.queue import Queue, QueuedRun
from host.queue.scripts import script_source

FAST_ON = "local ONE_LANE_FAST_PATH = true"
CLOCK = "redis.call('TIME')"
FIXED = "{'1700000000', '250000'}"  # the same Redis clock for both paths


def run(id: str, type: str = "a", priority: int = 0, delay_ms: int = 0, lane: str = "default"):
    return QueuedRun(id, type, priority, 3, delay_ms, b'{"id":"%s"}' % id.encode(), lane=lane)


def claim_variant(redis: Redis, fast: bool) -> AsyncScript:
    source = script_source("claim")
    assert FAST_ON in source and CLOCK in source
    if not fast:
        source = source.replace(FAST_ON, "local ONE_LANE_FAST_PATH = false")
    return redis.register_script(source.replace(CLOCK, FIXED))


async def snapshot(redis: Redis, keys: Keys) -> dict[str, Any]:
    """Every key of a namespace (named without its prefix) with its full contents."""
    out: dict[str, Any] = {}
    async for raw in redis.scan_iter(
        match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    ):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        name = key[len(keys.prefix) :]
        if kind == "hash":
            out[name] = await redis.hgetall(key)
        elif kind == "zset":
            out[name] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[name] = await redis.lrange(key, 0, -1)
        elif kind == "set":
            out[name] = sorted(await redis.smembers(key))
        else:
            out[name] = await redis.get(key)
    return out


class Twins:
    """Two namespaces holding the same state: `fast` claims with the fast path, `general`
    without; `claim` runs one claim on both and checks replies and state match."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.fast = Queue(redis, f"t-{uuid.uuid4().hex[:12]}")
        self.general = Queue(redis, f"t-{uuid.uuid4().hex[:12]}")
        self.scripts = {True: claim_variant(redis, True), False: claim_variant(redis, False)}

    async def copy_state(self) -> None:
        """Make `general` an exact copy of `fast` (DUMP and RESTORE of every key)."""
        async for key in self.redis.scan_iter(match=self._pattern(self.general)):
            await self.redis.delete(key)
        async for raw in self.redis.scan_iter(match=self._pattern(self.fast)):
            key = raw.decode()
            pttl = max(0, await self.redis.pttl(key))
            dumped = await self.redis.dump(key)
            target = self.general.keys.prefix + key[len(self.fast.keys.prefix) :]
            await self.redis.restore(target, pttl, dumped)

    async def claim(self, types: list[str], n: int, worker: str = "w1") -> list[Any]:
        replies = []
        for fast, queue in ((True, self.fast), (False, self.general)):
            keys, args = queue._claim_call(worker, types, n, 30_000, 1000)
            replies.append(await self.scripts[fast](keys=keys, args=args))
        assert replies[0] == replies[1]
        assert await snapshot(self.redis, self.fast.keys) == await snapshot(
            self.redis, self.general.keys
        )
        return list(replies[0])

    @staticmethod
    def _pattern(queue: Queue) -> str:
        return queue.keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"

    async def delete(self) -> None:
        await self.fast.delete_namespace()
        await self.general.delete_namespace()


@pytest.fixture
async def twins(redis: Redis) -> AsyncIterator[Twins]:
    pair = Twins(redis)
    yield pair
    await pair.delete()


def claimed_ids(reply: list[Any]) -> list[str]:
    return [x.decode() for x in reply[2::3]]


async def test_fast_path_takes_the_lane_head_like_the_general_path(twins: Twins) -> None:
    await twins.fast.enqueue([run(f"r{i:02}", priority=i % 3) for i in range(12)])
    await twins.copy_state()
    first = await twins.claim(["a"], 5)  # part of the lane: the lane stays on the ring
    assert len(claimed_ids(first)) == 5
    assert await twins.redis.llen(twins.fast.keys.wake) == 1  # a full batch passes it on
    await twins.claim(["a"], 7)  # exactly the rest: the lane leaves the ring
    assert not await twins.redis.exists(twins.fast.keys.lanes("a"))
    empty = await twins.claim(["a"], 5)  # nothing left, nothing delayed
    assert empty[1] == -1 and len(empty) == 2


async def test_fast_path_more_asked_than_waiting_and_next_due(twins: Twins) -> None:
    await twins.fast.enqueue([run("r1"), run("r2"), run("later", delay_ms=60_000)])
    await twins.copy_state()
    got = await twins.claim(["a"], 10)
    assert claimed_ids(got) == ["r1", "r2"]
    await twins.claim(["a"], 10)  # empty: reports when the delayed run is due


async def test_fast_path_counts_attempts_and_skips_runs_without_an_envelope(
    twins: Twins, redis: Redis
) -> None:
    restored = QueuedRun("r0", "a", 0, 5, 0, b"{}", attempts_done=2)
    await twins.fast.enqueue([restored, run("r1"), run("r2"), run("r3")])
    await redis.hdel(twins.fast.keys.env, "r2")  # e.g. forgotten while its id still waited
    await redis.hset(twins.fast.keys.active, "a", 4)
    await redis.hset(twins.fast.keys.throttled, "a", 2)
    await redis.hset(twins.fast.keys.ring, "a", 7)
    await twins.copy_state()
    got = await twins.claim(["a"], 4, worker="w9")
    assert claimed_ids(got) == ["r0", "r1", "r3"] and got[3] == 3


async def test_fast_path_promotes_due_runs_first(twins: Twins, redis: Redis) -> None:
    await twins.fast.enqueue([run("d1", delay_ms=60_000), run("r1")])
    await redis.zadd(twins.fast.keys.delayed, {"d1": 0})  # due long ago
    await twins.copy_state()
    # d1 is ready at the fixed clock, before r1 (enqueued at the real one).
    assert claimed_ids(await twins.claim(["a"], 10)) == ["d1", "r1"]


async def test_fast_path_lane_emptied_elsewhere_leaves_the_ring(twins: Twins, redis: Redis) -> None:
    await twins.fast.enqueue([run("r1")])
    await redis.delete(twins.fast.keys.ready("a"))
    await twins.copy_state()
    got = await twins.claim(["a"], 3)
    assert len(got) == 2 and not await redis.exists(twins.fast.keys.lanes("a"))


async def test_fast_path_leaves_an_existing_wake_token_alone(twins: Twins, redis: Redis) -> None:
    await twins.fast.enqueue([run(f"r{i}") for i in range(4)])
    assert await redis.llen(twins.fast.keys.wake) == 1
    await twins.copy_state()
    await twins.claim(["a"], 2)
    assert await redis.llen(twins.fast.keys.wake) == 1


@pytest.mark.parametrize(
    "case",
    ["two types", "limited type", "two lanes", "lane limit"],
)
async def test_cases_outside_the_fast_path_match_too(twins: Twins, case: str) -> None:
    """Where the fast path does not apply, both scripts run the general path alike."""
    runs = [run(f"r{i:02}", priority=i % 2) for i in range(8)]
    types = ["a"]
    if case == "two types":
        runs += [run(f"b{i}", type="b", priority=1) for i in range(3)]
        types = ["a", "b"]
    elif case == "two lanes" or case == "lane limit":
        runs += [run(f"t{i}", lane="tenant") for i in range(3)]
    await twins.fast.enqueue(runs)
    if case == "limited type":
        await twins.fast.set_limits({"a": "100|200|"})  # limits stored, none reached
    elif case == "lane limit":
        await twins.fast.set_limits({"a": "|||||1"})
    await twins.copy_state()
    for n in (3, 5, 10):
        await twins.claim(types, n)


async def test_the_fast_path_is_taken_only_where_it_applies(redis: Redis, namespace: str) -> None:
    queue = Queue(redis, namespace)
    source = script_source("claim")
    assert "if out then return out end" in source
    source = source.replace("if out then return out end", "if out then error('fast') end")
    probe = redis.register_script(source)
    await queue.enqueue(
        [run("r1"), run("b1", type="b"), run("c1", type="c"), run("c2", "c", lane="x")]
    )
    await queue.set_limits({"b": "||5|||"})

    async def takes_fast_path(types: list[str]) -> bool:
        keys, args = queue._claim_call("w1", types, 1, 1000, 1000)
        try:
            await probe(keys=keys, args=args)
        except ResponseError as exc:
            assert "fast" in str(exc)
            return True
        return False

    assert await takes_fast_path(["a"])
    # (a general-path probe claims a run: two lanes first, while both hold one)
    assert not await takes_fast_path(["c"])  # two lanes
    assert not await takes_fast_path(["a", "c"])  # two types
    assert not await takes_fast_path(["b"])  # limits set


@pytest.mark.parametrize("seed", range(6))
async def test_random_scenarios_match(twins: Twins, redis: Redis, seed: int) -> None:
    """Seeded mixes of enqueues (delayed runs, restored attempts, a second lane or type now and
    then), claims of every size and batch acks: both paths stay identical at every step."""
    rnd = random.Random(seed)
    held: dict[str, str] = {}
    count = 0
    for _ in range(30):
        op = rnd.random()
        if op < 0.3:
            batch = []
            for _ in range(rnd.randint(1, 30)):
                count += 1
                lane = "default" if rnd.random() < 0.9 else "other"
                type_ = "a" if rnd.random() < 0.9 else "b"
                restored = rnd.choice([0, 0, 1])
                delay = rnd.choice([0, 0, 0, 60_000])
                batch.append(
                    QueuedRun(
                        f"r{count:04}", type_, rnd.randint(0, 2), 3, delay, b"{}",
                        attempts_done=restored, lane=lane,
                    )
                )  # fmt: skip
            await twins.fast.enqueue(batch)
            if rnd.random() < 0.2:  # a delayed run falls due
                await redis.zadd(twins.fast.keys.delayed, {f"r{count:04}": 0}, xx=True)
            await twins.copy_state()
        elif op < 0.8:
            types = ["a"] if rnd.random() < 0.8 else ["a", "b"]
            reply = await twins.claim(types, rnd.choice([1, 3, 10, 200]))
            for i in range(2, len(reply), 3):
                held[reply[i].decode()] = f"w1:{reply[i + 1]}"
        else:
            done = rnd.sample(sorted(held.items()), min(len(held), rnd.randint(0, 20)))
            await twins.fast.ack(done)
            await twins.general.ack(done)
            for run_id, _ in done:
                del held[run_id]
