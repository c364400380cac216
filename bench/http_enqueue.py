"""Enqueue over HTTP: runs/s and latency of POST /api/v1/runs (one run per call), of
POST /api/v1/runs/batch, and of signed deliveries to an inbound trigger (POST /hooks/{hook},
GitHub scheme, a distinct delivery id each), against `jobhost api` in its own process.

    python -m bench.http_enqueue [--runs 5000] [--concurrency 16] [--batch 100]

Servers: the embedded ones in a temporary folder (default durability), or
JOBHOST_BENCH_DATABASE_URL and JOBHOST_BENCH_REDIS_URL (a database and namespace of its own are
created there and dropped afterwards). No worker runs: this measures the API's enqueue path
(auth, validation, the PostgreSQL insert and the Redis enqueue) only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench.common import PLUGINS_FILE, ROOT
from host.embedded import EmbeddedServers, free_port
from host.services import apply_migrations
from host.store import apikeys

DB_ENV, REDIS_ENV = "JOBHOST_BENCH_DATABASE_URL", "JOBHOST_BENCH_REDIS_URL"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    session: aiohttp.ClientSession, url: str, requests: list[dict[str, Any]], concurrency: int
) -> tuple[float, list[float]]:
    """POST every request (`session.post` keyword arguments: json=, or data= and headers=)
    with `concurrency` calls in flight; each must be accepted as new (202, not a replay).
    (elapsed s, per-call latencies)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []

    async def client() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, **request) as r:
                answer = await r.json()
                assert r.status == 202 and answer.get("created", True), answer
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def measure(args: argparse.Namespace, base: str, key: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    run = {"type": "noop", "payload": {}}
    async with aiohttp.ClientSession(headers=headers) as session:
        await drive(session, f"{base}/api/v1/runs", [{"json": run}] * 200, args.concurrency)
        single_s, single = await drive(
            session, f"{base}/api/v1/runs", [{"json": run}] * args.runs, args.concurrency
        )
        calls = max(1, args.runs // args.batch)
        batches = [{"json": {"runs": [run] * args.batch}}] * calls
        batch_s, batch = await drive(
            session, f"{base}/api/v1/runs/batch", batches, max(1, args.concurrency // 4)
        )
        hooks_s, hooks = await drive_hooks(session, base, args.runs, args.concurrency)
    return [
        {"mode": "single", "runs_per_s": args.runs / single_s, "calls": len(single),
         "p50_ms": percentile(single, 0.5) * 1000, "p99_ms": percentile(single, 0.99) * 1000},
        {"mode": f"batch of {args.batch}", "runs_per_s": calls * args.batch / batch_s,
         "calls": len(batch), "p50_ms": percentile(batch, 0.5) * 1000,
         "p99_ms": percentile(batch, 0.99) * 1000},
        {"mode": "/hooks", "runs_per_s": args.runs / hooks_s, "calls": len(hooks),
         "p50_ms": percentile(hooks, 0.5) * 1000, "p99_ms": percentile(hooks, 0.99) * 1000},
    ]  # fmt: skip


async def drive_hooks(
    session: aiohttp.ClientSession, base: str, n: int, concurrency: int
) -> tuple[float, list[float]]:
    """Accepted deliveries to a GitHub-scheme trigger: signature check, replay claim and run
    insert in one transaction, Redis enqueue. (elapsed s, per-call latencies)."""
    secret = "bench-secret-" + uuid.uuid4().hex
    body = {"name": "bench", "type": "noop", "scheme": "github", "secrets": [secret]}
    async with session.post(f"{base}/api/v1/triggers", json=body) as r:
        assert r.status == 201, await r.text()
        url = base + (await r.json())["path"]
    # A distinct body per delivery: GitHub signs no delivery id, so the replay key is the
    # body's hash and a repeated body would be answered as a replay, not a new run.
    requests = []
    for i in range(n):
        payload = b'{"ref":"refs/heads/main","after":"%08d"}' % i
        signature = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": f"bench-{i}"}
        requests.append({"data": payload, "headers": headers})
    return await drive(session, url, requests, concurrency)


async def run(args: argparse.Namespace, database_url: str, redis_url: str) -> int:
    token = uuid.uuid4().hex[:8]
    name, namespace = f"jobhost_bench_http_{token}", f"bench-{token}-http"
    base_url, _, _ = database_url.rpartition("/")
    db_url = f"{base_url}/{name}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    api: asyncio.subprocess.Process | None = None
    try:
        await apply_migrations(db_url)
        conn = await asyncpg.connect(db_url)
        key, _ = await apikeys.create_key(conn, "bench", ["write"])
        await conn.close()
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBHOST_DATABASE_URL": db_url,
               "JOBHOST_REDIS_URL": redis_url, "JOBHOST_NAMESPACE": namespace,
               "JOBHOST_PLUGINS_FILE": str(PLUGINS_FILE)}  # fmt: skip
        command = [sys.executable, "-m", "host", "--log-level", "warning", "api"]
        api = await asyncio.create_subprocess_exec(
            *command, "--port", str(port), env=env, stdout=asyncio.subprocess.PIPE
        )
        assert api.stdout is not None
        if b"listening" not in await asyncio.wait_for(api.stdout.readline(), 60):
            raise SystemExit("jobhost api did not start")
        rows = await measure(args, f"http://127.0.0.1:{port}", key)
    finally:
        if api is not None:
            api.terminate()
            await api.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        redis = Redis.from_url(redis_url)
        async for k in redis.scan_iter(match=f"jh:{{{namespace}}}:*".replace("{", "\\{")):
            await redis.delete(k)
        await redis.aclose()
    print(f"enqueue over HTTP ({args.runs} runs, {args.concurrency} calls in flight)")
    for r in rows:
        print(f"  {r['mode']:<14} {r['runs_per_s']:>9,.0f} runs/s   per call p50 "
              f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms  ({r['calls']} calls)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.http_enqueue", description=__doc__)
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight (single)")
    p.add_argument("--batch", type=int, default=100, help="runs per batch call")
    args = p.parse_args(argv)
    db_url, redis_url = os.environ.get(DB_ENV), os.environ.get(REDIS_ENV)
    if db_url and redis_url:
        return asyncio.run(run(args, db_url, redis_url))
    tmp = Path(tempfile.mkdtemp(prefix="jobhost-bench-http-"))
    servers = EmbeddedServers(tmp / "servers", pg_port=None, redis_port=None, write_state=False)
    try:
        urls = servers.start()
        return asyncio.run(run(args, urls.database_url, urls.redis_url))
    finally:
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
