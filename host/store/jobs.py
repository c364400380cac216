"""Job definitions in PostgreSQL: create, read, pause, resume, delete, and the due-schedule
queries the scheduler leader runs (inside its epoch-checked transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from host.cron import Schedule, parse_schedule
from host.errors import JobExists
from host.store.db import Conn


@dataclass(frozen=True, slots=True)
class JobDef:
    """One job definition (a row of `jobs`)."""

    id: str
    tenant_id: str
    name: str
    type: str
    payload: dict[str, Any]
    schedule: Schedule | None  #: None: runs only when triggered
    priority: int | None  #: None: the type's priority
    enabled: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "tenant_id": self.tenant_id, "name": self.name, "type": self.type,
            "payload": self.payload,
            "schedule": self.schedule.as_dict() if self.schedule else None,
            "priority": self.priority, "enabled": self.enabled,
            "next_fire_at": _iso(self.next_fire_at), "last_fire_at": _iso(self.last_fire_at),
            "created_at": _iso(self.created_at),
        }  # fmt: skip


_COLUMNS = """id, tenant_id, name, type, payload::text AS payload, schedule::text AS schedule,
    priority, enabled, next_fire_at, last_fire_at, created_at"""


def _job(row: asyncpg.Record) -> JobDef:
    schedule = orjson.loads(row["schedule"]) if row["schedule"] else None
    return JobDef(
        id=str(row["id"]), tenant_id=row["tenant_id"], name=row["name"], type=row["type"],
        payload=orjson.loads(row["payload"]),
        schedule=parse_schedule(schedule) if schedule else None,
        priority=row["priority"], enabled=row["enabled"], next_fire_at=row["next_fire_at"],
        last_fire_at=row["last_fire_at"], created_at=row["created_at"],
    )  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def create_job(
    conn: Conn,
    *,
    tenant_id: str,
    name: str,
    type: str,
    payload: dict[str, Any],
    schedule: Schedule | None,
    priority: int | None,
    next_fire_at: datetime | None,
) -> JobDef:
    """Insert a job definition; JobExists when the tenant already has one of that name."""
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO jobs (tenant_id, name, type, payload, schedule, priority,
                                  next_fire_at)
                VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7)
                RETURNING {_COLUMNS}""",
            tenant_id,
            name,
            type,
            orjson.dumps(payload).decode(),
            orjson.dumps(schedule.as_dict()).decode() if schedule else None,
            priority,
            next_fire_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise JobExists(name) from exc
    assert row is not None
    return _job(row)


async def get_job(conn: Conn, tenant_id: str, name: str) -> JobDef | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM jobs WHERE tenant_id = $1 AND name = $2", tenant_id, name
    )
    return _job(row) if row else None


async def list_jobs(conn: Conn, tenant_id: str) -> list[JobDef]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE tenant_id = $1 ORDER BY name", tenant_id
    )
    return [_job(row) for row in rows]


async def set_enabled(
    conn: Conn, tenant_id: str, name: str, enabled: bool, next_fire_at: datetime | None
) -> JobDef | None:
    """Pause or resume; a resumed schedule starts again from `next_fire_at` (ticks that passed
    while paused are not owed)."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET enabled = $3, next_fire_at = $4, updated_at = now()
            WHERE tenant_id = $1 AND name = $2
            RETURNING {_COLUMNS}""",
        tenant_id,
        name,
        enabled,
        next_fire_at,
    )
    return _job(row) if row else None


async def update_job(
    conn: Conn,
    tenant_id: str,
    name: str,
    *,
    payload: dict[str, Any],
    schedule: Schedule | None,
    priority: int | None,
    enabled: bool,
    next_fire_at: datetime | None,
) -> JobDef | None:
    """Replace a definition's payload, schedule, priority, enabled flag and next tick."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET payload = $3::jsonb, schedule = $4::jsonb, priority = $5,
                            enabled = $6, next_fire_at = $7, updated_at = now()
            WHERE tenant_id = $1 AND name = $2
            RETURNING {_COLUMNS}""",
        tenant_id,
        name,
        orjson.dumps(payload).decode(),
        orjson.dumps(schedule.as_dict()).decode() if schedule else None,
        priority,
        enabled,
        next_fire_at,
    )
    return _job(row) if row else None


async def delete_job(conn: Conn, tenant_id: str, name: str) -> bool:
    """Delete a definition; its runs stay (their job_id becomes NULL)."""
    result: str = await conn.execute(
        "DELETE FROM jobs WHERE tenant_id = $1 AND name = $2", tenant_id, name
    )
    return result.endswith(" 1")


async def due_jobs(conn: asyncpg.Connection, limit: int) -> list[JobDef]:
    """Enabled scheduled jobs whose next tick has come, locked for this transaction."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM jobs
            WHERE enabled AND next_fire_at IS NOT NULL AND next_fire_at <= now()
            ORDER BY next_fire_at
            LIMIT $1
            FOR UPDATE""",
        limit,
    )
    return [_job(row) for row in rows]


async def next_due_at(conn: Conn) -> datetime | None:
    """The earliest next tick of any enabled schedule."""
    value: datetime | None = await conn.fetchval(
        "SELECT min(next_fire_at) FROM jobs WHERE enabled AND next_fire_at IS NOT NULL"
    )
    return value


async def advance(conn: Conn, moves: Sequence[tuple[str, datetime, datetime | None]]) -> None:
    """Set (job id, next_fire_at, last_fire_at or None to keep) for many jobs at once."""
    if not moves:
        return
    await conn.execute(
        """UPDATE jobs j
           SET next_fire_at = m.next_fire_at,
               last_fire_at = COALESCE(m.last_fire_at, j.last_fire_at)
           FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[])
                AS m(id, next_fire_at, last_fire_at)
           WHERE j.id = m.id""",
        [uuid.UUID(m[0]) for m in moves],
        [m[1] for m in moves],
        [m[2] for m in moves],
    )
