"""Procrastinate: PostgreSQL as the queue (jobs table, LISTEN/NOTIFY), asyncio workers."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from bench.peers import counter
from bench.peers.base import Ctx, Peer, python_argv

app = App(
    connector=PsycopgConnector(
        conninfo=os.environ.get("BENCH_PEER_DATABASE", "postgresql://127.0.0.1:1/none")
    )
)


@app.task(name="noop")
async def noop(i: int) -> None:
    await counter.done_async()


@app.task(name="stamp")
async def stamp(t: float) -> None:
    await counter.stamp_async(t)


class Producer:
    async def open(self, ctx: Ctx) -> None:
        await app.open_async()

    async def single(self, i: int) -> None:
        await noop.defer_async(i=i)

    async def bulk(self, items: list[int]) -> None:
        await noop.batch_defer_async(*({"i": i} for i in items))

    async def stamp(self, t: float) -> None:
        await stamp.defer_async(t=t)

    async def close(self) -> None:
        await app.close_async()


INFO = Peer(
    name="procrastinate",
    packages=("procrastinate", "psycopg"),
    settings="PsycopgConnector, `procrastinate worker --concurrency C` per worker process,"
    " LISTEN/NOTIFY on (default), jobs kept in PostgreSQL (default); bulk: batch_defer_async",
    worker_argv=lambda c, i, ctx: python_argv(
        "procrastinate",
        "--app",
        "bench.peers.procrastinate.app",
        "worker",
        "--concurrency",
        str(c),
    ),
    bulk="batch_defer_async",
    startup_s=2.0,
    needs_postgres=True,
)
