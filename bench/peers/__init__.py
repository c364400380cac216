"""The peer systems of the benchmark: one module per peer, one interface (see bench.peers.base)."""

from __future__ import annotations

#: Every peer, in the order the benchmark measures them (module bench.peers.<name>).
PEERS = ("bullmq", "dramatiq", "taskiq", "saq", "arq", "celery", "procrastinate", "rq")
