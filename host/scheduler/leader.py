"""The scheduler leader lease, and the PostgreSQL epoch check that fences its writes.

Redis decides who leads: `SET NX PX` with a random owner id, renewed by compare-and-extend every
third of the lease, given up by compare-and-delete; each acquisition gets a fencing epoch from
INCR (lifted above PostgreSQL's highest, should Redis have lost its counter). Redis alone cannot
stop a leader that froze past its lease (GC pause, SIGSTOP) from acting when it wakes, so:

- locally, a leader only acts while its lease is valid by its own monotonic clock, counted from
  the moment it *sent* the last successful renewal (a frozen process wakes up knowing it lost);
- in PostgreSQL, every leader write runs in a transaction that first moves the
  `scheduler_leader` row to its epoch, or finds it already there under its own owner id. A newer
  epoch recorded there means a newer leader exists: the transaction fails with StaleLeader and
  the leader steps down. The row lock also orders an old leader's in-flight transaction before
  the new leader's first one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from host.errors import StaleLeader
from host.queue.keys import Keys
from host.queue.scripts import Scripts

log = logging.getLogger("jobhost.scheduler")

_CLAIM_EPOCH = """
INSERT INTO scheduler_leader (namespace, epoch, owner) VALUES ($1, $2, $3)
ON CONFLICT (namespace) DO UPDATE
    SET epoch = EXCLUDED.epoch, owner = EXCLUDED.owner, updated_at = now()
    WHERE scheduler_leader.epoch < EXCLUDED.epoch
       OR (scheduler_leader.epoch = EXCLUDED.epoch AND scheduler_leader.owner = EXCLUDED.owner)
RETURNING epoch
"""


@dataclass(frozen=True, slots=True)
class Term:
    """One tenure as leader."""

    owner: str
    epoch: int


class LeaderLease:
    """One process's side of the leader election for a namespace."""

    def __init__(self, redis: Redis, keys: Keys, lease_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.lease_ms = int(lease_s * 1000)
        self._scripts = Scripts(redis)
        self.term: Term | None = None
        self._valid_until = 0.0  # monotonic

    @property
    def is_leader(self) -> bool:
        """True while this process holds a lease that is still valid by its own clock."""
        return self.term is not None and time.monotonic() < self._valid_until

    async def try_acquire(self, floor: int) -> Term | None:
        """Take the lease if it is free; `floor` is the highest epoch PostgreSQL has seen."""
        owner = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(6).hex()}"
        sent = time.monotonic()
        epoch, _ = await self._scripts.call(
            "leader_acquire",
            [self.keys.leader, self.keys.leader_epoch],
            [owner, self.lease_ms, floor],
        )
        if int(epoch) == 0:
            return None
        self.term = Term(owner, int(epoch))
        self._valid_until = sent + self.lease_ms / 1000
        return self.term

    async def renew(self) -> bool:
        """Extend the lease; False (and no longer leader) when another process holds it."""
        if self.term is None:
            return False
        sent = time.monotonic()
        ok = await self._scripts.call(
            "leader_renew", [self.keys.leader], [self.term.owner, self.lease_ms]
        )
        if int(ok) != 1:
            self.term = None
            return False
        self._valid_until = sent + self.lease_ms / 1000
        return True

    async def release(self) -> None:
        """Give the lease up (on shutdown or after a stale-epoch rejection)."""
        term, self.term = self.term, None
        if term is not None:
            await self._scripts.call("leader_release", [self.keys.leader], [term.owner])

    def demote(self) -> None:
        """Stop acting as leader at once (the lease is left to expire or to its new owner)."""
        self.term = None


async def recorded_epoch(conn: asyncpg.Pool | asyncpg.Connection, namespace: str) -> int:
    """The highest leader epoch PostgreSQL has seen for a namespace (0 if none)."""
    value = await conn.fetchval(
        "SELECT epoch FROM scheduler_leader WHERE namespace = $1", namespace
    )
    return int(value or 0)


@contextlib.asynccontextmanager
async def fenced(
    pool: asyncpg.Pool, namespace: str, term: Term
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that only commits leader writes while `term` is the newest epoch.
    Raises StaleLeader (rolling back) when a newer epoch has been recorded."""
    async with pool.acquire() as conn, conn.transaction():
        accepted = await conn.fetchval(_CLAIM_EPOCH, namespace, term.epoch, term.owner)
        if accepted is None:
            current = await recorded_epoch(conn, namespace)
            raise StaleLeader(term.epoch, current)
        yield conn
