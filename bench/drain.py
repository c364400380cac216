"""The jobhost benchmark (`make bench`): drain throughput, pickup latency, CPU per run.

    python -m bench.drain [--quick] [--runs N] [--repeat R] ...   (see --help, bench/README.md)

Every run and attempt is committed in PostgreSQL at default durability before a run counts as
done. Servers: embedded PostgreSQL and Valkey started here on free ports, or the servers named
by JOBHOST_BENCH_DATABASE_URL and JOBHOST_BENCH_REDIS_URL (then only databases and Redis
namespaces this benchmark creates are touched, and they are dropped afterwards).

Drain: W worker processes (bench.worker_proc) and one producer process (bench.producer_proc),
each measurement in a fresh database (cloned from a migrated template) and a fresh namespace.
  end-to-end  workers idle-waiting, then the producer enqueues N noop runs with enqueue_many in
              batches; runs/s = N / (last finish commit - start of the first enqueue).
  drain-only  the producer enqueues the backlog first, then the workers start;
              runs/s = N / (last finish commit - first worker start).
Pickup latency: one worker, idle; the producer enqueues `bench.stamp` runs one call each at a
fixed rate; latency = handler start - start of the enqueue call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench import report
from bench.common import ROOT
from bench.peers import PEERS
from bench.peers.run import (
    SINGLE_RUNS,
    PeerBench,
    peer,
    peer_configs,
    peer_paced_seconds,
    peer_runs,
    versions,
)
from bench.peers.table import side_by_side
from bench.peers.table import summaries as peer_summaries
from bench.plugin import STAMP
from bench.procs import Child, ChildFailed, local_process, parent_pid, peak_rss_mb, tree_cpu_s
from host.embedded import EmbeddedServers
from host.queue.keys import Keys
from host.queue.queue import Queue
from host.store.db import migrate

DB_ENV = "JOBHOST_BENCH_DATABASE_URL"
REDIS_ENV = "JOBHOST_BENCH_REDIS_URL"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = {"e2e": "end-to-end", "drain": "drain-only", "limited": "drain-only, limits on"}
#: For "limited": a token bucket and a concurrency limit on noop, high enough never to bind, so
#: the figure is the cost of checking them in every claim (and counting in every ack).
NONBINDING_LIMITS = ("1000000/s", 1_000_000, 100_000)
QUIET_LOAD = 0.10  # other processes' share of the CPUs above which a measurement waits
POLL_S = 0.05  # completion polling (HLEN of the envelope hash); the end time comes from workers


@dataclass(frozen=True)
class WorkerConfig:
    """Worker options: concurrency C, claim batch K, prefetch P (None: the Worker's default, C)."""

    concurrency: int
    claim_batch: int = 200
    prefetch: int | None = None

    @classmethod
    def parse(cls, spec: str) -> WorkerConfig:
        parts = [int(p) for p in spec.split(":")]
        if not 1 <= len(parts) <= 3 or min(parts) < 1:
            raise argparse.ArgumentTypeError(f"worker config {spec!r} is not C[:K[:P]]")
        return cls(*parts)

    @property
    def label(self) -> str:
        extra = f" P{self.prefetch}" if self.prefetch is not None else ""
        return f"C{self.concurrency} K{self.claim_batch}{extra}"

    def args(self) -> list[str]:
        out = ["--concurrency", str(self.concurrency), "--claim-batch", str(self.claim_batch)]
        if self.prefetch is not None:
            out += ["--prefetch", str(self.prefetch)]
        return out


@dataclass
class Target:
    """The servers: where they are and, when they run on this machine, their process ids."""

    database_url: str  #: a database this benchmark may connect to for CREATE / DROP DATABASE
    redis_url: str
    embedded: bool
    pg_pid: int | None = None  #: the postmaster
    redis_pid: int | None = None


async def add_subscriptions(conn: asyncpg.Connection, count: int) -> None:
    """`count` webhook subscriptions to every event of the default tenant, so each finished run
    also writes `count` x its events outbox rows (no notifier runs: this is the run path's
    cost of notifications)."""
    for i in range(count):
        await conn.execute(
            """INSERT INTO subscriptions (tenant_id, name, events, channel, destination)
               VALUES ('default', $1, ARRAY['run.succeeded', 'run.failed', 'run.dead'],
                       'webhook', '{"url": "https://hooks.example.com/bench"}')""",
            f"bench-{i}",
        )


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


@dataclass
class Bench:
    args: argparse.Namespace
    target: Target
    logs: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _seq: int = 0
    _dbs: set[str] = field(default_factory=set)
    _admin: asyncpg.Connection | None = None
    _redis: Redis | None = None

    @property
    def admin(self) -> asyncpg.Connection:
        assert self._admin is not None
        return self._admin

    @property
    def redis(self) -> Redis:
        assert self._redis is not None
        return self._redis

    @property
    def template(self) -> str:
        return f"jobhost_bench_{self.token}_tpl"

    # -- set-up and clean-up ---------------------------------------------------------------------

    async def open(self) -> None:
        self._admin = await asyncpg.connect(self.target.database_url)
        self._redis = Redis.from_url(self.target.redis_url)
        backend = await self.admin.fetchval("SELECT pg_backend_pid()")
        self.target.pg_pid = local_process(parent_pid(backend), ("postgres", "postmaster"))
        info = await self.redis.info("server")
        self.target.redis_pid = local_process(info.get("process_id"), ("redis", "valkey"))
        await self.admin.execute(f'CREATE DATABASE "{self.template}"')
        self._dbs.add(self.template)
        conn = await asyncpg.connect(with_database(self.target.database_url, self.template))
        try:
            await migrate(conn)
            await add_subscriptions(conn, self.args.subscriptions)
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._admin is not None:
            for name in sorted(self._dbs, key=lambda n: n == self.template):
                with contextlib.suppress(Exception):
                    await self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await self._admin.close()
        if self._redis is not None:
            await self._redis.aclose()

    @contextlib.asynccontextmanager
    async def fresh(self) -> Any:
        """A new database cloned from the template and a new Redis namespace, removed after."""
        self._seq += 1
        name = f"jobhost_bench_{self.token}_{self._seq}"
        namespace = f"bench-{self.token}-{self._seq}"
        await self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._dbs.add(name)
        try:
            yield with_database(self.target.database_url, name), namespace
        finally:
            await self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._dbs.discard(name)
            await Queue(self.redis, namespace).delete_namespace()

    # -- child processes -------------------------------------------------------------------------

    def _child(self, name: str, module: str, db: str, ns: str, extra: list[str]) -> Child:
        common = ["--database-url", db, "--redis-url", self.target.redis_url, "--namespace", ns]
        return Child(name, module, [*common, *extra], self.logs / f"{ns}-{name}.log")

    def workers(
        self, db: str, ns: str, n: int, cfg: WorkerConfig, types: str, profile: str
    ) -> list[Child]:
        out = []
        for i in range(n):
            extra = [*cfg.args(), "--types", types]
            if profile:
                extra += ["--profile", f"{profile}-worker{i + 1}.prof"]
            out.append(self._child(f"worker{i + 1}", "bench.worker_proc", db, ns, extra))
        return out

    def cpu(self, roles: dict[str, list[Child]]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for role, children in roles.items():
            values = [tree_cpu_s(c.pid) for c in children]
            out[role] = None if None in values else sum(v for v in values if v is not None)
        out["redis"] = tree_cpu_s(self.target.redis_pid)
        out["postgres"] = tree_cpu_s(self.target.pg_pid)
        out["bench"] = tree_cpu_s(os.getpid())  # this orchestrator and its children
        out["machine"] = machine_cpu_s()
        out["wall"] = time.monotonic()
        return out

    async def server_counters(self) -> dict[str, float]:
        """Server-wide counters: WAL bytes written, and Redis commands and script time (the
        time of EVALSHA includes the commands its script calls)."""
        lsn = await self.admin.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        stats = await self.redis.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_evalsha")
        script = stats.get("cmdstat_evalsha", {}).get("usec", 0)
        return {"wal_bytes": float(lsn), "redis_calls": calls, "redis_script_usec": script}

    async def wait_drained(self, ns: str, workers: list[Child], runs: int) -> None:
        """Until Redis holds no envelope of the namespace: every run acked, which the worker
        does only after PostgreSQL has committed its result."""
        key = Keys(ns).env
        deadline = time.monotonic() + max(120.0, runs / 100)
        while await self.redis.hlen(key):
            for w in workers:
                if w.exited():
                    raise ChildFailed(f"{w.name} exited during the drain\n{w.tail()}")
            if time.monotonic() > deadline:
                raise ChildFailed(f"runs still queued after {max(120.0, runs / 100):g}s")
            await asyncio.sleep(POLL_S)

    async def wait_disconnected(self, database: str) -> None:
        """Until no backend serves `database`: exiting backends flush their table statistics."""
        deadline = time.monotonic() + 30
        while await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)

    # -- the drain benchmark ---------------------------------------------------------------------

    async def drain(self, variant: str, n_workers: int, cfg: WorkerConfig, rep: int) -> None:
        runs = self.args.runs
        label = f"{VARIANTS[variant]} W{n_workers} {cfg.label} #{rep}"
        profile = ""
        if self.args.profile and rep == 1:
            os.makedirs(self.args.profile, exist_ok=True)
            profile = str(Path(self.args.profile) / f"{variant}-w{n_workers}-{cfg.label}")
            profile = profile.replace(" ", "-")
        async with self.fresh() as (db, ns):
            if variant == "limited":
                await set_nonbinding_limits(db)
            before = await runs_stats(db)
            types = "" if self.args.types == "all" else self.args.types or "noop"
            workers = self.workers(db, ns, n_workers, cfg, types, profile)
            extra = ["--mode", "bulk", "--runs", str(runs), "--batch", str(self.args.batch)]
            if profile:
                extra += ["--profile", f"{profile}-producer.prof"]
            producer = self._child("producer", "bench.producer_proc", db, ns, extra)
            children = [*workers, producer]
            try:
                await asyncio.gather(*(c.start() for c in children))
                await asyncio.gather(*(c.expect("ready") for c in children))
                if variant == "e2e":
                    starts = await self._go(workers)
                    await asyncio.sleep(0.3)  # let them reach their idle wait
                roles = {"producer": [producer], "workers": workers}
                cpu0 = self.cpu(roles)
                servers0 = await self.server_counters()
                producer.send("go")
                done = await producer.expect("done", timeout_s=max(120.0, runs / 100))
                cpu1 = self.cpu(roles)
                producer.send("exit")
                if variant in ("drain", "limited"):
                    await producer.finish()
                    starts = await self._go(workers)
                await self.wait_drained(ns, workers, runs)
                cpu2 = self.cpu({"workers": workers})
                servers1 = await self.server_counters()
                rss = [peak_rss_mb(w.pid) for w in workers]
                for w in workers:
                    w.send("stop")
                stopped = [await w.expect("stopped") for w in workers]
                await asyncio.gather(*(c.finish() for c in children))
            finally:
                for c in children:
                    c.kill()
            await self.wait_disconnected(db.rsplit("/", 1)[1])
            after = await runs_stats(db)
            counts = await verify(db)
        if counts != {"succeeded": runs, "attempts": runs}:
            raise ChildFailed(f"{label}: expected {runs} succeeded runs and attempts, got {counts}")
        t0 = done["t_first"] if variant == "e2e" else min(starts)  # drain, limited: drain phase
        t_end = max(s["last_commit"] for s in stopped)
        row: dict[str, Any] = {
            "kind": "drain", "variant": VARIANTS[variant], "workers": n_workers,
            "concurrency": cfg.concurrency, "claim_batch": cfg.claim_batch,
            "prefetch": cfg.prefetch, "runs": runs, "rep": rep,
            "seconds": t_end - t0, "runs_per_s": runs / (t_end - t0),
            "enqueue_runs_per_s": runs / (done["t_done"] - done["t_first"]),
            "worker_peak_rss_mb": max((r for r in rss if r is not None), default=None),
            "claims": sum(s["claims"] for s in stopped),
            "finish_flushes": sum(s["finish_calls"] for s in stopped),
        }  # fmt: skip
        row["avg_claim"] = runs / row["claims"] if row["claims"] else None
        row["avg_flush"] = runs / row["finish_flushes"] if row["finish_flushes"] else None
        window = {"producer": delta(cpu0, cpu1, "producer")}
        for role in ("workers", "redis", "postgres"):
            window[role] = delta(cpu0, cpu2, role)
        add_cpu(row, window, runs, "")
        row["other_load"] = other_load(cpu0, cpu2, self.target.embedded)
        if variant in ("drain", "limited"):  # the drain phase alone, without the enqueue phase
            phase = {role: delta(cpu1, cpu2, role) for role in ("workers", "redis", "postgres")}
            add_cpu(row, phase, runs, "drain_")
        for name, value in servers1.items():
            row[name + "_per_run"] = (value - servers0[name]) / runs
        for name in ("seq_scan", "seq_tup_read", "idx_scan", "n_tup_upd", "n_tup_hot_upd"):
            row[name + "_delta"] = after[name] - before[name]
        self.record(row, f"{row['runs_per_s']:,.0f} runs/s, {label}")

    async def enqueue_single(self, rep: int) -> None:
        """Enqueue throughput with one Client.enqueue call per run, no worker running."""
        runs = min(SINGLE_RUNS, self.args.runs)
        async with self.fresh() as (db, ns):
            extra = ["--mode", "single", "--runs", str(runs)]
            producer = self._child("producer", "bench.producer_proc", db, ns, extra)
            try:
                await producer.start()
                await producer.expect("ready")
                cpu0 = self.cpu({"producer": [producer]})
                producer.send("go")
                done = await producer.expect("done", timeout_s=max(120.0, runs / 100))
                cpu1 = self.cpu({"producer": [producer]})
                producer.send("exit")
                await producer.finish()
            finally:
                producer.kill()
        row: dict[str, Any] = {
            "kind": "enqueue", "system": "jobhost", "api": "single", "runs": runs, "rep": rep,
            "enqueue_runs_per_s": runs / (done["t_done"] - done["t_first"]),
        }  # fmt: skip
        window = {role: delta(cpu0, cpu1, role) for role in ("producer", "redis", "postgres")}
        add_cpu(row, window, runs, "")
        row["other_load"] = other_load(cpu0, cpu1, self.target.embedded)
        self.record(row, f"{row['enqueue_runs_per_s']:,.0f} single enqueues/s, jobhost #{rep}")

    async def _go(self, workers: list[Child]) -> list[float]:
        for w in workers:
            w.send("go")
        return [(await w.expect("running"))["t"] for w in workers]

    # -- pickup latency --------------------------------------------------------------------------

    async def latency(self, cfg: WorkerConfig, rep: int) -> None:
        rate, seconds = self.args.rate, self.args.paced_seconds
        label = f"paced {rate:g}/s for {seconds:g}s, W1 {cfg.label} #{rep}"
        async with self.fresh() as (db, ns):
            (worker,) = self.workers(db, ns, 1, cfg, STAMP, "")
            extra = ["--mode", "paced", "--rate", str(rate), "--seconds", str(seconds)]
            producer = self._child("producer", "bench.producer_proc", db, ns, extra)
            children = [worker, producer]
            try:
                await asyncio.gather(*(c.start() for c in children))
                await asyncio.gather(*(c.expect("ready") for c in children))
                await self._go([worker])
                await asyncio.sleep(0.3)
                cpu0 = self.cpu({})
                producer.send("go")
                done = await producer.expect("done", timeout_s=seconds * 3 + 60)
                cpu1 = self.cpu({})
                producer.send("exit")
                await self.wait_drained(ns, [worker], done["enqueued"])
                worker.send("stop")
                await worker.expect("stopped")
                await asyncio.gather(*(c.finish() for c in children))
            finally:
                for c in children:
                    c.kill()
            conn = await asyncpg.connect(db)
            try:
                rows = await conn.fetch(
                    """SELECT (result->>'started')::float8 - (payload->>'t')::float8 AS lat,
                              state
                       FROM runs WHERE NOT payload ? 'w'"""
                )
            finally:
                await conn.close()
        bad = [r for r in rows if r["state"] != "succeeded"]
        if bad or len(rows) != done["enqueued"]:
            raise ChildFailed(f"{label}: {len(rows)} runs measured, {len(bad)} not succeeded")
        lat = sorted(r["lat"] * 1000 for r in rows)
        row = {
            "kind": "latency", "rate": rate, "seconds": seconds, "workers": 1,
            "concurrency": cfg.concurrency, "claim_batch": cfg.claim_batch,
            "prefetch": cfg.prefetch, "rep": rep, "measured": len(lat),
            "late_enqueues": done.get("late", 0),
            "p50_ms": report.percentile(lat, 50), "p90_ms": report.percentile(lat, 90),
            "p99_ms": report.percentile(lat, 99), "max_ms": lat[-1],
            "mean_ms": sum(lat) / len(lat),
            "other_load": other_load(cpu0, cpu1, self.target.embedded),
        }  # fmt: skip
        self.record(row, f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {label}")

    def record(self, row: dict[str, Any], line: str) -> None:
        self.results.append(row)
        print(f"  {line}", flush=True)

    # -- the whole run ---------------------------------------------------------------------------

    async def wait_quiet(self) -> None:
        """Wait (up to --wait-quiet seconds) while other processes keep the CPUs busy: a test
        suite running next to the benchmark makes its numbers meaningless."""
        deadline = time.monotonic() + self.args.wait_quiet
        waited = False
        while time.monotonic() < deadline:
            before = self.cpu({})
            await asyncio.sleep(0.5)
            load = other_load(before, self.cpu({}), self.target.embedded) or 0.0
            if load <= QUIET_LOAD:
                break
            if not waited:
                print(f" (other processes use {load:.0%} of the CPUs: waiting)", end="", flush=True)
                waited = True
        if waited:
            print(" ", end="", flush=True)

    async def run(self) -> None:
        a = self.args
        peers = PeerBench(self)
        paced = a.rate > 0 and a.paced_seconds > 0
        plan: list[Any] = []
        for rep in range(1, a.repeat + 1):  # repeats outermost: drift spreads over all configs
            if "jobhost" in a.systems:
                for variant in a.variants:
                    for n in a.workers:
                        for cfg in a.configs:
                            plan.append((self.drain, variant, n, cfg, rep))
                for n, c in a.peer_configs:  # jobhost at the peers' settings, if not done above
                    cfg = WorkerConfig(c)
                    if "e2e" not in a.variants or n not in a.workers or cfg not in a.configs:
                        plan.append((self.drain, "e2e", n, cfg, rep))
                plan.append((self.enqueue_single, rep))
                if paced:  # at the peers' first concurrency (W1 C10), as they are measured
                    c = a.peer_configs[0][1] if a.peer_configs else a.configs[0].concurrency
                    plan.append((self.latency, WorkerConfig(c), rep))
            if rep > a.peer_repeat:
                continue
            for name in a.systems:
                if name == "jobhost":
                    continue
                for n, c in peer_configs(a, name):
                    plan.append((peers.drain, name, n, c, rep))
                plan.append((peers.single, name, rep))
                if paced:
                    plan.append((peers.latency, name, rep))
        failed_in_a_row = 0
        for i, (fn, *params) in enumerate(plan, 1):
            for attempt in range(a.noisy_retries + 1):
                print(f"[{i}/{len(plan)}]", end="", flush=True)
                await self.wait_quiet()
                began = time.monotonic()
                try:
                    await fn(*params)
                    self.results[-1]["elapsed_s"] = round(time.monotonic() - began, 1)
                    failed_in_a_row = 0
                except ChildFailed as exc:
                    print(f"  FAILED: {exc}", flush=True)
                    who = params[0] if isinstance(params[0], str) and fn.__self__ is peers else ""
                    self.errors.append(f"{who}: " * bool(who) + str(exc).splitlines()[0])
                    if who:  # a peer that fails does not stop the others
                        break
                    failed_in_a_row += 1
                    if failed_in_a_row == 3:
                        print("three measurements failed in a row: giving up", flush=True)
                        return
                    break
                last = self.results[-1]
                if (last.get("other_load") or 0) <= QUIET_LOAD or attempt == a.noisy_retries:
                    break
                last["discarded"] = "other load"  # kept in the JSON lines, left out of medians
                print("    (other processes competed with it: measuring again)", flush=True)


async def set_nonbinding_limits(database_url: str) -> None:
    """A run-time override on noop, as `jobhost limits set` stores it; workers publish it."""
    rate, burst, concurrency = NONBINDING_LIMITS
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO type_limits (type, rate, burst, concurrency) VALUES ('noop', $1, $2, $3)",
            rate, burst, concurrency,
        )  # fmt: skip
    finally:
        await conn.close()


async def runs_stats(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            """SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan,
                      n_tup_upd, n_tup_hot_upd
               FROM pg_stat_user_tables WHERE relname = 'runs'"""
        )
    finally:
        await conn.close()
    names = ("seq_scan", "seq_tup_read", "idx_scan", "n_tup_upd", "n_tup_hot_upd")
    return {k: int(row[k] or 0) if row else 0 for k in names}


async def verify(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        succeeded = await conn.fetchval("SELECT count(*) FROM runs WHERE state = 'succeeded'")
        attempts = await conn.fetchval("SELECT count(*) FROM attempts WHERE outcome = 'succeeded'")
    finally:
        await conn.close()
    return {"succeeded": succeeded, "attempts": attempts}


def delta(a: dict[str, float | None], b: dict[str, float | None], role: str) -> float | None:
    x, y = a.get(role), b.get(role)
    return None if x is None or y is None else y - x


def machine_cpu_s() -> float:
    """CPU seconds all user processes of the machine have used: process time from /proc/stat
    (interrupts, idle and guest time left out) less the kernel's own threads (children of
    kthreadd), which work for everyone (writeback, journaling)."""
    t = psutil.cpu_times()
    total = float(t.user + t.system + getattr(t, "nice", 0.0) - getattr(t, "guest", 0.0))
    with contextlib.suppress(psutil.Error):
        for k in psutil.Process(2).children():
            with contextlib.suppress(psutil.Error):
                c = k.cpu_times()
                total -= c.user + c.system
    return total


def other_load(
    a: dict[str, float | None], b: dict[str, float | None], servers_are_children: bool
) -> float | None:
    """The share of the machine's CPUs used between two readings by processes outside the
    benchmark (`bench` covers this process and its children: workers, producer and, when
    embedded, the servers). High values mean the measurement competed with something else."""
    machine, ours, wall = delta(a, b, "machine"), delta(a, b, "bench"), delta(a, b, "wall")
    if machine is None or ours is None or not wall:
        return None
    if not servers_are_children:
        servers = [delta(a, b, role) for role in ("redis", "postgres")]
        ours += sum(s for s in servers if s is not None)
    return max(0.0, (machine - ours) / (wall * (os.cpu_count() or 1)))


def add_cpu(row: dict[str, Any], cpu: dict[str, float | None], runs: int, prefix: str) -> None:
    """CPU milliseconds per 1,000 runs, per role and in total."""
    total = 0.0
    for role, seconds in cpu.items():
        per_1k = None if seconds is None else seconds * 1000 / runs * 1000
        row[f"{prefix}cpu_ms_per_1k_{role}"] = per_1k
        total += per_1k or 0.0
    complete = all(v is not None for v in cpu.values())
    row[f"{prefix}cpu_ms_per_1k_total"] = total if complete else None


# --- environment ---------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("asyncpg", "redis", "hiredis", "orjson", "jsonschema"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


async def environment(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(target.database_url)
    try:
        pg = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        }
    finally:
        await conn.close()
    redis = Redis.from_url(target.redis_url)
    try:
        info = await redis.info("server")
        try:
            conf = await redis.config_get("append*")
        except Exception:
            conf = {}
    finally:
        await redis.aclose()
    server = info.get("server_name") or ("valkey" if "valkey_version" in info else "redis")
    ver = info.get("valkey_version") or info.get("redis_version")
    conf = {(k.decode() if isinstance(k, bytes) else k): v for k, v in dict(conf).items()}
    conf = {k: v.decode() if isinstance(v, bytes) else v for k, v in conf.items()}
    return {
        "kind": "meta",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "postgresql": pg["server_version"],
        "redis_server": f"{server} {ver}",
        "servers": "embedded (started by the benchmark)" if target.embedded else "given by URL",
        "durability": {
            "fsync": pg["fsync"],
            "synchronous_commit": pg["synchronous_commit"],
            "full_page_writes": pg["full_page_writes"],
            "appendonly": conf.get("appendonly"),
            "appendfsync": conf.get("appendfsync"),
        },
        "settings": {
            "runs": args.runs,
            "repeat": args.repeat,
            "enqueue_batch": args.batch,
            "workers": args.workers,
            "configs": [c.label for c in args.configs],
            "worker_types": {"": "noop (the benchmarked type only)", "all": "every type"}.get(
                args.types, args.types
            ),
            "variants": [VARIANTS[v] for v in args.variants],
            "paced_rate": args.rate,
            "paced_seconds": args.paced_seconds,
            "quick": args.quick,
            "systems": args.systems,
            "peer_configs": [list(pc) for pc in args.peer_configs],
            "peer_repeat": args.peer_repeat,
            "full": args.full,
            "peer_runs": {n: peer_runs(args, n) for n in args.systems if n != "jobhost"},
            "peer_paced_seconds": {
                n: peer_paced_seconds(args, n) for n in args.systems if n != "jobhost"
            },
            "peer_drain_configs": {
                n: [f"W{w} C{c}" for w, c in peer_configs(args, n)]
                for n in args.systems
                if n != "jobhost"
            },
            "single_enqueue_runs": min(SINGLE_RUNS, args.runs),
        },
        "peers": {
            name: {"versions": versions(name), "settings": peer(name).INFO.settings}
            for name in args.systems
            if name != "jobhost"
        },
        "node": node_version() if "bullmq" in args.systems else None,
    }


def node_version() -> str | None:
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def header_lines(meta: dict[str, Any]) -> list[str]:
    d, s = meta["durability"], meta["settings"]
    pk = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    return [
        f"Date: {meta['date']} (commit {meta['git_commit'] or '?'})",
        f"Machine: {meta['cpu_count']} CPUs, {meta['cpu_model']}",
        f"Python {meta['python']} ({pk})",
        f"PostgreSQL {meta['postgresql']}, {meta['redis_server']}: {meta['servers']}",
        f"Durability: PostgreSQL fsync={d['fsync']}, synchronous_commit="
        f"{d['synchronous_commit']}, full_page_writes={d['full_page_writes']} (defaults, not the"
        f" test suite's fast mode); Valkey appendonly={d['appendonly']}, appendfsync="
        f"{d['appendfsync']}. Every run and attempt is committed in PostgreSQL before it counts.",
        f"Drain: {s['runs']:,} noop runs per measurement, median of {s['repeat']}; producer: one"
        f" process, enqueue_many batches of {s['enqueue_batch']} back to back; workers serve"
        f" {s['worker_types']}; W = worker processes, C = concurrency, K = claim batch"
        " (prefetch = C, the default).",
    ]


def render(meta: dict[str, Any], results: list[dict[str, Any]]) -> tuple[str, str, list[Any]]:
    kept = [r for r in results if not r.get("discarded")]
    drains = [r for r in kept if r["kind"] == "drain"]
    lats = [r for r in kept if r["kind"] == "latency"]
    dsum = report.summarise(
        drains,
        lambda r: (r["variant"], r["workers"], r["concurrency"], r["claim_batch"], r["prefetch"]),
    )
    lsum = report.summarise(lats, lambda r: (r["rate"], r["concurrency"], r["claim_batch"]))
    head = header_lines(meta)
    text, md = list(head), ["# jobhost benchmark", "", *(f"- {line}" for line in head)]
    cpu_note = (
        "CPU columns: CPU milliseconds per 1,000 runs of each process involved (producer over"
        " its enqueues; workers, Valkey and the whole PostgreSQL process tree, backends included,"
        " from the first enqueue to the last commit). runs seq_scan Δ: sequential scans of"
        " `runs` during the measurement (pg_stat_user_tables); it should be 0."
    )
    if drains:
        h, rows = report.drain_table(dsum)
        text += ["", "Drain throughput (runs/s) and cost", report.text_table(h, rows), cpu_note]
        md += ["", "## Drain throughput and cost", "", report.markdown_table(h, rows), "", cpu_note]
    if lats:
        s = meta["settings"]
        title = (
            f"Pickup latency: {s['paced_rate']:g} runs/s for {s['paced_seconds']:g} s, one"
            " Client.enqueue per run on an idle worker; handler start - enqueue call start;"
            f" median of {s['repeat']}"
        )
        h, rows = report.latency_table(lsum)
        text += ["", title, report.text_table(h, rows)]
        md += ["", "## Pickup latency", "", title, "", report.markdown_table(h, rows)]
    psum = peer_summaries(results)
    s = meta["settings"]
    if len(s["systems"]) > 1 or psum:
        configs = [tuple(pc) for pc in s["peer_configs"]]
        h, rows, ratios = side_by_side(s["systems"], configs, [*dsum, *lsum, *psum])
        fewer = {n: r for n, r in s.get("peer_runs", {}).items() if r != s["runs"]}
        shorter = {
            n: t for n, t in s.get("peer_paced_seconds", {}).items() if t != s["paced_seconds"]
        }
        for row in rows:
            name = row[0]
            marks = [f"N={fewer[name]:,}"] if name in fewer else []
            marks += [f"pickup {shorter[name]:g} s"] if name in shorter else []
            if marks:
                row[0] = f"{name} ({', '.join(marks)})"
        scope = ""
        if fewer or shorter:
            scope = (
                " Systems marked N=... drained that many jobs instead, at the first W/C pair"
                " only (n/a: not measured), and those marked pickup ... s had a paced stream"
                " that long: the slow Python peers, to fit the 15-minute budget with every"
                f" figure a median of {s['peer_repeat']}; `--full` measures every peer at every"
                f" pair with {s['runs']:,} jobs and {s['paced_seconds']:g} s streams."
            )
        title = (
            f"jobhost and the peers, side by side: {s['runs']:,} no-op jobs enqueued by one"
            " producer while idle workers wait (end-to-end), W worker processes x concurrency C;"
            f" jobhost median of {s['repeat']}, peers median of {s['peer_repeat']}.{scope}"
            " CPU ms per 1,000 jobs: producer / workers / Redis / PostgreSQL = total. Enqueue bulk:"
            " the producer's rate during the W1 drain; single: one call per job, no worker"
            f" running ({s['single_enqueue_runs']:,} jobs). Pickup: {s['paced_rate']:g} jobs/s"
            f" for {s['paced_seconds']:g} s, W1 C10."
        )
        settings = []
        if "jobhost" in s["systems"]:
            settings.append(
                f"jobhost {meta['git_commit'] or ''}: every run and attempt committed in"
                " PostgreSQL (no peer but Procrastinate keeps a durable per-job history)"
            )
        for name, p in meta.get("peers", {}).items():
            ver = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
            settings.append(f"{name} ({ver}): {p['settings']}")
        counting = (
            "Peers' completion: every no-op handler INCRs a counter in Redis (the peers' own"
            " Redis database on the same Valkey); the one reaching N stamps the end time."
            " Those INCRs are in the peers' Redis CPU."
        )
        text += ["", title, report.text_table(h, rows), *ratios, *settings, counting]
        md += ["", "## jobhost and the peers", "", title, "", report.markdown_table(h, rows), ""]
        md += [*(f"- **{r}**" for r in ratios), "", "Settings:", ""]
        md += [*(f"- {line}" for line in settings), "", counting]
    notes = []
    busy = [s for s in [*dsum, *lsum] if (s.get("other_load") or 0) > 0.10]
    if busy:
        notes.append(
            f"WARNING: other processes used over 10% of the CPUs during {len(busy)}"
            " configuration(s) (other load column): those numbers are unreliable; rerun."
        )
    if meta.get("errors"):
        notes.append(f"FAILED measurements ({len(meta['errors'])}): " + "; ".join(meta["errors"]))
    text += ["", *notes] if notes else []
    md += ["", *(f"**{n}**" for n in notes)] if notes else []
    return "\n".join(text) + "\n", "\n".join(md) + "\n", [*dsum, *lsum, *psum]


# --- main ----------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.drain", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 5,000 runs, 1 repeat, 3 s paced (explicit flags still win)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="everything (about an hour): every jobhost variant (e2e, drain, limited) at W 1,2,4"
        " and C 10 and 200, and every peer at every --peer-configs pair with --runs jobs"
        " (explicit flags still win)",
    )
    p.add_argument("--runs", type=int, help="runs per drain measurement (default 20,000)")
    p.add_argument("--repeat", type=int, help="measurements per configuration (default 3)")
    p.add_argument("--batch", type=int, default=500, help="enqueue_many batch size (500)")
    p.add_argument("--workers", help="worker process counts (default 1,2; --full: 1,2,4)")
    p.add_argument(
        "--configs",
        help="worker configs C[:K[:P]], comma-separated: concurrency, claim batch"
        " (default 200), prefetch (default: adaptive, C to K); default 200:200 (--full:"
        " 10,200:200); jobhost also runs end-to-end at every --peer-configs pair",
    )
    p.add_argument(
        "--variants",
        help="e2e, drain and/or limited (drain with non-binding limits); default e2e,drain"
        " (--full: e2e,drain,limited)",
    )
    p.add_argument(
        "--types",
        default="",
        help="types the drain workers serve, comma-separated, or all (every"
        " registered type, as a worker started without --types); default noop",
    )
    p.add_argument("--rate", type=float, default=200.0, help="paced runs/s (200; 0: skip)")
    p.add_argument("--paced-seconds", type=float, help="paced stream length (default 10 s)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--name", help="results file stem (default latest, or quick with --quick)")
    p.add_argument(
        "--profile",
        default="",
        help="folder for cProfile stats of the producer and workers (first repeat)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        help="before each measurement, wait up to this many seconds while other processes"
        " use over 10%% of the CPUs (default 120; 0: never wait)",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="measure again (up to this many times) when other processes used over 10%% of"
        " the CPUs during a measurement (default 2; the noisy one is kept in the JSON lines,"
        " marked discarded)",
    )
    p.add_argument(
        "--systems",
        default=",".join(["jobhost", *PEERS]),
        help=f"systems to measure, comma-separated: jobhost and/or {', '.join(PEERS)}"
        " (default all)",
    )
    p.add_argument(
        "--peer-configs",
        default="1:10,2:50",
        help="W:C pairs the peers drain at (worker processes : concurrency); jobhost also runs"
        " them end-to-end; default 1:10,2:50",
    )
    p.add_argument(
        "--peer-repeat", type=int, help="measurements per peer configuration (default --repeat)"
    )
    p.add_argument(
        "--peer-paced-seconds",
        type=float,
        default=5.0,
        help="paced stream length of the Python peers (default 5 s; --full: --paced-seconds;"
        " BullMQ always gets --paced-seconds)",
    )
    p.add_argument(
        "--peer-runs",
        type=int,
        default=2_000,
        help="jobs per drain of the Python peers, which also drain only at the first"
        " --peer-configs pair (default 2,000; --full: --runs at every pair; BullMQ always"
        " gets --runs at every pair)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the temp folder of logs")
    p.add_argument(
        "--subscriptions", type=int, default=0,
        help="notification subscriptions to every event (0): each run also writes its outbox rows",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    if set(args.systems) - {"jobhost", *PEERS}:
        p.error(f"--systems takes jobhost, {', '.join(PEERS)}")
    try:
        args.peer_configs = [
            (int(w), int(c))
            for w, c in (pc.split(":") for pc in args.peer_configs.split(",") if pc)
        ]
    except ValueError:
        p.error("--peer-configs takes W:C pairs, e.g. 1:10,2:50")
    quick = args.quick
    args.runs = args.runs or (5_000 if quick else 20_000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.paced_seconds = args.paced_seconds or (3.0 if quick else 10.0)
    args.name = args.name or ("quick" if quick else "full" if args.full else "latest")
    args.peer_repeat = args.peer_repeat or args.repeat
    full = args.full
    args.workers = [int(w) for w in (args.workers or ("1,2,4" if full else "1,2")).split(",") if w]
    configs = args.configs or ("10,200:200" if full else "200:200")
    args.configs = [WorkerConfig.parse(c) for c in configs.split(",") if c]
    variants = args.variants or ("e2e,drain,limited" if full else "e2e,drain")
    args.variants = [v for v in variants.split(",") if v]
    if set(args.variants) - set(VARIANTS):
        p.error(f"--variants takes {', '.join(VARIANTS)}")
    if not args.configs:
        p.error("--configs needs at least one worker config")
    return args


async def amain(args: argparse.Namespace, target: Target, logs: Path) -> int:
    """Run the benchmark and write the results; returns how many measurements failed."""
    bench = Bench(args, target, logs)
    try:
        await bench.open()
        meta = await environment(target, args)
        print("\n".join(header_lines(meta)), flush=True)
        if not target.pg_pid or not target.redis_pid:
            print("(servers are not local processes: their CPU is not measured)", flush=True)
        started = time.monotonic()
        await bench.run()
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
    finally:
        await bench.close()
    meta["errors"] = bench.errors
    text, md, summaries = render(meta, bench.results)
    print("\n" + text, flush=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    report.write_text(args.results_dir / f"{args.name}.md", md)
    report.write_jsonl(args.results_dir / f"{args.name}.jsonl", [meta, *bench.results, *summaries])
    print(f"wrote {args.results_dir / args.name}.md and .jsonl ({meta['elapsed_s']:g} s)")
    return len(bench.errors)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="jobhost-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    db_url, redis_url = os.environ.get(DB_ENV), os.environ.get(REDIS_ENV)
    servers = None
    try:
        if not (db_url and redis_url):
            print("starting embedded PostgreSQL and Valkey (default durability)...", flush=True)
            servers = EmbeddedServers(
                tmp / "servers", pg_port=None, redis_port=None, write_state=False
            )
            urls = servers.start()
        target = Target(
            database_url=db_url or urls.database_url,
            redis_url=redis_url or urls.redis_url,
            embedded=not (db_url and redis_url),
        )
        failures = asyncio.run(amain(args, target, logs))
        return 1 if failures else 0
    except ChildFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if servers is not None:
            servers.stop()
        if args.keep_logs:
            print(f"logs kept in {logs}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
