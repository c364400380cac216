"""Inbound webhook triggers in PostgreSQL: the triggers, their secrets, the delivery log and
the replay table. Every query of the management side is scoped by tenant; the receiving side
finds a trigger by its global hook id."""

from __future__ import annotations

import secrets as random_secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from host.errors import Conflict
from host.store.db import Conn, delete_counted


@dataclass(frozen=True, slots=True)
class Secret:
    id: str
    secret: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger (a row of `triggers`) with its active secrets."""

    id: str
    tenant_id: str
    name: str
    hook: str
    type: str | None
    job_id: str | None
    job: str | None  #: the definition's name, when it targets one
    scheme: str
    tolerance_s: int
    mapping: Any
    max_body_bytes: int
    rate_per_s: float | None
    burst: int | None
    options: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    secrets: list[Secret] = field(default_factory=list)


class TriggerExists(Conflict):
    """Raised when the tenant already has a trigger of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"trigger {name!r} already exists")


def new_hook_id() -> str:
    """The public, unguessable part of a trigger's URL (/hooks/<hook>): 128 random bits."""
    return "h_" + random_secrets.token_urlsafe(16)


_COLUMNS = """t.id, t.tenant_id, t.name, t.hook, t.type, t.job_id, j.name AS job, t.scheme,
    t.tolerance_s, t.mapping::text AS mapping, t.max_body_bytes, t.rate_per_s, t.burst,
    t.options::text AS options, t.enabled, t.created_at, t.updated_at"""
_FROM = "triggers t LEFT JOIN jobs j ON j.id = t.job_id"


def _trigger(row: asyncpg.Record, secrets: list[Secret]) -> Trigger:
    return Trigger(
        id=str(row["id"]), tenant_id=row["tenant_id"], name=row["name"], hook=row["hook"],
        type=row["type"], job_id=str(row["job_id"]) if row["job_id"] else None, job=row["job"],
        scheme=row["scheme"], tolerance_s=row["tolerance_s"],
        mapping=orjson.loads(row["mapping"]) if row["mapping"] is not None else None,
        max_body_bytes=row["max_body_bytes"], rate_per_s=row["rate_per_s"], burst=row["burst"],
        options=orjson.loads(row["options"]), enabled=row["enabled"],
        created_at=row["created_at"], updated_at=row["updated_at"], secrets=secrets,
    )  # fmt: skip


async def _with_secrets(conn: Conn, rows: list[asyncpg.Record]) -> list[Trigger]:
    if not rows:
        return []
    found = await conn.fetch(
        """SELECT id, trigger_id, secret, created_at FROM trigger_secrets
           WHERE trigger_id = ANY($1::uuid[]) ORDER BY created_at, id""",
        [r["id"] for r in rows],
    )
    by_trigger: dict[uuid.UUID, list[Secret]] = {}
    for s in found:
        by_trigger.setdefault(s["trigger_id"], []).append(
            Secret(str(s["id"]), s["secret"], s["created_at"])
        )
    return [_trigger(r, by_trigger.get(r["id"], [])) for r in rows]


