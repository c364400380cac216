"""The orchestrator's side of the child processes, and CPU / memory readings of any process.

CPU of a process tree = user + system time of the root and of every live descendant, plus
their reaped-children times (cutime + cstime). PostgreSQL forks a backend per connection and
autovacuum workers that come and go: their CPU lands in the postmaster's children times once it
has reaped them, so a difference of two readings counts every process that lived in between.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.common import ROOT


class ChildFailed(RuntimeError):
    pass


class Child:
    """A benchmark child process speaking the line protocol of bench.common."""

    def __init__(self, name: str, module: str, args: list[str], log: Path) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", module, *args]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        err = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
            )
        finally:
            os.close(err)

    def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.write(command.encode() + b"\n")

    async def expect(self, event: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """The next message, which must be `event`; ChildFailed (with its stderr) otherwise."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise ChildFailed(
                f"{self.name}: no {event!r} within {timeout_s:g}s\n{self.tail()}"
            ) from None
        if not line:
            code = await self.proc.wait()
            raise ChildFailed(f"{self.name} exited ({code}) before {event!r}\n{self.tail()}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise ChildFailed(f"{self.name}: expected {event!r}, got {message}\n{self.tail()}")
        return message

    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def finish(self, timeout_s: float = 60.0) -> None:
        """Close stdin (a child treats it as "stop"/"exit") and wait; kill it past the timeout."""
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def tree_cpu_s(pid: int | None) -> float | None:
    """CPU seconds used so far by `pid` and its descendants (see the module docstring)."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        children = root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for child in children:
        try:
            c = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # exited meanwhile: counted in its parent's children times once reaped
        total += c.user + c.system + c.children_user + c.children_system
    return float(total)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set size) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def local_process(pid: int | None, names: tuple[str, ...]) -> int | None:
    """`pid` if it is a live local process whose name contains one of `names` (servers given by
    URL may be remote, where a pid of the same number means nothing)."""
    if pid is None:
        return None
    try:
        name = psutil.Process(pid).name().lower()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid if any(n in name for n in names) else None


def parent_pid(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).ppid())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
