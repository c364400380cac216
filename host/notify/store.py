"""Subscriptions, deliveries and delivery attempts in PostgreSQL.

Every function that takes a tenant only sees that tenant's rows (another tenant's id is simply
not found). The notifier's claim and record statements are fenced by the claim's lease token, so
a notifier whose lease was taken over changes nothing when it finally answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from host.errors import Conflict, NotFound
from host.notify.outbox import BODY
from host.store.db import Conn, delete_counted

_SUB_COLUMNS = """s.id, s.tenant_id, s.name, s.events, s.job_types, s.job_ids, s.channel,
    s.destination, s.enabled, s.disabled_reason, s.failure_streak, s.disabled_at,
    s.times_disabled, s.source, s.created_at, s.updated_at"""

_COUNTS = """(SELECT jsonb_build_object(
        'pending', count(*) FILTER (WHERE d.state = 'pending'),
        'succeeded', count(*) FILTER (WHERE d.state = 'succeeded'),
        'failed', count(*) FILTER (WHERE d.state = 'failed'))
    FROM deliveries d WHERE d.subscription_id = s.id) AS counts"""


class SubscriptionNotFound(NotFound):
    """Raised when a subscription id is not known (or is another tenant's)."""

    def __init__(self, sub_id: str) -> None:
        super().__init__(f"subscription {sub_id} not found")


class SubscriptionExists(Conflict):
    """Raised when the tenant already has a subscription of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"subscription {name!r} already exists")


class DeliveryNotFound(NotFound):
    """Raised when a delivery id is not known (or is another tenant's)."""

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"delivery {delivery_id} not found")


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def subscription_record(row: asyncpg.Record) -> dict[str, Any]:
    data = {k: _plain(v) for k, v in dict(row).items()}
    for key in ("destination", "counts"):
        if isinstance(data.get(key), str):
            data[key] = orjson.loads(data[key])
    return data


async def create_subscription(
    conn: Conn, tenant_id: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Insert a subscription (`fields`: name, events, channel, destination, secret and optional
    job_types, job_ids, enabled, source)."""
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO subscriptions AS s (tenant_id, name, events, job_types, job_ids,
                    channel, destination, secret, enabled, source)
                VALUES ($1, $2, $3, $4, $5::uuid[], $6, $7::jsonb, $8, $9, $10)
                RETURNING {_SUB_COLUMNS}""",
            tenant_id, fields["name"], list(fields["events"]), list(fields.get("job_types", [])),
            list(fields.get("job_ids", [])), fields["channel"],
            orjson.dumps(fields["destination"]).decode(), fields.get("secret"),
            fields.get("enabled", True), fields.get("source", "api"),
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        raise SubscriptionExists(fields["name"]) from exc
    data = subscription_record(row)
    data["counts"] = {"pending": 0, "succeeded": 0, "failed": 0}
    return data


async def get_subscription(
    conn: Conn, tenant_id: str, sub_id: str, *, with_secret: bool = False
) -> dict[str, Any]:
    key = _uuid(sub_id)
    row = None
    if key is not None:
        secret = ", s.secret" if with_secret else ""
        row = await conn.fetchrow(
            f"SELECT {_SUB_COLUMNS}, {_COUNTS}{secret} FROM subscriptions s "
            "WHERE s.id = $1 AND s.tenant_id = $2",
            key,
            tenant_id,
        )
    if row is None:
        raise SubscriptionNotFound(sub_id)
    return subscription_record(row)


async def list_subscriptions(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_SUB_COLUMNS}, {_COUNTS} FROM subscriptions s WHERE s.tenant_id = $1 "
        "ORDER BY s.created_at, s.id",
        tenant_id,
    )
    return [subscription_record(r) for r in rows]


_PATCHABLE = {
    "name": "", "events": "", "job_types": "", "job_ids": "::uuid[]", "destination": "::jsonb",
    "secret": "", "enabled": "",
}  # fmt: skip


async def update_subscription(
    conn: Conn, tenant_id: str, sub_id: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply `changes` (fields of _PATCHABLE). Enabling clears the disabled reason and the
    failure streak; disabling by hand records why."""
    key = _uuid(sub_id)
    if key is None:
        raise SubscriptionNotFound(sub_id)
    sets, args = ["updated_at = now()"], [key, tenant_id]
    for name, cast in _PATCHABLE.items():
        if name in changes:
            value = changes[name]
            if name == "destination":
                value = orjson.dumps(value).decode()
            args.append(list(value) if isinstance(value, list | tuple) else value)
            sets.append(f"{name} = ${len(args)}{cast}")
    if "enabled" in changes:
        if changes["enabled"]:
            sets += ["disabled_reason = NULL", "failure_streak = 0", "disabled_at = NULL"]
        else:
            sets.append("disabled_at = CASE WHEN s.enabled THEN now() ELSE s.disabled_at END")
            args.append(changes.get("disabled_reason"))
            sets.append(f"disabled_reason = coalesce(${len(args)}, 'disabled by hand')")
    try:
        row = await conn.fetchrow(
            f"""UPDATE subscriptions s SET {", ".join(sets)}
                WHERE s.id = $1 AND s.tenant_id = $2 RETURNING {_SUB_COLUMNS}, {_COUNTS}""",
            *args,
        )
    except asyncpg.UniqueViolationError as exc:
        raise SubscriptionExists(str(changes.get("name"))) from exc
    if row is None:
        raise SubscriptionNotFound(sub_id)
    if changes.get("enabled"):
        await conn.execute("SELECT pg_notify('jobhost_deliveries', '')")
    return subscription_record(row)


async def delete_subscription(conn: Conn, tenant_id: str, sub_id: str) -> None:
    """Delete a subscription with its deliveries and their attempts."""
    key = _uuid(sub_id)
    done = None
    if key is not None:
        done = await conn.fetchval(
            """WITH gone AS (
                   DELETE FROM subscriptions WHERE id = $1 AND tenant_id = $2 RETURNING id
               ), log AS (
                   DELETE FROM deliveries WHERE subscription_id IN (SELECT id FROM gone)
               )
               SELECT id FROM gone""",
            key,
            tenant_id,
        )
    if done is None:
        raise SubscriptionNotFound(sub_id)


async def sync_config_subscriptions(
    conn: asyncpg.Connection, subs: Sequence[Mapping[str, Any]]
) -> int:
    """Make the `source = 'config'` subscriptions match plugins.toml: upsert each (by tenant and
    name; the secret is kept unless the file sets one) and delete those no longer listed.
    Returns how many are configured."""
    async with conn.transaction():
        for sub in subs:
            await conn.execute(
                """INSERT INTO subscriptions (tenant_id, name, events, job_types, job_ids, channel,
                       destination, secret, enabled, source)
                   VALUES ($1, $2, $3, $4, $5::uuid[], $6, $7::jsonb, $8, $9, 'config')
                   ON CONFLICT (tenant_id, name) DO UPDATE
                   SET events = EXCLUDED.events, job_types = EXCLUDED.job_types,
                       job_ids = EXCLUDED.job_ids, channel = EXCLUDED.channel,
                       destination = EXCLUDED.destination,
                       secret = coalesce($10, subscriptions.secret),
                       source = 'config', updated_at = now()""",
                sub["tenant"], sub["name"], list(sub["events"]), list(sub.get("job_types", [])),
                list(sub.get("job_ids", [])), sub["channel"],
                orjson.dumps(sub["destination"]).decode(), sub["secret"],
                sub.get("enabled", True), sub.get("given_secret"),
            )  # fmt: skip
        await conn.execute(
            """WITH gone AS (
                   DELETE FROM subscriptions s WHERE s.source = 'config'
                   AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(tenant, name)
                                   WHERE k.tenant = s.tenant_id AND k.name = s.name)
                   RETURNING s.id
               )
               DELETE FROM deliveries WHERE subscription_id IN (SELECT id FROM gone)""",
            [s["tenant"] for s in subs],
            [s["name"] for s in subs],
        )
    return len(subs)


# -- deliveries ---------------------------------------------------------------------------------

_DELIVERY_COLUMNS = f"""d.id, d.subscription_id, d.event_id, d.event_type, d.run_id, d.state,
    d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.finished_at, {BODY} AS body"""


def delivery_record(row: asyncpg.Record) -> dict[str, Any]:
    data = {k: _plain(v) for k, v in dict(row).items()}
    if isinstance(data.get("body"), str):
        data["body"] = orjson.loads(data["body"])
    if isinstance(data.get("attempt_log"), str):
        data["attempt_log"] = orjson.loads(data["attempt_log"])
    return data


async def list_deliveries(
    conn: Conn,
    tenant_id: str,
    sub_id: str,
    *,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
    state: str | None = None,
) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest first, each with its attempts."""
    await get_subscription(conn, tenant_id, sub_id)
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS},
                   coalesce((SELECT jsonb_agg(jsonb_build_object(
                       'attempt', a.attempt, 'at', a.at, 'ok', a.ok, 'status', a.status,
                       'latency_ms', a.latency_ms, 'error', a.error,
                       'response_excerpt', a.response_excerpt) ORDER BY a.attempt)
                     FROM delivery_attempts a WHERE a.delivery_id = d.id), '[]') AS attempt_log
            FROM deliveries d
            WHERE d.subscription_id = $1::uuid AND d.tenant_id = $2
              AND ($3::timestamptz IS NULL OR (d.created_at, d.id) < ($3, $4::uuid))
              AND ($6::text IS NULL OR d.state = $6)
            ORDER BY d.created_at DESC, d.id DESC LIMIT $5""",
        sub_id, tenant_id, before[0] if before else None, before[1] if before else None, limit,
        state,
    )  # fmt: skip
    return [delivery_record(r) for r in rows]


async def redeliver(conn: Conn, tenant_id: str, delivery_id: str) -> dict[str, Any]:
    """Send a delivery again now, with a fresh retry schedule (same event id and body; its
    attempt numbers go on). Any state: a receiver may have lost one it acknowledged.

    A send in flight (a pending row with a live lease) keeps its lease, so its notifier records
    its attempt; `retry_base` past `attempts` marks the redelivery, which record_attempt turns
    into a fresh pending row due now, whatever that attempt's outcome."""
    key = _uuid(delivery_id)
    row = None
    if key is not None:
        row = await conn.fetchrow(
            f"""WITH again AS (
                    UPDATE deliveries
                    SET state = 'pending', next_attempt_at = now(),
                        retry_base = attempts + CASE WHEN live THEN 1 ELSE 0 END,
                        finished_at = NULL,
                        lease_until = CASE WHEN live THEN lease_until END,
                        lease_token = CASE WHEN live THEN lease_token END
                    FROM (SELECT state = 'pending' AND lease_until > now() AS live
                          FROM deliveries WHERE id = $1 AND tenant_id = $2 FOR UPDATE) old
                    WHERE id = $1 AND tenant_id = $2
                    RETURNING *
                )
                SELECT {_DELIVERY_COLUMNS} FROM again d""",
            key,
            tenant_id,
        )
    if row is None:
        raise DeliveryNotFound(delivery_id)
    await conn.execute("SELECT pg_notify('jobhost_deliveries', '')")
    return delivery_record(row)


