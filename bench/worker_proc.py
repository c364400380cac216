"""One benchmark worker process: `python -m bench.worker_proc --database-url ... --redis-url ...`.

Opens the services, builds a host Worker and says "ready"; on "go" runs it (says "running" with
the start time); on "stop" (or stdin closing) stops it gracefully and says "stopped" with its
stats, the time its last finish statement returned (the last PostgreSQL commit of a result),
how many claims it made and its peak RSS.

The only instrumentation is a wrapper around `host.store.runs.finish_attempts` (one time.time()
per flush) and around this worker's `Queue.claim` (a counter): host code is unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time
from typing import Any

from bench.common import (
    bench_registry,
    bench_settings,
    emit,
    next_command,
    peak_rss_mb,
    stdin_reader,
)
from host.services import open_services
from host.store import runs as run_store
from host.worker.worker import Worker


class _Clock:
    last_commit = 0.0
    finish_calls = 0
    claims = 0
    claimed = 0


def _instrument(clock: _Clock, queue: Any) -> None:
    finish = run_store.finish_attempts

    async def timed_finish(conn: Any, finishes: Any) -> set[str]:
        out = await finish(conn, finishes)
        clock.last_commit = time.time()
        clock.finish_calls += 1
        return out

    run_store.finish_attempts = timed_finish
    claim = queue.claim

    async def counted_claim(*args: Any, **kwargs: Any) -> Any:
        result = await claim(*args, **kwargs)
        clock.claims += 1
        clock.claimed += len(result.leases)
        return result

    queue.claim = counted_claim


async def main(args: argparse.Namespace) -> None:
    settings = bench_settings(args.database_url, args.redis_url, args.namespace)
    registry = bench_registry()
    commands = await stdin_reader()
    clock = _Clock()
    async with open_services(settings, registry, run_migrations=False) as services:
        _instrument(clock, services.queue)
        worker = Worker(
            services,
            concurrency=args.concurrency,
            claim_batch=args.claim_batch,
            prefetch=args.prefetch,
            types=args.types.split(",") if args.types else None,
        )
        emit("ready", pid=os.getpid(), types=worker.types, capacity=worker.capacity)
        if await next_command(commands) != "go":
            return
        profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall
        stop = asyncio.Event()
        started = time.time()
        if profiler:
            profiler.enable()
        task = asyncio.create_task(worker.run(stop))
        emit("running", t=started)
        command = asyncio.create_task(next_command(commands))  # "stop", or "" at EOF
        await asyncio.wait([command, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # the worker crashed: say so (the orchestrator shows stderr)
            command.cancel()
            task.result()
        stop.set()
        await task
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        emit(
            "stopped",
            t_start=started,
            last_commit=clock.last_commit,
            finish_calls=clock.finish_calls,
            claims=clock.claims,
            claimed=clock.claimed,
            stats=worker.stats.__dict__,
            peak_rss_mb=peak_rss_mb(),
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.worker_proc")
    p.add_argument("--database-url", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--claim-batch", type=int, default=200)
    p.add_argument("--prefetch", type=int, default=None)
    p.add_argument("--types", default="", help="comma-separated; empty: every registered type")
    p.add_argument("--profile", default="", help="write cProfile stats of the run to this file")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