async def create(
    pool: asyncpg.Pool, tenant_id: str, fields: dict[str, Any], secrets: list[str]
) -> Trigger:
    """Insert a trigger and its secrets; TriggerExists when the name is taken."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            trigger_id = await conn.fetchval(
                """INSERT INTO triggers (tenant_id, name, hook, type, job_id, scheme, tolerance_s,
                       mapping, max_body_bytes, rate_per_s, burst, options, enabled)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12::jsonb, $13)
                   RETURNING id""",
                tenant_id, fields["name"], new_hook_id(), fields.get("type"),
                fields.get("job_id"), fields["scheme"], fields["tolerance_s"],
                _json(fields.get("mapping")), fields["max_body_bytes"], fields.get("rate_per_s"),
                fields.get("burst"), orjson.dumps(fields.get("options", {})).decode(),
                fields.get("enabled", True),
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise TriggerExists(fields["name"]) from exc
        await add_secrets(conn, tenant_id, trigger_id, secrets)
        found = await get(conn, tenant_id, fields["name"])
    assert found is not None
    return found


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def add_secrets(
    conn: Conn, tenant_id: str, trigger_id: uuid.UUID | str, secrets: list[str]
) -> None:
    if secrets:
        await conn.execute(
            """INSERT INTO trigger_secrets (tenant_id, trigger_id, secret)
               SELECT $1, $2, s FROM unnest($3::text[]) AS s""",
            tenant_id, trigger_id, secrets,
        )  # fmt: skip


async def get(conn: Conn, tenant_id: str, name: str) -> Trigger | None:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE t.tenant_id = $1 AND t.name = $2", tenant_id, name
    )
    found = await _with_secrets(conn, rows)
    return found[0] if found else None


async def by_hook(conn: Conn, hook: str) -> Trigger | None:
    """The trigger behind /hooks/<hook>, of whichever tenant, with its secrets in the same
    query: every request to a hook, signed or not, costs one round trip here."""
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS}, s.ids, s.secrets, s.created
            FROM {_FROM} LEFT JOIN LATERAL (
                SELECT array_agg(id ORDER BY created_at, id) AS ids,
                       array_agg(secret ORDER BY created_at, id) AS secrets,
                       array_agg(created_at ORDER BY created_at, id) AS created
                FROM trigger_secrets WHERE trigger_id = t.id) s ON true
            WHERE t.hook = $1""",
        hook,
    )
    if row is None:
        return None
    ids, texts, created = row["ids"] or [], row["secrets"] or [], row["created"] or []
    return _trigger(
        row, [Secret(str(i), x, c) for i, x, c in zip(ids, texts, created, strict=True)]
    )


async def list_all(conn: Conn, tenant_id: str) -> list[Trigger]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE t.tenant_id = $1 ORDER BY t.name", tenant_id
    )
    return await _with_secrets(conn, rows)


#: Columns PATCH may set, with their SQL casts.
_SETTABLE = {
    "type": "", "job_id": "::uuid", "tolerance_s": "", "mapping": "::jsonb",
    "max_body_bytes": "", "rate_per_s": "", "burst": "", "options": "::jsonb", "enabled": "",
}  # fmt: skip


async def update(
    pool: asyncpg.Pool,
    tenant_id: str,
    name: str,
    changes: dict[str, Any],
    add: list[str],
    remove: list[str],
) -> Trigger | None:
    """Change columns, add and remove secrets in one transaction; None when there is no such
    trigger; Conflict when the change would leave it without a secret or a removed id is not
    one of its secrets."""
    async with pool.acquire() as conn, conn.transaction():
        trigger_id = await conn.fetchval(
            "SELECT id FROM triggers WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
            tenant_id, name,
        )  # fmt: skip
        if trigger_id is None:
            return None
        sets, args = [], [trigger_id]
        for column, value in changes.items():
            args.append(orjson.dumps(value).decode() if column in ("mapping", "options")
                        and value is not None else value)  # fmt: skip
            sets.append(f"{column} = ${len(args)}{_SETTABLE[column]}")
        if sets:
            await conn.execute(
                f"UPDATE triggers SET {', '.join(sets)}, updated_at = now() WHERE id = $1", *args
            )
        await add_secrets(conn, tenant_id, trigger_id, add)
        if remove:
            gone = await conn.fetch(
                """DELETE FROM trigger_secrets WHERE trigger_id = $1 AND id::text = ANY($2)
                   RETURNING id""",
                trigger_id, remove,
            )  # fmt: skip
            missing = set(remove) - {str(r["id"]) for r in gone}
            if missing:
                raise Conflict(f"trigger {name!r} has no secret {sorted(missing)[0]}")
        left = await conn.fetchval(
            "SELECT count(*) FROM trigger_secrets WHERE trigger_id = $1", trigger_id
        )
        if left == 0:
            raise Conflict(f"trigger {name!r} needs at least one secret: add one before removing")
        return await get(conn, tenant_id, name)


async def delete(conn: Conn, tenant_id: str, name: str) -> bool:
    result: str = await conn.execute(
        "DELETE FROM triggers WHERE tenant_id = $1 AND name = $2", tenant_id, name
    )
    return result.endswith(" 1")


