"""The scheduler in real processes, through the CLI (fault-matrix S1, S2, S3 in small): three
`jobhost scheduler` processes, every-second cron schedules, the leader SIGKILLed and SIGSTOPped
in turn. Each (job, tick) must have exactly one run, and no tick in the window may be missed.

The window is 30 s by default; set JOBHOST_SOAK_S (e.g. 600) for a long run.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from host.config import Settings
from host.services import Services
from tests.helpers import wait_until
from tests.test_processes import dev_folder, run_cli  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

LEASE_S = 2.0
WINDOW_S = float(os.environ.get("JOBHOST_SOAK_S", "30"))


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JOBHOST_DATABASE_URL": settings.database_url or "",
        "JOBHOST_REDIS_URL": settings.redis_url or "",
        "JOBHOST_NAMESPACE": settings.namespace,
        "JOBHOST_PLUGINS_FILE": str(ROOT / "plugins.toml"),
        "JOBHOST_LEADER_LEASE_S": str(LEASE_S),
        "JOBHOST_SCHEDULER_TICK_S": "0.2",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


class Schedulers:
    """`jobhost scheduler` processes, each logging JSON lines to its own file."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.procs: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}

    def spawn(self) -> int:
        log = self.folder / f"scheduler-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "host", "--log-format", "json", "scheduler"],
                cwd=ROOT, env=self.env, stdout=out, stderr=out,
            )  # fmt: skip
        self.procs[proc.pid] = (proc, log)
        return proc.pid

    def stop_all(self) -> dict[int, dict[str, int]]:
        """SIGCONT and SIGTERM every live process; returns each one's final stats."""
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        stats = {}
        for pid, (proc, log) in self.procs.items():
            proc.wait(30)
            found = re.search(r"SchedulerStats\(([^)]*)\)", log.read_text())
            if found:
                stats[pid] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found.group(1))}
        return stats


async def leader_pid(services: Services) -> int | None:
    owner = await services.redis.get(services.queue.keys.leader)
    return int(owner.decode().rsplit("-", 2)[1]) if owner else None


async def test_cli_manages_job_definitions(env: dict[str, str]) -> None:
    made = cli(env, "--json", "jobs", "create", "report", "--type", "noop", "--payload",
               '{"a": 1}', "--cron", "30 2 * * *", "--timezone", "Europe/Paris",
               "--misfire", "catch_up", "--catch-up-limit", "3", "--overlap", "skip")  # fmt: skip
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert job["schedule"]["misfire"] == "catch_up" and job["schedule"]["overlap"] == "skip"
    nxt = json.loads(cli(env, "--json", "jobs", "next", "report", "--count", "3").stdout)
    assert len(nxt["next"]) == 3 and nxt["next"][0] == job["next_fire_at"]
    listed = cli(env, "jobs", "list").stdout
    assert "report" in listed and "Europe/Paris" in listed and "enabled" in listed
    assert "paused" in cli(env, "jobs", "pause", "report").stdout
    assert "enabled" in cli(env, "jobs", "resume", "report").stdout
    triggered = json.loads(cli(env, "--json", "jobs", "trigger", "report").stdout)
    assert triggered["state"] == "queued"
    bad = cli(env, "--json", "jobs", "create", "x", "--type", "noop", "--cron", "nope")
    assert bad.returncode == 1 and json.loads(bad.stderr)["error"]["details"][0]["path"] == (
        "/schedule/cron"
    )
    assert cli(env, "jobs", "delete", "report").returncode == 0
    missing = cli(env, "jobs", "show", "report")
    assert missing.returncode == 1 and "job 'report' not found" in missing.stderr


