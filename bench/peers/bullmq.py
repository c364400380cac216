"""BullMQ (Node): a Worker with `concurrency` C per process; bulk enqueue with Queue.addBulk.

Both sides are Node (bench/bullmq/bench.js); this module only says how to run them.
"""

from __future__ import annotations

import shutil

from bench.peers.base import BULLMQ_DIR, Ctx, Peer

NODE = shutil.which("node") or "node"
SCRIPT = str(BULLMQ_DIR / "bench.js")


class Producer:  # never used: BullMQ's producer is bench.js (see INFO.producer_argv)
    async def open(self, ctx: Ctx) -> None:
        raise NotImplementedError


INFO = Peer(
    name="bullmq",
    packages=("bullmq", "ioredis"),
    settings="Node 20, one Worker per process with concurrency C, default job options"
    " (completed jobs kept); bulk: Queue.addBulk",
    worker_argv=lambda c, i, ctx: [NODE, SCRIPT, "worker", ctx.redis_url, str(c)],
    bulk="addBulk",
    producer_argv=[NODE, SCRIPT, "producer"],
)