# -- deliveries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received delivery, as the log keeps it."""

    trigger: Trigger
    outcome: str  #: accepted, replay, rejected
    reason: str  #: accepted, replay, or the rejection's code
    status: int  #: the HTTP status answered
    delivery_id: str | None = None
    run_id: str | None = None
    detail: str = ""


_LOG = """INSERT INTO trigger_deliveries (tenant_id, trigger_id, delivery_id, outcome, reason,
              status, run_id, detail)
          VALUES ($1, $2, $3, $4, $5, $6, $7::uuid, $8)"""


async def record(conn: Conn, d: Delivery) -> None:
    await conn.execute(
        _LOG, d.trigger.tenant_id, d.trigger.id, d.delivery_id, d.outcome, d.reason, d.status,
        d.run_id, d.detail[:1000],
    )  # fmt: skip


async def claim_delivery(
    conn: asyncpg.Connection, trigger_id: str, delivery_id: str, run_id: str
) -> str | None:
    """Inside the caller's transaction: claim `delivery_id` for `run_id`. None when claimed
    now; the earlier run's id when the delivery was seen before (a concurrent claim waits for
    the first transaction and then sees its row)."""
    claimed = await conn.fetchval(
        """INSERT INTO trigger_replays (trigger_id, delivery_id, run_id) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING run_id""",
        trigger_id, delivery_id, run_id,
    )  # fmt: skip
    if claimed is not None:
        return None
    earlier = await conn.fetchval(
        "SELECT run_id FROM trigger_replays WHERE trigger_id = $1 AND delivery_id = $2",
        trigger_id, delivery_id,
    )  # fmt: skip
    return str(earlier)


async def deliveries(
    conn: Conn, tenant_id: str, name: str, *, limit: int, before: int | None
) -> list[dict[str, Any]] | None:
    """A trigger's deliveries, newest first, from before id `before`; None: no such trigger."""
    trigger_id = await conn.fetchval(
        "SELECT id FROM triggers WHERE tenant_id = $1 AND name = $2", tenant_id, name
    )
    if trigger_id is None:
        return None
    rows = await conn.fetch(
        """SELECT id, received_at, delivery_id, outcome, reason, status, run_id, detail
           FROM trigger_deliveries
           WHERE trigger_id = $1 AND ($2::bigint IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3""",
        trigger_id, before, limit,
    )  # fmt: skip
    return [
        {**dict(r), "received_at": r["received_at"].isoformat(),
         "run_id": str(r["run_id"]) if r["run_id"] else None}
        for r in rows
    ]  # fmt: skip


# -- retention (host/scheduler/retention.py) ----------------------------------------------------

#: The schemes whose signature covers a timestamp checked against the tolerance: a replay of an
#: old delivery is refused as stale whatever the replay table holds.
_TIMED = """(t.scheme IN ('standard', 'stripe')
             OR (t.scheme = 'hmac' AND coalesce(t.options->>'timestamp_header', '') <> ''))"""


async def prune_deliveries(conn: Conn, older_than_s: float, limit: int) -> int:
    """Delete up to `limit` rows of the inbound delivery log received more than `older_than_s`
    ago; returns how many."""
    return await delete_counted(
        conn, "trigger_deliveries", "id",
        """SELECT id FROM trigger_deliveries
           WHERE received_at < now() - make_interval(secs => $1) LIMIT $2""",
        older_than_s, limit,
    )  # fmt: skip


async def prune_replays(conn: Conn, older_than_s: float, limit: int, *, timed: bool) -> int:
    """Delete up to `limit` replay rows older than `older_than_s` of triggers whose scheme
    signs a timestamp (`timed`) or of those whose scheme does not; returns how many."""
    return await delete_counted(
        conn, "trigger_replays", "(trigger_id, delivery_id)",
        f"""SELECT r.trigger_id, r.delivery_id
            FROM trigger_replays r JOIN triggers t ON t.id = r.trigger_id
            WHERE r.received_at < now() - make_interval(secs => $1)
              AND {_TIMED} = $3
            LIMIT $2""",
        older_than_s, limit, timed,
    )  # fmt: skip