async def prune_deliveries(conn: Conn, older_than_s: float, limit: int) -> int:
    """Delete up to `limit` succeeded or failed deliveries (their attempts cascade) finished
    more than `older_than_s` ago; returns how many."""
    return await delete_counted(
        conn, "deliveries", "id",
        """SELECT id FROM deliveries
           WHERE state IN ('succeeded', 'failed')
             AND finished_at < now() - make_interval(secs => $1)
           LIMIT $2""",
        older_than_s, limit,
    )  # fmt: skip


async def prune_orphaned(conn: Conn, older_than_s: float, limit: int) -> int:
    """Delete up to `limit` pending deliveries whose subscription is gone: the outbox trigger
    can commit one while the subscription's delete runs (there is no foreign key), and no
    claim (it joins subscriptions) nor prune_deliveries (finished rows only) would reach it."""
    return await delete_counted(
        conn, "deliveries", "id",
        """SELECT d.id FROM deliveries d
           WHERE d.state = 'pending'
             AND d.created_at < now() - make_interval(secs => $1)
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.subscription_id)
           LIMIT $2""",
        older_than_s, limit,
    )  # fmt: skip


# -- the notifier's claims ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed by a notifier, with what sending it needs."""

    id: str
    token: str
    subscription_id: str
    event_id: str
    event_type: str
    body: dict[str, Any]
    attempts: int  #: recorded so far
    retry_base: int
    digest_key: str | None
    channel: str
    destination: dict[str, Any]
    secret: str | None
    created_at: datetime


