"""lua/hook_bucket.lua against a real Redis: a trigger's token bucket allows the burst, then the
rate, on the Redis clock, shared by every client (API process) and separate per trigger."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from host.services import Services
from webhooks.inbound.ratelimit import HookBuckets


async def test_burst_then_rate_shared_across_clients(services: Services, namespace: str) -> None:
    one = HookBuckets(services.redis, namespace)
    other_client = Redis.from_url(services.settings.redis_url or "")
    two = HookBuckets(other_client, namespace)  # a second API process: its own connection
    try:
        waits = [await (one if i % 2 else two).take("trig-a", 10.0, 3) for i in range(5)]
        assert waits[:3] == [0.0, 0.0, 0.0]  # the burst, taken from both clients
        assert all(0 < w <= 0.1 for w in waits[3:])  # then one token per 100 ms
        assert await one.take("trig-b", 10.0, 3) == 0.0  # another trigger: its own bucket
        await asyncio.sleep(0.25)
        assert [await two.take("trig-a", 10.0, 3) for _ in range(3)][:2] == [0.0, 0.0]
    finally:
        await other_client.aclose()


async def test_wait_reports_when_the_next_token_is_due(services: Services, namespace: str) -> None:
    buckets = HookBuckets(services.redis, namespace)
    assert await buckets.take("slow", 0.5, None) == 0.0  # burst defaults to max(1, rate)
    wait = await buckets.take("slow", 0.5, None)
    assert 1.5 < wait <= 2.0  # 0.5/s: the next whole token about 2 s after the last
    state = await services.redis.hget(buckets.key, "slow")
    tokens, updated_ms = state.decode().split("|")
    assert float(tokens) < 1 and int(updated_ms) > 0  # "tokens|updated_ms", as claim.lua keeps
