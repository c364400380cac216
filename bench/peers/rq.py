"""RQ: `rq worker-pool` with C worker processes of the SimpleWorker class (jobs run in the worker
process). The default Worker forks a work horse per job: here that took about 0.8 s per no-op job
(measured 2026-11-30 under load; about 11 jobs/s with C10), too slow for the benchmark's budget."""

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
    settings="`rq worker-pool -n C -w rq.worker.SimpleWorker` per worker process: C worker"
    " processes running jobs in-process (the default Worker's fork per job took about 0.8 s"
    " per job here), results kept (default 500 s), --quiet logging; bulk: Queue.enqueue_many"
    " (one pipeline per batch)",
    worker_argv=lambda c, i, ctx: python_argv(
        "rq",
        "worker-pool",
        "-n",
        str(c),
        "-w",
        "rq.worker.SimpleWorker",
        "-u",
        ctx.redis_url,
        "-q",
        "bench",
    ),
    bulk="enqueue_many",
    startup_s=3.0,
)
