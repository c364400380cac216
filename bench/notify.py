"""Notification throughput: deliveries/s from the outbox to a local webhook receiver.

    python -m bench.notify [--deliveries N] [--concurrency C] [--notifiers K] [--per-endpoint E]

N runs are finished through the real finish statement (which writes one outbox row each for one
webhook subscription), then K notifiers (in this process, C sends in flight each) deliver them,
signed, to an aiohttp receiver on loopback that answers 200; deliveries/s = N / (time from the
notifiers' start until every delivery is recorded succeeded). Servers: embedded PostgreSQL and
Valkey at default durability, or JOBHOST_BENCH_DATABASE_URL / JOBHOST_BENCH_REDIS_URL (then a
database and a namespace of its own, dropped afterwards). The run path's cost of notifications
is measured by `python -m bench.drain --subscriptions 1` against the same without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from aiohttp import web

from bench.common import ROOT
from bench.drain import DB_ENV, REDIS_ENV, with_database
from host.client import Client, RunRequest
from host.config import Settings, load_plugins_config
from host.embedded import EmbeddedServers
from host.notify import subscriptions
from host.notify.channels import close_channels, load_channels
from host.notify.notifier import Notifier
from host.registry import load_registry
from host.services import Services, open_services
from host.states import Outcome, RunState
from host.store import runs as run_store


async def measure(database_url: str, redis_url: str, args: argparse.Namespace) -> float:
    hits = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal hits
        await request.read()
        hits += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = Settings(
        database_url=database_url, redis_url=redis_url, namespace=f"bench-{uuid.uuid4().hex[:8]}",
        plugins_file=ROOT / "plugins.toml", notify_allow_cidrs="127.0.0.1/32",
        notify_concurrency=args.concurrency, notify_poll_s=0.05,
        notify_per_endpoint=args.per_endpoint,
    )  # fmt: skip
    registry = load_registry(load_plugins_config(settings.plugins_file))
    try:
        async with open_services(settings, registry) as services:
            channels = load_channels(registry, settings)
            await subscriptions.create(services, channels, "default", {
                "name": "bench", "channel": "webhook", "events": ["run.succeeded"],
                "destination": {"url": f"http://127.0.0.1:{port}/hook"},
            })  # fmt: skip
            await _finish_runs(services, args.deliveries)
            stop = asyncio.Event()
            started = time.perf_counter()
            tasks = [
                asyncio.create_task(Notifier(services, channels).run(stop))
                for _ in range(args.notifiers)
            ]
            while True:  # until every delivery is recorded, not only received
                done = await services.pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE state = 'succeeded'"
                )
                if done >= args.deliveries:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*tasks)
            await close_channels(channels)
    finally:
        await runner.cleanup()
    rate = args.deliveries / elapsed
    print(f"{args.deliveries} deliveries in {elapsed:.2f}s: {rate:,.0f}/s ({args.notifiers} "
          f"notifier(s) x {args.concurrency} in flight; the receiver got {hits})")  # fmt: skip
    return rate


async def _finish_runs(services: Services, count: int) -> None:
    """`count` noop runs inserted and finished through the finish statement (the outbox write)."""
    client = Client(services)
    for start in range(0, count, 500):
        batch = min(500, count - start)
        enqueued = await client.enqueue_many([RunRequest("noop", {}) for _ in range(batch)])
        now = time.time()
        await run_store.finish_attempts(services.hot_pool, [
            run_store.Finish(id=e.id, attempt=1, state=RunState.SUCCEEDED,
                             outcome=Outcome.SUCCEEDED.value, worker="bench", started_at=now,
                             finished_at=now, result_json="null")
            for e in enqueued
        ])  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    db, redis = os.environ.get(DB_ENV), os.environ.get(REDIS_ENV)
    if db and redis:
        name = f"jobhost_bench_notify_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(db)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            await measure(with_database(db, name), redis, args)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        return
    with tempfile.TemporaryDirectory() as root:
        servers = EmbeddedServers(Path(root), pg_port=None, redis_port=None, write_state=False)
        with servers as urls:
            await measure(urls.database_url, urls.redis_url, args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__)
    p.add_argument("--deliveries", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=20, help="sends in flight per notifier")
    p.add_argument("--notifiers", type=int, default=1)
    p.add_argument(
        "--per-endpoint", type=int, default=5, help="sends per subscription (5; 0: unbounded)"
    )
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
