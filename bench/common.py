"""What the benchmark's processes share: settings, the registry, and the line protocol.

The orchestrator (bench.drain) talks to each child process (bench.worker_proc,
bench.producer_proc) with one command per line on the child's stdin ("go", "stop", "exit") and
one JSON object per line on its stdout ({"event": ...}). Children log to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from host.config import Settings, load_plugins_config
from host.registry import Registry, load_registry

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_FILE = ROOT / "plugins.toml"


def bench_settings(database_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        namespace=namespace,
        plugins_file=PLUGINS_FILE,
        state_dir=ROOT / ".jobhost",  # unused: both URLs are given
    )


def bench_registry() -> Registry:
    """The bundled plugins (plugins.toml) plus bench.plugin's `bench.stamp`."""
    from bench import plugin

    return load_registry(load_plugins_config(PLUGINS_FILE), extra=[plugin])


def emit(event: str, **fields: Any) -> None:
    """Tell the orchestrator something, as one JSON line on stdout."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """This process's stdin as an asyncio stream (commands from the orchestrator)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def next_command(reader: asyncio.StreamReader) -> str:
    """The next command line; "" when the orchestrator has gone (stdin closed)."""
    line = await reader.readline()
    return line.decode().strip() if line else ""


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
