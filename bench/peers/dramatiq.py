"""Dramatiq with its Redis broker: one worker process with C worker threads."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import counter
from bench.peers.base import NOWHERE, Ctx, Peer, python_argv

broker = RedisBroker(url=os.environ.get("BENCH_PEER_REDIS", NOWHERE))
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(i: int) -> None:
    counter.done_sync()


@dramatiq.actor
def stamp(t: float) -> None:
    counter.stamp_sync(t)


class Producer:
    async def open(self, ctx: Ctx) -> None:
        pass

    async def single(self, i: int) -> None:
        noop.send(i)

    async def stamp(self, t: float) -> None:
        stamp.send(t)

    async def close(self) -> None:
        broker.close()


INFO = Peer(
    name="dramatiq",
    packages=("dramatiq",),
    settings="Redis broker, `dramatiq --processes 1 --threads C` per worker process, default"
    " middleware (retries, time limit...), no result backend; send (no bulk API)",
    worker_argv=lambda c, i, ctx: python_argv(
        "dramatiq", "bench.peers.dramatiq", "--processes", "1", "--threads", str(c)
    ),
    startup_s=2.0,
)
