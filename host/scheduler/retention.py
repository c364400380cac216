"""Retention: delete finished runs (with their attempts) older than `retention_days` (dead
runs, the dead letters, after `dead_retention_days`, longer by default), finished notification
deliveries and the inbound webhook delivery log after `retention_days`, and inbound replay
rows by the policy below, in bounded batches so a large backlog never holds long locks or one
huge transaction. Pending deliveries whose subscription was deleted meanwhile go on every pass,
whatever the retention.

Pruning old cron runs is safe for cron de-duplication: a tick is fired only from a job's
`next_fire_at` onward, which moves forward in the same transaction as the fire, so a pruned
tick is never fired again.

Replay rows (`trigger_replays`) answer a repeated delivery id with its first run. For schemes
that sign a timestamp (Standard Webhooks, Stripe, generic HMAC with a timestamp header) a
captured delivery is refused as stale after its tolerance (at most a day) anyway, so their rows
go after `retention_days`, but never before REPLAY_FLOOR_S: senders retry the same id for days
with fresh signatures (Stripe up to 3 days). For schemes without a timestamp (GitHub, plain
HMAC) the replay row is the only defence against a captured delivery sent again, so their rows
are kept unless `replay_retention_days` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg

from host.notify import store as notify_store
from host.scheduler.leader import Term, fenced
from host.store import runs as run_store
from host.store import triggers as trigger_store

log = logging.getLogger("jobhost.scheduler")

BATCH = 1000
#: Replay rows of timestamped schemes are kept at least this long (7 days).
REPLAY_FLOOR_S = 7 * 86400.0

#: One batch: (connection, older_than_s, limit) -> rows deleted.
Pruner = Callable[[asyncpg.Connection, float, int], Awaitable[int]]


async def prune(
    pool: asyncpg.Pool,
    namespace: str,
    term: Term,
    retention_days: float,
    *,
    dead_retention_days: float = 0.0,
    replay_retention_days: float = 0.0,
    batch: int = BATCH,
    max_batches: int = 10,
) -> int:
    """Delete up to `batch * max_batches` expired rows of each kind, one transaction per batch;
    returns how many runs. 0 days keeps that kind."""
    total = 0
    kinds = [(retention_days, ("succeeded", "cancelled")), (dead_retention_days, ("dead",))]
    for days, states in kinds:
        if days > 0:
            total += await _batched(
                pool, namespace, term, f"{'/'.join(states)} runs", days * 86400,
                _runs(states), batch, max_batches,
            )  # fmt: skip
    # Whatever the retention: nothing else ever removes these (see prune_orphaned).
    tables: list[tuple[str, float, Pruner]] = [
        ("pending deliveries of deleted subscriptions", 0.0, notify_store.prune_orphaned),
    ]
    if retention_days > 0:
        tables += [
            ("finished deliveries", retention_days * 86400, notify_store.prune_deliveries),
            ("inbound webhook deliveries", retention_days * 86400, trigger_store.prune_deliveries),
            ("replay rows of timestamped triggers", max(retention_days * 86400, REPLAY_FLOOR_S),
             lambda conn, age, n: trigger_store.prune_replays(conn, age, n, timed=True)),
        ]  # fmt: skip
    if replay_retention_days > 0:
        tables.append(
            ("replay rows of triggers without timestamps", replay_retention_days * 86400,
             lambda conn, age, n: trigger_store.prune_replays(conn, age, n, timed=False)),
        )  # fmt: skip
    for what, age, pruner in tables:
        await _batched(pool, namespace, term, what, age, pruner, batch, max_batches)
    return total


def _runs(states: tuple[str, ...]) -> Pruner:
    async def prune_runs(conn: asyncpg.Connection, older_than_s: float, limit: int) -> int:
        return await run_store.prune_finished(conn, older_than_s, limit, states)

    return prune_runs


async def _batched(
    pool: asyncpg.Pool, namespace: str, term: Term, what: str, older_than_s: float,
    pruner: Pruner, batch: int, max_batches: int,
) -> int:  # fmt: skip
    """Up to `max_batches` fenced transactions of `batch` deletions each."""
    pruned = 0
    for _ in range(max_batches):
        async with fenced(pool, namespace, term) as conn:
            deleted = await pruner(conn, older_than_s, batch)
        pruned += deleted
        if deleted < batch:
            break
    if pruned:
        age = f" older than {older_than_s / 86400:g} days" if older_than_s else ""
        log.info("pruned %d %s%s", pruned, what, age)
    return pruned
