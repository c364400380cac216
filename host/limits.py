"""Per-type rate and concurrency limits: what is in force, and publishing it to Redis.

The claim script enforces limits atomically on the Redis clock, so they hold across any number
of workers on any number of machines. What is in force for a type is its policy (plugin defaults,
then plugins.toml) overlaid by a run-time override stored in PostgreSQL (`jobhost limits set`).
Workers publish it at start and the CLI at every change, so a change needs no restart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from host.errors import ConfigError
from host.policy import Policy, check_policy, parse_rate
from host.queue.queue import Queue
from host.registry import Registry

#: Fields an override may set, and those it may lift (make unlimited).
LIMIT_FIELDS = ("rate", "burst", "concurrency", "lane_rate", "lane_burst", "lane_concurrency")
LIFTABLE = ("rate", "concurrency", "lane_rate", "lane_concurrency")


@dataclass(frozen=True)
class Limits:
    rate: str | None = None  #: "10/s"; None: unlimited
    burst: int | None = None  #: bucket capacity; None: one second's worth of the rate
    concurrency: int | None = None  #: most in flight at once; None: unlimited
    lane_rate: str | None = None  #: the same three, for each lane of the type
    lane_burst: int | None = None
    lane_concurrency: int | None = None

    @classmethod
    def of(cls, policy: Policy) -> Limits:
        return cls(*(getattr(policy, f) for f in LIMIT_FIELDS))

    def encode(self) -> str | None:
        """The claim script's form, "rate|burst|concurrency|lane_rate|lane_burst|lane_concurrency"
        (rates per second, empty fields unlimited), or None when nothing is limited."""
        type_part = _encode(self.rate, self.burst, self.concurrency)
        lane_part = _encode(self.lane_rate, self.lane_burst, self.lane_concurrency)
        if type_part is None and lane_part is None:
            return None
        return f"{type_part or '||'}|{lane_part or '||'}"

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in LIMIT_FIELDS}


def _encode(rate: str | None, burst: int | None, concurrency: int | None) -> str | None:
    if rate is None and concurrency is None:
        return None
    per_s = parse_rate(rate) if rate is not None else None
    if per_s is not None and burst is None:
        burst = max(1, int(per_s))  # one second's worth
    fields = (per_s, burst if per_s is not None else None, concurrency)
    return "|".join("" if v is None else repr(v) for v in fields)


def apply_override(limits: Limits, override: dict[str, Any] | None) -> Limits:
    if not override:
        return limits
    changes = {f: override[f] for f in LIMIT_FIELDS if override.get(f) is not None}
    for lifted in override.get("unlimited") or ():
        changes[lifted] = None
        if lifted.endswith("rate"):
            changes[lifted.replace("rate", "burst")] = None
    return replace(limits, **changes)


async def load_overrides(conn: asyncpg.Pool | asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT type, rate, burst, concurrency, lane_rate, lane_burst, lane_concurrency, "
        "unlimited FROM type_limits "
        "WHERE tenant_id = 'default'"
    )
    return {row["type"]: dict(row) for row in rows}


async def effective_limits(
    registry: Registry, conn: asyncpg.Pool | asyncpg.Connection
) -> dict[str, Limits]:
    overrides = await load_overrides(conn)
    return {
        name: apply_override(Limits.of(jt.policy), overrides.get(name))
        for name, jt in registry.types.items()
    }


async def publish(queue: Queue, limits: dict[str, Limits]) -> None:
    """Write the limits in force to Redis; unlimited types are removed from the limits hash."""
    await queue.set_limits({name: lim.encode() for name, lim in limits.items()})


async def set_override(
    conn: asyncpg.Pool | asyncpg.Connection,
    registry: Registry,
    job_type: str,
    *,
    unlimited: tuple[str, ...] = (),
    **changes: Any,
) -> Limits:
    """Store a run-time override of LIMIT_FIELDS (merged into any earlier one) and return the
    limits in force."""
    jt = registry.get(job_type)
    unknown = set(changes) - set(LIMIT_FIELDS)
    if unknown:
        raise ConfigError(f"unknown limit field(s): {', '.join(sorted(unknown))}")
    current = (await load_overrides(conn)).get(job_type) or {}
    merged = {f: current.get(f) for f in LIMIT_FIELDS}
    merged |= {k: v for k, v in changes.items() if v is not None}
    lifted = set(current.get("unlimited") or ()) - {k for k, v in merged.items() if v is not None}
    for name in unlimited:
        if name not in LIFTABLE:
            raise ConfigError(f"only {', '.join(LIFTABLE)} can be made unlimited, not {name!r}")
        lifted.add(name)
        merged[name] = None
    override = {**merged, "unlimited": sorted(lifted)}
    result = apply_override(Limits.of(jt.policy), override)
    check_policy(replace(jt.policy, **result.as_dict()), where=f"limits for job type {job_type!r}")
    await conn.execute(
        """INSERT INTO type_limits (type, rate, burst, concurrency, lane_rate, lane_burst,
                                    lane_concurrency, unlimited)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (tenant_id, type) DO UPDATE SET rate = $2, burst = $3,
               concurrency = $4, lane_rate = $5, lane_burst = $6, lane_concurrency = $7,
               unlimited = $8, updated_at = now()""",
        job_type,
        *(override[f] for f in LIMIT_FIELDS),
        override["unlimited"],
    )
    return result


async def reset_override(
    conn: asyncpg.Pool | asyncpg.Connection, registry: Registry, job_type: str
) -> Limits:
    """Drop the run-time override; the policy's limits are in force again."""
    jt = registry.get(job_type)
    await conn.execute("DELETE FROM type_limits WHERE type = $1", job_type)
    return Limits.of(jt.policy)
