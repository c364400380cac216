"""A peer's producer process: `python -m bench.peers.producer --peer NAME --mode ...`.

The line protocol of bench.common: says "ready"; "warm" enqueues the warm-up jobs ("warmed");
"go" runs the mode and says "done" with its timings; then waits for "exit".

bulk    --runs noop jobs with the peer's bulk API in --batch chunks (single calls without one)
single  --runs noop jobs, one enqueue call each
paced   --rate stamp jobs/s for --seconds, one call each; the payload carries the call's start
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import time

from bench.common import emit, next_command, stdin_reader
from bench.peers.base import Ctx
from bench.peers.counter import WARMUP


async def main(args: argparse.Namespace) -> None:
    # Peer modules read their broker's URL when imported (as their workers do).
    os.environ["BENCH_PEER_REDIS"] = args.redis_url
    os.environ["BENCH_PEER_DATABASE"] = args.database_url
    module = importlib.import_module(f"bench.peers.{args.peer}")
    producer = module.Producer()
    await producer.open(Ctx(args.redis_url, args.database_url))
    commands = await stdin_reader()
    emit("ready", pid=os.getpid())
    try:
        while (command := await next_command(commands)) not in ("", "exit"):
            if command == "warm":
                for i in range(WARMUP):
                    await producer.single(-1 - i)
                emit("warmed")
            elif command == "go":
                emit("done", **await run(producer, args, bool(module.INFO.bulk)))
    finally:
        await producer.close()


async def run(producer: object, args: argparse.Namespace, has_bulk: bool) -> dict[str, float]:
    p: object = producer
    t_first = time.time()
    if args.mode == "paced":
        total = int(args.rate * args.seconds)
        start, late = time.monotonic(), 0
        for i in range(total):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                late += 1
            await p.stamp(time.time())  # type: ignore[attr-defined]
        return {"t_first": t_first, "t_done": time.time(), "enqueued": total, "late": late}
    if args.mode == "bulk" and has_bulk:
        for s in range(0, args.runs, args.batch):
            await p.bulk(list(range(s, min(s + args.batch, args.runs))))  # type: ignore[attr-defined]
    else:
        for i in range(args.runs):
            await p.single(i)  # type: ignore[attr-defined]
    return {"t_first": t_first, "t_done": time.time(), "enqueued": args.runs}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers.producer")
    p.add_argument("--peer", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--database-url", default="")
    p.add_argument("--mode", choices=["bulk", "single", "paced"], default="bulk")
    p.add_argument("--runs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
