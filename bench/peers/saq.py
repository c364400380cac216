"""SAQ: asyncio, one worker process runs `concurrency` jobs at once."""

from __future__ import annotations

from typing import Any

from bench.peers import counter
from bench.peers.base import Ctx, Peer, python_argv


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    await counter.done_async()


async def stamp(ctx: dict[str, Any], *, t: float) -> None:
    await counter.stamp_async(t)


def _settings() -> dict[str, Any]:
    from saq import Queue

    return {
        "queue": Queue.from_url(counter.redis_url()),
        "functions": [noop, stamp],
        "concurrency": counter.concurrency(),
    }


try:
    settings = _settings()  # what `saq bench.peers.saq.settings` runs
except KeyError:  # imported by the orchestrator, which has no BENCH_PEER_REDIS
    settings = {}


class Producer:
    async def open(self, ctx: Ctx) -> None:
        from saq import Queue

        self.queue = Queue.from_url(ctx.redis_url)
        await self.queue.connect()

    async def single(self, i: int) -> None:
        await self.queue.enqueue("noop", i=i)

    async def stamp(self, t: float) -> None:
        await self.queue.enqueue("stamp", t=t)

    async def close(self) -> None:
        await self.queue.disconnect()


INFO = Peer(
    name="saq",
    packages=("saq",),
    settings="asyncio, concurrency = C per worker process, defaults otherwise; enqueue"
    " (no bulk API)",
    worker_argv=lambda c, i, ctx: python_argv("saq", "bench.peers.saq.settings"),
)
