"""Retention: delete finished runs (with their attempts) older than `retention_days` (dead
runs, the dead letters, after `dead_retention_days`, longer by default) and finished
notification deliveries after `retention_days`, in bounded batches so
a large backlog never holds long locks or one huge transaction.

Pruning old cron runs is safe for cron de-duplication: a tick is fired only from a job's
`next_fire_at` onward, which moves forward in the same transaction as the fire, so a pruned
tick is never fired again.
"""

from __future__ import annotations

import logging

import asyncpg

from host.notify import store as notify_store
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
    dead_retention_days: float = 0.0,
    batch: int = BATCH,
    max_batches: int = 10,
) -> int:
    """Delete up to `batch * max_batches` expired runs of each kind, one transaction per batch;
    returns how many. 0 days keeps that kind."""
    total = 0
    kinds = [(retention_days, ("succeeded", "cancelled")), (dead_retention_days, ("dead",))]
    for days, states in kinds:
        if days <= 0:
            continue
        pruned = 0
        for _ in range(max_batches):
            async with fenced(pool, namespace, term) as conn:
                deleted = await run_store.prune_finished(conn, days * 86400, batch, states)
            pruned += deleted
            if deleted < batch:
                break
        if pruned:
            log.info("pruned %d %s runs older than %g days", pruned, "/".join(states), days)
        total += pruned
    if retention_days > 0:
        await _prune_deliveries(pool, namespace, term, retention_days, batch, max_batches)
    return total


async def _prune_deliveries(
    pool: asyncpg.Pool, namespace: str, term: Term, days: float, batch: int, max_batches: int
) -> None:
    """Delivered or failed notifications (with their attempts) go after `retention_days` too."""
    pruned = 0
    for _ in range(max_batches):
        async with fenced(pool, namespace, term) as conn:
            deleted = await notify_store.prune_deliveries(conn, days * 86400, batch)
        pruned += deleted
        if deleted < batch:
            break
    if pruned:
        log.info("pruned %d finished deliveries older than %g days", pruned, days)
