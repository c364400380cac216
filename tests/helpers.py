"""Shared test helpers: an in-process worker, and reading the handlers' execution log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from host.scheduler.scheduler import Scheduler
from host.services import Services
from host.worker.worker import Worker


@contextlib.asynccontextmanager
async def running_worker(services: Services, **options: Any) -> AsyncIterator[Worker]:
    """A worker running in this event loop; stopped gracefully on exit."""
    stop = asyncio.Event()
    worker = Worker(services, **options)
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def running_scheduler(services: Services) -> AsyncIterator[Scheduler]:
    """A scheduler running in this event loop; stopped (lease released) on exit."""
    stop = asyncio.Event()
    scheduler = Scheduler(services)
    task = asyncio.create_task(scheduler.run(stop))
    try:
        yield scheduler
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def recorded(services: Services) -> dict[str, str]:
    """Payload fields that make tests/plugin_fixtures.py record executions in Redis."""
    assert services.settings.redis_url
    return {"redis_url": services.settings.redis_url, "namespace": services.settings.namespace}


async def executions(services: Services) -> list[dict[str, Any]]:
    """Every execution the test handlers recorded, in order."""
    key = f"jh:{{{services.settings.namespace}}}:test:log"
    rows = await services.redis.lrange(key, 0, -1)
    out = []
    for row in rows:
        event, k, run_id, attempt, pid, at = row.decode().split("|")
        out.append(
            {"event": event, "key": k, "run_id": run_id, "attempt": int(attempt),
             "pid": int(pid), "at": float(at)}
        )  # fmt: skip
    return out


async def wait_until(predicate: Any, timeout_s: float = 20.0, interval_s: float = 0.05) -> None:
    """Poll an async predicate until it is true; fail the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


ROOT = Path(__file__).resolve().parent.parent


def jobhost(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start `jobhost ARGS` as a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "host", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return err
