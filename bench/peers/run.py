"""The orchestrator's side of the peers: one drain, one single-enqueue and one paced-latency
measurement at a time, on the benchmark's servers and with its CPU accounting (bench.drain).

Peers keep their Redis keys in their own Redis database (the benchmark's URL with database
PEER_DB), flushed before and after every measurement; Procrastinate gets a fresh PostgreSQL
database each time. Worker processes start in their own session so that a worker's children
(Celery's pool, RQ's work horses, Dramatiq's and taskiq's forks) end with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench import report
from bench.common import ROOT
from bench.peers import PEERS
from bench.peers.base import BULLMQ_DIR, Ctx, Peer
from bench.peers.counter import DONE, END, LAT, WARMUP
from bench.procs import Child, ChildFailed, peak_rss_mb, tree_cpu_s

if TYPE_CHECKING:
    from bench.drain import Bench

PEER_DB = 1  #: the Redis database the peers use (jobhost uses namespaces in database 0)
SINGLE_RUNS = 1_000  #: jobs of the single-call enqueue measurement (no worker running)


def peer_runs(args: Any, name: str) -> int:
    """Jobs per drain of a peer: --runs for BullMQ (the yardstick) and with --full; otherwise
    --peer-runs for the Python peers, which drain 300 to 3,500 jobs/s: 20,000 jobs three
    times each would take most of an hour."""
    if args.full or name == "bullmq":
        return int(args.runs)
    return int(min(args.runs, args.peer_runs))


def peer_paced_seconds(args: Any, name: str) -> float:
    """Length of a peer's paced stream: --paced-seconds for BullMQ and with --full,
    --peer-paced-seconds for the Python peers otherwise."""
    if args.full or name == "bullmq":
        return float(args.paced_seconds)
    return float(min(args.paced_seconds, args.peer_paced_seconds))


def peer_configs(args: Any, name: str) -> list[tuple[int, int]]:
    """The W:C pairs a peer drains at: every --peer-configs pair for BullMQ and with --full,
    the first one only for the Python peers otherwise."""
    if args.full or name == "bullmq":
        return list(args.peer_configs)
    return list(args.peer_configs[:1])


def peer(name: str) -> ModuleType:
    return importlib.import_module(f"bench.peers.{name}")


def peer_redis_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{PEER_DB}"))


def versions(name: str) -> dict[str, str]:
    out = {}
    for package in peer(name).INFO.packages:
        if name == "bullmq":
            path = BULLMQ_DIR / "node_modules" / package / "package.json"
            with contextlib.suppress(OSError, ValueError):
                out[package] = json.loads(path.read_text())["version"]
            continue
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


def pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


class Workers:
    """W worker processes of a peer (plain subprocesses, output to a log file)."""

    def __init__(self, info: Peer, n: int, c: int, ctx: Ctx, target: int, log: Path) -> None:
        self.argvs = [info.worker_argv(c, i + 1, ctx) for i in range(n)]
        self.env = {
            **os.environ,
            "BENCH_PEER_REDIS": ctx.redis_url,
            "BENCH_PEER_DATABASE": ctx.database_url,
            "BENCH_PEER_TARGET": str(target),
            "BENCH_PEER_CONCURRENCY": str(c),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": pythonpath(),  # console scripts do not put the cwd on sys.path
        }
        self.log = log
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def start(self) -> None:
        out = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for argv in self.argvs:
                self.procs.append(
                    await asyncio.create_subprocess_exec(
                        *argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        cwd=ROOT,
                        env=self.env,
                        start_new_session=True,
                    )
                )
        finally:
            os.close(out)

    def check(self) -> None:
        for p in self.procs:
            if p.returncode is not None:
                raise ChildFailed(f"a worker exited ({p.returncode})\n{self.tail()}")

    def peak_rss_mb(self) -> float | None:
        """The largest VmHWM of any process of the workers' trees."""
        values: list[float] = []
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                tree = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
                values += [v for v in map(peak_rss_mb, tree) if v is not None]
        return max(values, default=None)

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (each peer's graceful stop), then SIGKILL to the whole session."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs)), timeout_s)
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            await p.wait()

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class PeerBench:
    """Peer measurements inside a bench.drain.Bench run (its servers, CPU readings, records)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.redis_url = peer_redis_url(bench.target.redis_url)
        self._seq = 0

    @contextlib.asynccontextmanager
    async def context(self, info: Peer) -> AsyncIterator[tuple[Ctx, Redis]]:
        """A flushed peer Redis database, and a fresh PostgreSQL database if the peer needs one."""
        self._seq += 1
        redis = Redis.from_url(self.redis_url)
        await redis.flushdb()
        db_name = f"jobhost_bench_{self.bench.token}_peer{self._seq}"
        db_url = ""
        try:
            if info.needs_postgres:
                from bench.drain import with_database

                await self.bench.admin.execute(f'CREATE DATABASE "{db_name}"')
                db_url = with_database(self.bench.target.database_url, db_name)
                await self.apply_schema(info, db_url)
            yield Ctx(self.redis_url, db_url), redis
        finally:
            await redis.flushdb()
            await redis.aclose()
            if db_url:
                await self.bench.admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    async def apply_schema(self, info: Peer, db_url: str) -> None:
        argv = [*info.worker_argv(1, 0, Ctx(self.redis_url, db_url))[:3], "schema", "--apply"]
        env = {**os.environ, "BENCH_PEER_DATABASE": db_url, "PYTHONPATH": pythonpath()}
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode:
            raise ChildFailed(f"{info.name}: schema --apply failed\n{out.decode()[-2000:]}")

    def producer(self, info: Peer, ctx: Ctx, mode: str, runs: int, log: Path) -> Child:
        a = self.bench.args
        seconds = peer_paced_seconds(a, info.name)
        child = Child(f"{info.name}-producer", "bench.peers.producer", [], log)
        if info.name == "bullmq":
            args = [ctx.redis_url, mode, str(runs), str(a.batch), str(a.rate), str(seconds)]
        else:
            args = [
                "--peer", info.name, "--redis-url", ctx.redis_url, "--database-url",
                ctx.database_url, "--mode", mode, "--runs", str(runs), "--batch", str(a.batch),
                "--rate", str(a.rate), "--seconds", str(seconds),
            ]  # fmt: skip
        child.argv = [*info.producer_argv, *args]
        return child

    async def warm_up(self, producer: Child, redis: Redis, workers: Workers) -> None:
        """Enqueue WARMUP jobs and wait until they ran: every worker is up and connected."""
        producer.send("warm")
        await producer.expect("warmed", timeout_s=60)
        deadline = time.monotonic() + 60
        while int(await redis.get(DONE) or 0) < WARMUP:
            workers.check()
            if time.monotonic() > deadline:
                raise ChildFailed(f"warm-up jobs not done after 60 s\n{workers.tail()}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)

    async def wait_end(self, redis: Redis, workers: Workers, runs: int) -> float:
        """The time the handler that completed the last job stamped in Redis."""
        limit = max(180.0, runs / 50)
        deadline = time.monotonic() + limit
        while (end := await redis.get(END)) is None:
            workers.check()
            if time.monotonic() > deadline:
                done = int(await redis.get(DONE) or 0) - WARMUP
                raise ChildFailed(f"only {done} of {runs} jobs done after {limit:g} s")
            await asyncio.sleep(0.02)
        return float(end)

    def log(self, name: str, role: str) -> Path:
        return self.bench.logs / f"peer{self._seq}-{name}-{role}.log"

    async def drain(self, name: str, n_workers: int, concurrency: int, rep: int) -> None:
        info: Peer = peer(name).INFO
        runs, b = peer_runs(self.bench.args, name), self.bench
        mode = "bulk" if info.bulk else "single"
        async with self.context(info) as (ctx, redis):
            workers = Workers(
                info, n_workers, concurrency, ctx, WARMUP + runs, self.log(name, "workers")
            )
            producer = self.producer(info, ctx, mode, runs, self.log(name, "producer"))
            try:
                await workers.start()
                await producer.start()
                await producer.expect("ready", timeout_s=60)
                await asyncio.sleep(info.startup_s)
                await self.warm_up(producer, redis, workers)
                cpu0 = self.cpu(producer, workers)
                producer.send("go")
                done = await producer.expect("done", timeout_s=max(180.0, runs / 50))
                cpu1 = self.cpu(producer, workers)
                t_end = await self.wait_end(redis, workers, runs)
                cpu2 = self.cpu(producer, workers)
                rss = workers.peak_rss_mb()
                counted = int(await redis.get(DONE) or 0) - WARMUP
            finally:
                producer.send("exit")
                await producer.finish(timeout_s=15)
                await workers.stop()
        if counted != runs:
            raise ChildFailed(f"{name}: {counted} jobs counted, expected {runs}")
        from bench.drain import add_cpu, delta, other_load

        row: dict[str, Any] = {
            "kind": "peer_drain", "system": name, "variant": "end-to-end",
            "workers": n_workers, "concurrency": concurrency, "runs": runs, "rep": rep,
            "enqueue_api": info.bulk or "single", "seconds": t_end - done["t_first"],
            "runs_per_s": runs / (t_end - done["t_first"]),
            "enqueue_runs_per_s": runs / (done["t_done"] - done["t_first"]),
            "worker_peak_rss_mb": rss,
        }  # fmt: skip
        window = {"producer": delta(cpu0, cpu1, "producer")}
        for role in ("workers", "redis", "postgres"):
            window[role] = delta(cpu0, cpu2, role)
        add_cpu(row, window, runs, "")
        row["other_load"] = other_load(cpu0, cpu2, b.target.embedded)
        label = f"{name} end-to-end W{n_workers} C{concurrency} #{rep}"
        b.record(row, f"{row['runs_per_s']:,.0f} jobs/s, {label}")

    def cpu(self, producer: Child, workers: Workers) -> dict[str, float | None]:
        out = self.bench.cpu({"producer": [producer]})
        values = [tree_cpu_s(pid) for pid in workers.pids]
        out["workers"] = None if None in values else sum(v for v in values if v is not None)
        return out

    async def single(self, name: str, rep: int) -> None:
        """Enqueue throughput with one call per job, no worker running."""
        info: Peer = peer(name).INFO
        runs = min(SINGLE_RUNS, self.bench.args.runs)
        async with self.context(info) as (ctx, _redis):
            producer = self.producer(info, ctx, "single", runs, self.log(name, "producer"))
            try:
                await producer.start()
                await producer.expect("ready", timeout_s=60)
                cpu0 = self.bench.cpu({"producer": [producer]})
                producer.send("go")
                done = await producer.expect("done", timeout_s=max(180.0, runs / 50))
                cpu1 = self.bench.cpu({"producer": [producer]})
            finally:
                producer.send("exit")
                await producer.finish(timeout_s=15)
        from bench.drain import add_cpu, delta, other_load

        row: dict[str, Any] = {
            "kind": "peer_enqueue", "system": name, "api": "single", "runs": runs, "rep": rep,
            "enqueue_runs_per_s": runs / (done["t_done"] - done["t_first"]),
        }  # fmt: skip
        window = {role: delta(cpu0, cpu1, role) for role in ("producer", "redis", "postgres")}
        add_cpu(row, window, runs, "")
        row["other_load"] = other_load(cpu0, cpu1, self.bench.target.embedded)
        line = f"{row['enqueue_runs_per_s']:,.0f} single enqueues/s, {name} #{rep}"
        self.bench.record(row, line)

    async def latency(self, name: str, rep: int) -> None:
        info: Peer = peer(name).INFO
        a, b = self.bench.args, self.bench
        seconds = peer_paced_seconds(a, name)
        total = int(a.rate * seconds)
        async with self.context(info) as (ctx, redis):
            workers = Workers(info, 1, 10, ctx, WARMUP + total, self.log(name, "workers"))
            producer = self.producer(info, ctx, "paced", total, self.log(name, "producer"))
            try:
                await workers.start()
                await producer.start()
                await producer.expect("ready", timeout_s=60)
                await asyncio.sleep(info.startup_s)
                await self.warm_up(producer, redis, workers)
                cpu0 = b.cpu({})
                producer.send("go")
                done = await producer.expect("done", timeout_s=seconds * 3 + 60)
                await self.wait_end(redis, workers, total)
                cpu1 = b.cpu({})
                lat = sorted(float(v) * 1000 for v in await redis.lrange(LAT, 0, -1))
            finally:
                producer.send("exit")
                await producer.finish(timeout_s=15)
                await workers.stop()
        if len(lat) != total:
            raise ChildFailed(f"{name}: {len(lat)} latencies, expected {total}")
        from bench.drain import other_load

        row = {
            "kind": "peer_latency", "system": name, "rate": a.rate, "seconds": seconds,
            "workers": 1, "concurrency": 10, "rep": rep, "measured": len(lat),
            "late_enqueues": done.get("late", 0),
            "p50_ms": report.percentile(lat, 50), "p90_ms": report.percentile(lat, 90),
            "p99_ms": report.percentile(lat, 99), "max_ms": lat[-1],
            "other_load": other_load(cpu0, cpu1, b.target.embedded),
        }  # fmt: skip
        line = f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {name} paced #{rep}"
        b.record(row, line)


def known(names: list[str]) -> list[str]:
    unknown = set(names) - set(PEERS) - {"jobhost"}
    if unknown:
        raise ValueError(f"unknown systems: {', '.join(sorted(unknown))}")
    return names