_CLAIMED_COLUMNS = f"""d.id, d.lease_token, d.subscription_id, d.event_id, d.event_type,
    {BODY} AS body,
    d.attempts, d.retry_base, d.digest_key, d.created_at, s.channel, s.destination, s.secret"""


def _claimed(row: asyncpg.Record) -> Claimed:
    return Claimed(
        id=str(row["id"]), token=str(row["lease_token"]),
        subscription_id=str(row["subscription_id"]), event_id=row["event_id"],
        event_type=row["event_type"], body=orjson.loads(row["body"]), attempts=row["attempts"],
        retry_base=row["retry_base"], digest_key=row["digest_key"], channel=row["channel"],
        destination=orjson.loads(row["destination"]), secret=row["secret"],
        created_at=row["created_at"],
    )  # fmt: skip


def _lease_and_return(picked: str, lease_s: str) -> str:
    """The tail both claims share: lease the rows of CTE `picked` for `lease_s` seconds with a
    fresh token, and return them joined with their subscriptions."""
    return f"""claimed AS (
                UPDATE deliveries d
                SET lease_until = now() + make_interval(secs => {lease_s}),
                    lease_token = gen_random_uuid()
                FROM {picked} WHERE d.id = {picked}.id
                RETURNING d.*
            )
            SELECT {_CLAIMED_COLUMNS} FROM claimed d
            JOIN subscriptions s ON s.id = d.subscription_id"""


