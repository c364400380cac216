"""The interface every peer module implements, and the context a measurement gives it.

A peer module (bench.peers.<name>) defines its no-op and stamp jobs the way its documentation
shows, and module-level:

    INFO       a Peer: versions, settings, worker command, whether it has a bulk enqueue API
    Producer   a class with async open() / single(i) / bulk(list of i) / stamp(t) / close()
               (the bench.peers.producer process drives it; BullMQ's producer is Node)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT

BULLMQ_DIR = ROOT / "bench" / "bullmq"
#: Broker URL of a peer module imported without BENCH_PEER_REDIS (by the orchestrator, for its
#: INFO): a port nothing listens on, so that it can never touch another Redis on this machine.
NOWHERE = "redis://127.0.0.1:1/15"


@dataclass(frozen=True)
class Ctx:
    """Where a measurement's peer keeps its state."""

    redis_url: str  #: the peers' own Redis database on the benchmark's Valkey
    database_url: str  #: a fresh PostgreSQL database (used by Procrastinate only)


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]  #: Python distributions (or npm packages) whose versions to report
    #: how it is run: pool, concurrency, prefetch, batching, polling, result keeping
    settings: str
    #: argv of one worker process with concurrency C (cwd: the repository root)
    worker_argv: Callable[[int, int, Ctx], list[str]]
    bulk: str = ""  #: name of the bulk enqueue API, "" when there is none
    startup_s: float = 1.0  #: time a worker needs before it takes jobs (then a warm-up runs)
    needs_postgres: bool = False
    producer_argv: list[str] = field(
        default_factory=lambda: [sys.executable, "-m", "bench.peers.producer"]
    )


def python_argv(*args: str) -> list[str]:
    """A console script of this virtualenv (the peers' CLIs), by path."""
    return [str(Path(sys.executable).parent / args[0]), *args[1:]]
