"""What a peer's no-op handler does besides nothing: count itself in Redis.

Completion detection for every peer: each handler INCRs `bench:done`; the one that brings it to
BENCH_PEER_TARGET (warm-up jobs + measured jobs, from the environment) also SETs `bench:end` to
the time it finished. The `stamp` handler (pickup latency) first RPUSHes its start time minus the
enqueue time carried in the payload. The peers' Redis keys live in their own Redis database
(BENCH_PEER_REDIS), flushed between measurements.
"""

from __future__ import annotations

import os
import time
from typing import Any

DONE, END, LAT = "bench:done", "bench:end", "bench:lat"
WARMUP = 20  #: noop jobs each measurement runs (and waits for) before measuring

_sync: Any = None
_async: Any = None


def redis_url() -> str:
    return os.environ["BENCH_PEER_REDIS"]


def target() -> int:
    return int(os.environ.get("BENCH_PEER_TARGET", "0"))


def concurrency() -> int:
    return int(os.environ.get("BENCH_PEER_CONCURRENCY", "10"))


def done_sync() -> None:
    global _sync
    if _sync is None:
        import redis

        _sync = redis.Redis.from_url(redis_url())
    if _sync.incr(DONE) == target():
        _sync.set(END, repr(time.time()))


def stamp_sync(t: float) -> None:
    started = time.time()
    global _sync
    if _sync is None:
        import redis

        _sync = redis.Redis.from_url(redis_url())
    _sync.rpush(LAT, repr(started - t))
    done_sync()


async def done_async() -> None:
    global _async
    if _async is None:
        from redis.asyncio import Redis

        _async = Redis.from_url(redis_url())
    if await _async.incr(DONE) == target():
        await _async.set(END, repr(time.time()))


async def stamp_async(t: float) -> None:
    started = time.time()
    global _async
    if _async is None:
        from redis.asyncio import Redis

        _async = Redis.from_url(redis_url())
    await _async.rpush(LAT, repr(started - t))
    await done_async()
