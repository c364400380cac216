"""RQ: `rq worker-pool` with C worker processes, each forking a work horse per job (default)."""

from __future__ import annotations

from bench.peers import counter
from bench.peers.base import Ctx, Peer, python_argv


def noop(i: int) -> None:
    counter.done_sync()


def stamp(t: float) -> None:
    counter.stamp_sync(t)


class Producer:
    async def open(self, ctx: Ctx) -> None:
        from redis import Redis
        from rq import Queue

        self.queue = Queue("bench", connection=Redis.from_url(ctx.redis_url))

    async def single(self, i: int) -> None:
        self.queue.enqueue(noop, i)

    async def bulk(self, items: list[int]) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(noop, (i,)) for i in items])

    async def stamp(self, t: float) -> None:
        self.queue.enqueue(stamp, t)

    async def close(self) -> None:
        self.queue.connection.close()


INFO = Peer(
    name="rq",
    packages=("rq",),
    settings="`rq worker-pool -n C` per worker process: C worker processes, each forking a"
    " work horse per job (the default Worker), results kept (default 500 s); bulk:"
    " Queue.enqueue_many (one pipeline per batch)",
    worker_argv=lambda c, i, ctx: python_argv(
        "rq", "worker-pool", "-n", str(c), "-u", ctx.redis_url, "bench"
    ),
    bulk="enqueue_many",
    startup_s=3.0,
)