async def claim_due(conn: Conn, limit: int, lease_s: float, per_endpoint: int = 0) -> list[Claimed]:
    """Claim up to `limit` due deliveries of enabled subscriptions: locked rows are skipped
    (another notifier is claiming them) and a live lease is respected; an expired one (a
    killed notifier's) is taken over. Subscriptions are served oldest due first, each with at
    most its room: `per_endpoint` minus its sends in flight (any notifier's live leases; 0:
    unbounded). Per subscription, so a receiver's backlog is never scanned row by row."""
    rows = await conn.fetch(
        f"""WITH ready AS (
                SELECT s.id,
                       CASE WHEN $3 = 0 THEN $1 ELSE $3 - (
                           SELECT count(*) FROM deliveries x
                           WHERE x.subscription_id = s.id AND x.state = 'pending'
                             AND x.lease_until IS NOT NULL AND x.lease_until > now()) END
                       AS room,
                       (SELECT min(x.next_attempt_at) FROM deliveries x
                        WHERE x.subscription_id = s.id AND x.state = 'pending') AS first_due
                FROM subscriptions s WHERE s.enabled
            ), due AS (
                SELECT pick.id
                FROM (SELECT * FROM ready WHERE room > 0 AND first_due <= now()
                      ORDER BY first_due LIMIT $1) r
                CROSS JOIN LATERAL (
                    SELECT d.id FROM deliveries d
                    WHERE d.subscription_id = r.id AND d.state = 'pending'
                      AND d.next_attempt_at <= now()
                      AND (d.lease_until IS NULL OR d.lease_until < now())
                    ORDER BY d.next_attempt_at
                    LIMIT r.room
                    FOR UPDATE SKIP LOCKED
                ) pick
                LIMIT $1
            ), {_lease_and_return("due", "$2")}""",
        limit,
        lease_s,
        per_endpoint,
    )
    return [_claimed(r) for r in rows]


async def claim_digest(
    conn: Conn, subscription_id: str, digest_key: str, lease_s: float
) -> list[Claimed]:
    """Claim the other pending deliveries of one digest group (whatever their due time: the
    group goes out together)."""
    rows = await conn.fetch(
        f"""WITH grp AS (
                SELECT d.id FROM deliveries d
                WHERE d.subscription_id = $1::uuid AND d.digest_key = $2
                  AND d.state = 'pending'
                  AND (d.lease_until IS NULL OR d.lease_until < now())
                FOR UPDATE SKIP LOCKED
            ), {_lease_and_return("grp", "$3")}""",
        subscription_id,
        digest_key,
        lease_s,
    )
    return [_claimed(r) for r in rows]


