"""taskiq with taskiq-redis's RedisStreamBroker (Redis streams, acknowledged consumer groups)."""

from __future__ import annotations

import os

from taskiq_redis import RedisStreamBroker

from bench.peers import counter
from bench.peers.base import NOWHERE, Ctx, Peer, python_argv

broker = RedisStreamBroker(url=os.environ.get("BENCH_PEER_REDIS", NOWHERE))


@broker.task(task_name="noop")
async def noop(i: int) -> None:
    await counter.done_async()


@broker.task(task_name="stamp")
async def stamp(t: float) -> None:
    await counter.stamp_async(t)


class Producer:
    async def open(self, ctx: Ctx) -> None:
        await broker.startup()

    async def single(self, i: int) -> None:
        await noop.kiq(i)

    async def stamp(self, t: float) -> None:
        await stamp.kiq(t)

    async def close(self) -> None:
        await broker.shutdown()


INFO = Peer(
    name="taskiq",
    packages=("taskiq", "taskiq-redis"),
    settings="RedisStreamBroker, `taskiq worker --workers 1 --max-async-tasks C` per worker"
    " process, no result backend; kiq (no bulk API)",
    worker_argv=lambda c, i, ctx: python_argv(
        "taskiq",
        "worker",
        "bench.peers.taskiq:broker",
        "--workers",
        "1",
        "--max-async-tasks",
        str(c),
    ),
    startup_s=2.0,
)
