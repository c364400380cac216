"""The queue: typed calls to the Lua scripts, plus the wake-up wait and depth counts.

It carries out decisions (what to enqueue, when to retry); it does not make them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from host.encoding import as_text
from host.queue.keys import Keys
from host.queue.scripts import Scripts

#: How long a token that ends a worker's wait stays if that worker does not take it.
WORKER_WAKE_TTL_MS = 10_000


@dataclass(slots=True)
class QueuedRun:
    """A run as the enqueue script takes it."""

    id: str
    type: str
    priority: int
    max_attempts: int
    delay_ms: int  #: 0 for ready now
    envelope: bytes  #: JSON the worker needs to start the run
    attempts_done: int = 0  #: attempts already made (reconciliation restores the count)
    lane: str = "default"  #: the ready queue within its type (tenant, or tenant and key)


@dataclass(frozen=True, slots=True)
class Lease:
    """A claimed run: its attempt number and envelope, and the token that fences its results."""

    id: str
    attempt: int
    envelope: bytes
    token: str


@dataclass(frozen=True, slots=True)
class ClaimResult:
    now_ms: int  #: the Redis clock at the claim
    next_due_ms: int  #: when nothing was claimed: ms until a delayed run is due, -1 for none
    leases: list[Lease] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DyingRun:
    """A run whose last lease expired with no attempts left: to be recorded dead, then buried."""

    id: str
    attempt: int
    token: str


@dataclass(frozen=True, slots=True)
class ReapResult:
    requeued: int
    dying: list[DyingRun]


class Queue:
    """One namespace's queue on one Redis client."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self._scripts = Scripts(redis)

    async def enqueue(self, runs: Sequence[QueuedRun]) -> list[str]:
        """Add runs; returns the ids Redis already knew (skipped, not duplicated)."""
        if not runs:
            return []
        k = self.keys
        batch = orjson.dumps(
            [
                [r.id, r.type, r.lane, r.priority, r.max_attempts, r.delay_ms, r.attempts_done,
                 r.envelope.decode()]
                for r in runs
            ]
        )  # fmt: skip
        out = await self._scripts.call(
            "enqueue", [k.env, k.meta, k.delayed, k.types, k.wake, k.att], [k.prefix, batch]
        )
        return [as_text(x) for x in out[1:]]

    def _claim_call(
        self, worker_id: str, types: Sequence[str], limit: int, lease_ms: int, promote_limit: int
    ) -> tuple[list[str], list[Any]]:
        k = self.keys
        keys = [k.inflight, k.env, k.att, k.owner, k.delayed, k.meta, k.wake]
        keys += [k.limits, k.buckets, k.active, k.throttled, k.ring]
        return keys, [k.prefix, limit, lease_ms, worker_id, promote_limit, *types]

    async def claim(
        self,
        worker_id: str,
        types: Sequence[str],
        limit: int,
        lease_ms: int,
        promote_limit: int = 1000,
    ) -> ClaimResult:
        """Lease up to `limit` runs of `types`, highest priority first."""
        keys, args = self._claim_call(worker_id, types, limit, lease_ms, promote_limit)
        return self._claimed(worker_id, await self._scripts.call("claim", keys, args))

    async def wait_and_claim(
        self,
        worker_id: str,
        types: Sequence[str],
        limit: int,
        lease_ms: int,
        timeout_s: float,
        promote_limit: int = 1000,
    ) -> ClaimResult:
        """Block until a wake token (or `timeout_s`), then claim as `claim` does, in one round
        trip: BLPOP and the claim script go out together on one connection, and Redis runs the
        claim the moment the BLPOP returns (an idle worker's pickup saves the claim's own round
        trip). `worker_wake(worker_id)` ends the wait early (a stopping worker); the claim
        still runs, so its leases must be handled (or released) as any claim's."""
        keys, args = self._claim_call(worker_id, types, limit, lease_ms, promote_limit)
        wait = [self.keys.wake, self.keys.worker_wake(worker_id)]
        pipe = self.redis.pipeline(transaction=False)
        pipe.blpop(wait, timeout=max(timeout_s, 0.001))
        pipe.evalsha(self._scripts.sha("claim"), len(keys), *keys, *args)
        _, out = await pipe.execute(raise_on_error=False)
        if isinstance(out, NoScriptError):  # Redis restarted or flushed its scripts
            out = await self._scripts.call("claim", keys, args)
        elif isinstance(out, Exception):
            raise out
        return self._claimed(worker_id, out)

    async def interrupt_wait(self, worker_id: str) -> None:
        """End a `wait_and_claim` of this worker now (the token expires if nobody takes it)."""
        key = self.keys.worker_wake(worker_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.pexpire(key, WORKER_WAKE_TTL_MS)
        await pipe.execute()

    def _claimed(self, worker_id: str, out: list[Any]) -> ClaimResult:
        """Leases from the claim script's flat reply: now, next due, then (id, attempt, envelope)
        per run. Built in one pass per claim (up to claim_batch runs each time)."""
        prefix = worker_id + ":"
        leases = [
            Lease(
                run_id.decode() if isinstance(run_id, bytes) else run_id,
                attempt, envelope, prefix + str(attempt),
            )
            for run_id, attempt, envelope in zip(
                out[2::3], map(int, out[3::3]), out[4::3], strict=True
            )
        ]  # fmt: skip
        return ClaimResult(int(out[0]), int(out[1]), leases)

    async def ack(self, leases: Sequence[tuple[str, str]]) -> list[str]:
        """Forget finished runs given as (id, token); returns the ids fenced off."""
        if not leases:
            return []
        k = self.keys
        keys = [k.inflight, k.env, k.meta, k.att, k.owner, k.progress, k.active, k.limits, k.wake]
        out = await self._scripts.call("ack", keys, [orjson.dumps(leases)])
        return [as_text(x) for x in out[1:]]

    async def retry(self, leases: Sequence[tuple[str, str, int]]) -> list[str]:
        """Release (id, token, delay_ms) runs to retry later; returns the ids fenced off."""
        if not leases:
            return []
        k = self.keys
        keys = [k.inflight, k.owner, k.delayed, k.wake, k.progress, k.meta, k.active, k.limits]
        out = await self._scripts.call("retry", keys, [orjson.dumps(leases)])
        return [as_text(x) for x in out[1:]]

    async def release(self, leases: Sequence[tuple[str, str]]) -> list[str]:
        """Hand (id, token) runs back unstarted, undoing their attempt count; returns fenced ids."""
        if not leases:
            return []
        k = self.keys
        keys = [k.inflight, k.owner, k.meta, k.att, k.wake, k.progress, k.active, k.limits]
        out = await self._scripts.call("release", keys, [k.prefix, orjson.dumps(leases)])
        return [as_text(x) for x in out[1:]]

    async def extend(self, leases: Sequence[tuple[str, str]], lease_ms: int) -> list[str]:
        """Extend leases still held; returns the ids whose lease was lost."""
        if not leases:
            return []
        k = self.keys
        out = await self._scripts.call(
            "extend", [k.inflight, k.owner], [lease_ms, orjson.dumps(leases)]
        )
        return [as_text(x) for x in out]

    async def reap(self, limit: int = 1000) -> ReapResult:
        """Requeue runs whose lease expired; report those whose attempts are spent."""
        k = self.keys
        out = await self._scripts.call(
            "reap",
            [k.inflight, k.meta, k.att, k.owner, k.dying, k.wake, k.active, k.limits],
            [k.prefix, limit],
        )
        dying = [
            DyingRun(as_text(out[i]), int(out[i + 1]), as_text(out[i + 2]))
            for i in range(1, len(out), 3)
        ]
        return ReapResult(int(out[0]), dying)

    async def bury(self, run_ids: Sequence[str]) -> int:
        """Forget dying runs once PostgreSQL records them dead."""
        if not run_ids:
            return 0
        k = self.keys
        keys = [k.dying, k.env, k.meta, k.att, k.owner, k.progress]
        return int(await self._scripts.call("bury", keys, list(run_ids)))

    async def promote(self, limit: int = 1000) -> int:
        """Move due delayed runs to their ready queues."""
        k = self.keys
        keys = [k.delayed, k.meta, k.wake]
        return int(await self._scripts.call("promote", keys, [k.prefix, limit]))

    async def cancel(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Take cancelled runs out of the queue; returns per id "removed", "in_flight" (left to
        its worker, whose finish PostgreSQL fences) or "unknown"."""
        if not run_ids:
            return {}
        k = self.keys
        keys = [k.env, k.meta, k.att, k.owner, k.delayed, k.inflight, k.progress]
        out = await self._scripts.call("cancel", keys, [k.prefix, *run_ids])
        names = {1: "removed", 0: "in_flight", -1: "unknown"}
        return {run_id: names[int(code)] for run_id, code in zip(run_ids, out, strict=True)}

    async def known(self, run_ids: Sequence[str], chunk: int = 1000) -> set[str]:
        """The ids Redis holds an envelope for (ready, delayed, in flight or dying), checked in
        pipelined batches."""
        found: set[str] = set()
        for start in range(0, len(run_ids), chunk):
            part = run_ids[start : start + chunk]
            pipe = self.redis.pipeline(transaction=False)
            for run_id in part:
                pipe.hexists(self.keys.env, run_id)
            flags = await pipe.execute()
            found.update(r for r, flag in zip(part, flags, strict=True) if flag)
        return found

    async def depths(self, types: Sequence[str]) -> dict[str, int]:
        """Ready runs per type, over all its lanes (delayed and in-flight runs are in shared
        sets: see totals)."""
        pipe = self.redis.pipeline(transaction=False)
        for t in types:
            pipe.zrange(self.keys.lanes(t), 0, -1)
        lanes = await pipe.execute()
        for t, names in zip(types, lanes, strict=True):
            for lane in names:
                pipe.zcard(self.keys.ready(t, as_text(lane)))
        counts = iter(await pipe.execute())
        return {
            t: sum(int(next(counts)) for _ in names) for t, names in zip(types, lanes, strict=True)
        }

    async def totals(self) -> dict[str, int]:
        """Whole-namespace counts: delayed, in flight and dying runs, and known envelopes."""
        pipe = self.redis.pipeline(transaction=False)
        k = self.keys
        for key in (k.delayed, k.inflight, k.dying):
            pipe.zcard(key)
        pipe.hlen(k.env)
        delayed, in_flight, dying, known = await pipe.execute()
        return {"delayed": delayed, "in_flight": in_flight, "dying": dying, "known": known}

    async def set_priority_ageing(self, seconds: float) -> None:
        """Waiting this long is worth one priority level (0: strict priority)."""
        await self.redis.hset(self.keys.config, "age_step_ms", int(seconds * 1000))

    async def set_limits(self, limits: dict[str, str | None]) -> None:
        """Set (or, for None, remove) each type's encoded limits, read by every claim."""
        pipe = self.redis.pipeline(transaction=True)
        for name, encoded in limits.items():
            if encoded is None:
                pipe.hdel(self.keys.limits, name)
            else:
                pipe.hset(self.keys.limits, name, encoded)
        await pipe.execute()

    async def limit_status(self, types: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per type: limits in force, tokens available now, runs in flight, throttled claims."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        for key in (k.limits, k.buckets, k.active, k.throttled):
            pipe.hmget(key, list(types))
        now_raw, limits, buckets, active, throttled = await pipe.execute()
        now_ms = int(now_raw[0]) * 1000 + int(now_raw[1]) // 1000
        out: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(types):
            fields: list[float | None] = [None] * 6
            if limits[i] is not None:
                fields = [float(f) if f else None for f in as_text(limits[i]).split("|")]
            rate, burst, concurrency, lane_rate, lane_burst, lane_concurrency = fields
            tokens = None
            if rate is not None and burst is not None:
                tokens = burst
                if buckets[i] is not None:
                    have, updated = (float(x) for x in as_text(buckets[i]).split("|"))
                    tokens = min(burst, have + max(0, now_ms - updated) * rate / 1000)
            out[name] = {
                "rate_per_s": rate,
                "burst": int(burst) if burst is not None else None,
                "concurrency": int(concurrency) if concurrency is not None else None,
                "lane_rate_per_s": lane_rate,
                "lane_burst": int(lane_burst) if lane_burst is not None else None,
                "lane_concurrency": int(lane_concurrency) if lane_concurrency else None,
                "tokens": round(tokens, 3) if tokens is not None else None,
                "in_flight": int(active[i] or 0),
                "throttled_claims": int(throttled[i] or 0),
            }
        return out

    async def known_types(self) -> list[str]:
        return sorted(as_text(t) for t in await self.redis.smembers(self.keys.types))

    async def attempts_started(self, run_id: str) -> int:
        value = await self.redis.hget(self.keys.att, run_id)
        return int(value) if value is not None else 0

    async def set_progress(self, run_id: str, report: bytes) -> None:
        await self.redis.hset(self.keys.progress, run_id, report)

    async def get_progress(self, run_id: str) -> bytes | None:
        value = await self.redis.hget(self.keys.progress, run_id)
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    async def delete_namespace(self) -> int:
        """Delete every key of this namespace (tests and `jobhost reset`); returns the count."""
        deleted = 0
        async for key in self.redis.scan_iter(match=self.keys.prefix.replace("{", "\\{") + "*"):
            deleted += int(await self.redis.delete(key))
        return deleted
