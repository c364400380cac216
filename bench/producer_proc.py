"""The benchmark's producer process: `python -m bench.producer_proc --mode bulk|paced ...`.

Opens the services and says "ready"; on "go" enqueues through host.client.Client, then says
"done" with its timings and waits for "exit" (or stdin closing).

bulk   --runs N noop runs with enqueue_many, --batch at a time, one batch after the other.
single --runs N noop runs, one Client.enqueue call each.
paced  --rate runs/s for --seconds, one Client.enqueue call each, of the `bench.stamp` type;
       the payload carries `t`, the time the enqueue call started. --warmup runs first (marked
       `"w": 1` in the payload, left out of the latency figures) warm the connections.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time

from bench.common import bench_registry, bench_settings, emit, next_command, stdin_reader
from bench.plugin import STAMP
from host.client import Client, RunRequest
from host.services import open_services


async def bulk(client: Client, runs: int, batch: int, job_type: str) -> dict[str, float]:
    t_first = time.time()
    sent = 0
    while sent < runs:
        n = min(batch, runs - sent)
        await client.enqueue_many([RunRequest(job_type, {"i": sent + i}) for i in range(n)])
        sent += n
    return {"t_first": t_first, "t_done": time.time(), "enqueued": sent}


async def single(client: Client, runs: int, job_type: str) -> dict[str, float]:
    t_first = time.time()
    for i in range(runs):
        await client.enqueue(job_type, {"i": i})
    return {"t_first": t_first, "t_done": time.time(), "enqueued": runs}


async def paced(client: Client, rate: float, seconds: float, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        await client.enqueue(STAMP, {"t": time.time(), "w": 1})
        await asyncio.sleep(1 / rate)
    total = int(rate * seconds)
    t_first = time.time()
    start = time.monotonic()
    late = 0
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        await client.enqueue(STAMP, {"t": time.time()})
    return {"t_first": t_first, "t_done": time.time(), "enqueued": total, "late": late}


async def main(args: argparse.Namespace) -> None:
    settings = bench_settings(args.database_url, args.redis_url, args.namespace)
    commands = await stdin_reader()
    async with open_services(settings, bench_registry(), run_migrations=False) as services:
        client = Client(services)
        emit("ready", pid=os.getpid())
        if await next_command(commands) != "go":
            return
        profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall
        if profiler:
            profiler.enable()
        cpu0 = time.process_time()
        if args.mode == "bulk":
            done = await bulk(client, args.runs, args.batch, args.type)
        elif args.mode == "single":
            done = await single(client, args.runs, args.type)
        else:
            done = await paced(client, args.rate, args.seconds, args.warmup)
        cpu = time.process_time() - cpu0
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        emit("done", cpu_s=cpu, **done)
        await next_command(commands)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.producer_proc")
    p.add_argument("--database-url", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--mode", choices=["bulk", "single", "paced"], default="bulk")
    p.add_argument("--type", default="noop", help="job type of bulk runs")
    p.add_argument("--runs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--profile", default="", help="write cProfile stats of the enqueues here")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