async def hold_for_digest(conn: Conn, claimed: Claimed, digest_key: str, window_s: float) -> None:
    """Put a delivery in its digest group: due with the group's pending members if there are
    any, else `window_s` after it was written; the claim is released."""
    await conn.execute(
        """UPDATE deliveries d
           SET digest_key = $3,
               next_attempt_at = coalesce(
                   (SELECT min(o.next_attempt_at) FROM deliveries o
                    WHERE o.subscription_id = d.subscription_id AND o.digest_key = $3
                      AND o.state = 'pending' AND o.id <> d.id),
                   d.created_at + make_interval(secs => $4)),
               lease_until = NULL, lease_token = NULL
           WHERE d.id = $1::uuid AND d.lease_token = $2::uuid""",
        claimed.id,
        claimed.token,
        digest_key,
        window_s,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the notifier decided after one attempt of one delivery."""

    ok: bool
    state: str  #: pending (retry at next_in_s), succeeded or failed
    next_in_s: float
    status: str | None
    error: str | None
    excerpt: str | None
    latency_ms: float | None
    disable_reason: str | None  #: disable the subscription now (410)


@dataclass(frozen=True, slots=True)
class Disabled:
    """A subscription the attempt just disabled, for the owner notice."""

    subscription_id: str
    tenant_id: str
    name: str
    reason: str
    times_disabled: int


async def record_attempt(
    conn: asyncpg.Connection,
    claimed: Claimed,
    outcome: Outcome,
    *,
    notifier: str,
    disable_after: int,
) -> tuple[bool, Disabled | None]:
    """Record one attempt and move the delivery on, fenced by the claim's token; then the
    subscription's failure streak (disabling it after `disable_after` failed deliveries in a
    row, 0: never). Returns whether the claim was still held (False: nothing written) and the
    subscription if this attempt disabled it."""
    async with conn.transaction():
        # retry_base > attempts: redelivered while this send was in flight; it goes again now.
        row = await conn.fetchrow(
            """WITH again AS (
                   SELECT retry_base > attempts AS redeliver FROM deliveries
                   WHERE id = $1::uuid AND lease_token = $2::uuid AND state = 'pending'
                   FOR UPDATE)
               UPDATE deliveries
               SET attempts = attempts + 1,
                   state = CASE WHEN redeliver THEN 'pending' ELSE $3 END,
                   next_attempt_at = CASE WHEN redeliver THEN now()
                                          ELSE now() + make_interval(secs => $4) END,
                   finished_at = CASE WHEN redeliver OR $3 = 'pending' THEN NULL ELSE now() END,
                   last_error = $5, lease_until = NULL, lease_token = NULL
               FROM again
               WHERE id = $1::uuid AND lease_token = $2::uuid AND state = 'pending'
               RETURNING attempts, state""",
            claimed.id, claimed.token, outcome.state, outcome.next_in_s, outcome.error,
        )  # fmt: skip
        if row is None:
            return False, None
        attempt = row["attempts"]
        if row["state"] != outcome.state:
            outcome = replace(outcome, state=row["state"])
        await conn.execute(
            """INSERT INTO delivery_attempts (delivery_id, attempt, ok, status, latency_ms,
                   error, response_excerpt, notifier)
               VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT DO NOTHING""",
            claimed.id, attempt, outcome.ok, outcome.status, outcome.latency_ms,
            outcome.error, outcome.excerpt, notifier,
        )  # fmt: skip
        return True, await _streak(conn, claimed.subscription_id, outcome, disable_after)


#: One more failed delivery in a row; disables an enabled subscription when $2 (the reason)
#: is not NULL. `disabled_now`: this statement disabled it.
_STREAK = """WITH old AS (SELECT id, enabled FROM subscriptions WHERE id = $1::uuid FOR UPDATE)
    UPDATE subscriptions s
    SET failure_streak = s.failure_streak + 1,
        enabled = s.enabled AND $2::text IS NULL,
        disabled_reason = CASE WHEN s.enabled AND $2::text IS NOT NULL THEN $2
                               ELSE s.disabled_reason END,
        disabled_at = CASE WHEN s.enabled AND $2::text IS NOT NULL THEN now()
                           ELSE s.disabled_at END,
        times_disabled = s.times_disabled
                         + CASE WHEN s.enabled AND $2::text IS NOT NULL THEN 1 ELSE 0 END,
        updated_at = now()
    FROM old WHERE s.id = old.id
    RETURNING old.enabled AND NOT s.enabled AS disabled_now, s.tenant_id, s.name,
              s.disabled_reason, s.times_disabled"""


async def _streak(
    conn: asyncpg.Connection, sub_id: str, outcome: Outcome, disable_after: int
) -> Disabled | None:
    if outcome.ok:
        await conn.execute(
            "UPDATE subscriptions SET failure_streak = 0"
            " WHERE id = $1::uuid AND failure_streak > 0",
            sub_id,
        )
        return None
    reason = outcome.disable_reason
    if reason is None:
        if outcome.state != "failed":
            return None
        streak = await conn.fetchval(
            "SELECT failure_streak + 1 FROM subscriptions WHERE id = $1::uuid FOR UPDATE", sub_id
        )
        if streak is not None and 0 < disable_after <= streak:
            last = outcome.error or outcome.status or "failed"
            reason = f"{streak} deliveries failed in a row; last: {last}"
    row = await conn.fetchrow(_STREAK, sub_id, reason)
    if row is None or not row["disabled_now"]:
        return None
    return Disabled(sub_id, row["tenant_id"], row["name"], row["disabled_reason"],
                    row["times_disabled"])  # fmt: skip
