"""Retention: delete finished runs (with their attempts) older than `retention_days`, in
bounded batches so a large backlog never holds long locks or one huge transaction.

Pruning old cron runs is safe for cron de-duplication: a tick is fired only from a job's
`next_fire_at` onward, which moves forward in the same transaction as the fire, so a pruned
tick is never fired again.
"""

from __future__ import annotations

import logging

import asyncpg

from host.scheduler.leader import Term, fenced
from host.store import runs as run_store

log = logging.getLogger("jobhost.scheduler")

BATCH = 1000


async def prune(
    pool: asyncpg.Pool,
    namespace: str,
    term: Term,
    retention_days: float,
    *,
    batch: int = BATCH,
    max_batches: int = 10,
) -> int:
    """Delete up to `batch * max_batches` expired runs, one transaction per batch; returns how
    many. 0 days keeps everything."""
    if retention_days <= 0:
        return 0
    total = 0
    for _ in range(max_batches):
        async with fenced(pool, namespace, term) as conn:
            deleted = await run_store.prune_finished(conn, retention_days * 86400, batch)
        total += deleted
        if deleted < batch:
            break
    if total:
        log.info("pruned %d runs finished more than %g days ago", total, retention_days)
    return total
