"""Celery with a Redis broker, the default prefork pool (C child processes per worker)."""

from __future__ import annotations

import os

from celery import Celery

from bench.peers import counter
from bench.peers.base import NOWHERE, Ctx, Peer, python_argv

app = Celery("bench", broker=os.environ.get("BENCH_PEER_REDIS", NOWHERE))
app.conf.task_ignore_result = True  # no result backend: completion is counted in Redis
app.conf.worker_hijack_root_logger = False


@app.task(name="noop")
def noop(i: int) -> None:
    counter.done_sync()


@app.task(name="stamp")
def stamp(t: float) -> None:
    counter.stamp_sync(t)


class Producer:
    async def open(self, ctx: Ctx) -> None:
        pass

    async def single(self, i: int) -> None:
        noop.delay(i)

    async def stamp(self, t: float) -> None:
        stamp.delay(t)

    async def close(self) -> None:
        app.close()


INFO = Peer(
    name="celery",
    packages=("celery", "kombu"),
    settings="Redis broker, prefork pool (default) with C child processes per worker,"
    " prefetch multiplier 4 (default), results ignored; delay (no bulk API)",
    worker_argv=lambda c, i, ctx: python_argv(
        "celery",
        "-A",
        "bench.peers.celery",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(c),
        "--loglevel",
        "WARNING",
        "-n",
        f"w{i}@%h",
    ),
    startup_s=3.0,
)