async def test_leader_failover_fires_every_tick_exactly_once(
    services: Services, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = []
    for i in range(5):
        made = cli(env, "--json", "jobs", "create", f"tick-{i}", "--type", "noop",
                   "--cron", "* * * * * *")  # fmt: skip
        assert made.returncode == 0, made.stderr
        jobs.append(json.loads(made.stdout)["id"])
    group = Schedulers(env, tmp_path)
    for _ in range(3):
        group.spawn()
    faults: list[dict[str, object]] = []
    try:
        await wait_until(lambda: _has_leader(services), 20)
        started = time.monotonic()
        kinds = ["kill", "stop", "term"]
        frozen: list[int] = []
        while time.monotonic() - started < WINDOW_S - 4 * LEASE_S:
            await asyncio.sleep(2.5)
            victim = await leader_pid(services)
            assert victim is not None
            proc = group.procs[victim][0]
            kind = kinds[len(faults) % len(kinds)]
            at = time.monotonic()
            proc.send_signal(
                {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}[kind]
            )
            await wait_until(lambda v=victim: _led_by_other(services, v), 3 * LEASE_S, 0.02)
            takeover = time.monotonic() - at
            faults.append({"fault": kind, "takeover_s": round(takeover, 3)})
            if kind == "stop":  # frozen 2 x lease, then back: it must step down, not act
                await asyncio.sleep(max(0.0, 2 * LEASE_S - takeover))
                proc.send_signal(signal.SIGCONT)
                frozen.append(victim)
            else:
                proc.wait(30)
                group.spawn()
        await asyncio.sleep(2 * LEASE_S)
    finally:
        stats = group.stop_all()
    rows = await services.pool.fetch(
        """SELECT job_id::text AS job, scheduled_for, count(*) AS n FROM runs
           WHERE scheduled_for IS NOT NULL GROUP BY 1, 2""",
    )
    per_job: dict[str, list] = collections.defaultdict(list)
    for row in rows:
        per_job[row["job"]].append(row["scheduled_for"])
    duplicates = sum(row["n"] - 1 for row in rows)
    missed = 0
    for ticks in per_job.values():
        ticks.sort()
        missed += int((ticks[-1] - ticks[0]) / timedelta(seconds=1)) + 1 - len(ticks)
    fired = sum(s.get("fired", 0) for s in stats.values())
    report = {
        "id": "S1+S2-small", "window_s": WINDOW_S, "schedules": len(jobs), "faults": faults,
        "ticks": len(rows), "duplicate_fires": duplicates, "missed_fires": missed,
        "fired_by_processes": fired, "max_takeover_s": max(f["takeover_s"] for f in faults),
        "stale_rejections": sum(s.get("stale_rejections", 0) for s in stats.values()),
    }  # fmt: skip
    print(orjson.dumps(report).decode())
    assert set(per_job) == set(jobs)
    assert duplicates == 0 and missed == 0
    assert min(len(t) for t in per_job.values()) >= WINDOW_S - 10
    assert {f["fault"] for f in faults} == {"kill", "stop", "term"}
    # Takeover within the lease plus a follower's check interval (lease / 3), with slack; a
    # SIGTERMed leader releases the lease, so a follower takes it at its next check.
    assert report["max_takeover_s"] <= LEASE_S + LEASE_S / 3 + 1.0
    assert all(f["takeover_s"] <= LEASE_S / 3 + 1.0 for f in faults if f["fault"] == "term")
    for pid in frozen:  # the resumed old leader found its lease gone and stepped down
        assert "lost the leader lease" in group.procs[pid][1].read_text()
    # Runs recorded by the surviving processes never exceed the rows (no double insert).
    assert fired <= len(rows)


async def _has_leader(services: Services) -> bool:
    return await leader_pid(services) is not None


async def _led_by_other(services: Services, pid: int) -> bool:
    current = await leader_pid(services)
    return current is not None and current != pid


def test_dev_runs_the_scheduler_next_to_the_worker(dev_folder: Path) -> None:  # noqa: F811
    made = run_cli("--json", "jobs", "create", "beat", "--type", "noop", "--cron", "* * * * * *",
                   cwd=dev_folder)  # fmt: skip
    assert made.returncode == 0, made.stderr
    deadline = time.monotonic() + 20
    while True:
        listed = run_cli("--json", "runs", "list", "--state", "succeeded", cwd=dev_folder)
        runs = json.loads(listed.stdout)["runs"]
        if len(runs) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(runs) >= 2 and all(r["scheduled_for"] for r in runs)
    shown = json.loads(run_cli("--json", "jobs", "show", "beat", cwd=dev_folder).stdout)
    assert shown["last_fire_at"] is not None
