"""arq: asyncio, one worker process runs max_jobs jobs at once; results kept (default 1 h)."""

from __future__ import annotations

from typing import Any

from bench.peers import counter
from bench.peers.base import Ctx, Peer, python_argv

POLL_DELAY = 0.01  # arq's default is 0.5 s (about 200 jobs/s, pickup p50 about 300 ms)


async def noop(ctx: dict[str, Any], i: int) -> None:
    await counter.done_async()


async def stamp(ctx: dict[str, Any], t: float) -> None:
    await counter.stamp_async(t)


def _settings() -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(counter.redis_url())


class WorkerSettings:
    """What `arq bench.peers.arq.WorkerSettings` runs (read from the environment)."""

    functions = [noop, stamp]
    max_jobs = counter.concurrency()
    poll_delay = POLL_DELAY
    try:
        redis_settings = _settings()
    except KeyError:  # imported by the orchestrator, which has no BENCH_PEER_REDIS
        redis_settings = None


class Producer:
    async def open(self, ctx: Ctx) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.pool = await create_pool(RedisSettings.from_dsn(ctx.redis_url))

    async def single(self, i: int) -> None:
        await self.pool.enqueue_job("noop", i)

    async def stamp(self, t: float) -> None:
        await self.pool.enqueue_job("stamp", t)

    async def close(self) -> None:
        await self.pool.aclose()


INFO = Peer(
    name="arq",
    packages=("arq",),
    settings=f"asyncio, max_jobs = C, poll_delay {POLL_DELAY} s (default 0.5 s), results kept"
    " (default), enqueue_job (no bulk API)",
    worker_argv=lambda c, i, ctx: python_argv("arq", "bench.peers.arq.WorkerSettings"),
)
