"""Runs and attempts in PostgreSQL: batched inserts and finishes, lookups and listings.

Hot-path statements take whole batches as arrays (`unnest`), so one round trip and one commit
carry hundreds of runs. Finishes are fenced: a run's row only moves forward (attempt number never
goes back, a final state is never left), so a late finisher whose lease was lost changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

import asyncpg
import orjson

from host.encoding import as_text
from host.notify.outbox import OUTBOX_INSERT
from host.states import RunState


@dataclass(slots=True)
class NewRun:
    """A run to insert."""

    id: str
    tenant_id: str
    type: str
    payload_json: str | bytes  #: the payload, already encoded (spliced in, not decoded)
    priority: int
    max_attempts: int
    timeout_s: float
    delay_s: float  #: run_at = now() + delay_s (PostgreSQL clock)
    idempotency_key: str | None = None
    job_id: str | None = None
    scheduled_for: datetime | None = None


@dataclass(slots=True)
class Finish:
    """The end of one attempt, as the worker (or reaper) records it."""

    id: str
    attempt: int
    state: RunState  #: the run's new state: succeeded, retrying or dead
    outcome: str  #: host.states.Outcome value for the attempts row
    worker: str
    started_at: float | None  #: epoch seconds
    finished_at: float  #: epoch seconds
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    retry_in_s: float = 0.0  #: for retrying: delay before the next attempt


_INSERT = """
INSERT INTO runs (tenant_id, id, type, job_id, state, payload, priority, max_attempts,
                  timeout_s, idempotency_key, scheduled_for, run_at)
SELECT u.tenant_id, u.id, u.type, u.job_id, u.state, u.payload::jsonb, u.priority,
       u.max_attempts, u.timeout_s, u.idem, u.scheduled_for,
       now() + make_interval(secs => u.delay_s)
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::int[],
            $8::int[], $9::float8[], $10::text[], $11::timestamptz[], $12::float8[])
     AS u(tenant_id, id, type, job_id, state, payload, priority, max_attempts, timeout_s, idem,
          scheduled_for, delay_s)
ON CONFLICT DO NOTHING
RETURNING id
"""

#: The same for runs that cannot conflict (see insert_runs): no speculative insertion, and no
#: ids to return (every one goes in, or the statement fails).
_INSERT_FRESH = _INSERT.replace("ON CONFLICT DO NOTHING\nRETURNING id\n", "")
assert _INSERT_FRESH != _INSERT

#: A fresh batch whose runs differ only in id and payload (a bulk enqueue of one type with the
#: type's policy): the shared values go once, as scalars. asyncpg checks every element of an
#: array parameter in Python, so ten arrays fewer is about a quarter of the producer's CPU
#: per run.
_INSERT_UNIFORM = """
INSERT INTO runs (tenant_id, id, type, job_id, state, payload, priority, max_attempts,
                  timeout_s, run_at)
SELECT $1, u.id, $3, $4::uuid, $5, u.payload::jsonb, $7, $8, $9,
       now() + make_interval(secs => $10::float8)
FROM unnest($2::uuid[], $6::text[]) AS u(id, payload)
"""

_FINISH = f"""
WITH f AS (
    SELECT * FROM json_to_recordset($1::json)
        AS f(id uuid, attempt int, state text, outcome text, worker text, started_at float8,
             finished_at float8, result jsonb, error text, traceback text, retry_in_s float8)
), recorded AS (
    INSERT INTO attempts (tenant_id, run_id, attempt, worker, started_at, finished_at, outcome,
                          error, traceback)
    SELECT r.tenant_id, f.id, f.attempt, f.worker, to_timestamp(f.started_at),
           to_timestamp(f.finished_at), f.outcome, f.error, f.traceback
    FROM f JOIN runs r ON r.id = f.id
    ON CONFLICT (run_id, attempt) DO NOTHING
), moved AS (
UPDATE runs r
SET state = f.state,
    attempt = f.attempt,
    worker = f.worker,
    started_at = COALESCE(to_timestamp(f.started_at), r.started_at),
    finished_at = CASE WHEN f.state IN ('succeeded', 'dead') THEN to_timestamp(f.finished_at) END,
    result = f.result,
    error = f.error,
    run_at = CASE WHEN f.state = 'retrying'
                  THEN to_timestamp(f.finished_at) + make_interval(secs => f.retry_in_s)
                  ELSE r.run_at END
FROM f
WHERE r.id = f.id
  AND r.attempt <= f.attempt
  AND r.state NOT IN ('succeeded', 'dead', 'cancelled')
RETURNING r.id, r.tenant_id, r.type, r.job_id, r.state, r.attempt, r.max_attempts, r.run_at,
          r.created_at, r.started_at, r.finished_at, r.result, r.error, f.outcome,
          to_timestamp(f.finished_at) AS attempt_finished_at
), notified AS (
{OUTBOX_INSERT}
)
SELECT id FROM moved
"""

_START = """
UPDATE runs r
SET state = 'running', attempt = s.attempt, worker = s.worker,
    started_at = to_timestamp(s.started_at)
FROM json_to_recordset($1::json) AS s(id uuid, attempt int, worker text, started_at float8)
WHERE r.id = s.id
  AND (r.attempt < s.attempt OR (r.attempt = s.attempt AND r.state = 'running'))
  AND r.state IN ('scheduled', 'queued', 'retrying', 'running')
"""

_RELEASE = """
UPDATE runs r
SET state = 'queued', attempt = s.attempt - 1
FROM unnest($1::uuid[], $2::int[]) AS s(id, attempt)
WHERE r.id = s.id AND r.attempt = s.attempt AND r.state = 'running'
"""

_RUN_COLUMNS = """id, tenant_id, type, job_id, state, payload, priority, attempt, max_attempts,
    timeout_s, idempotency_key, scheduled_for, run_at, created_at, started_at, finished_at,
    worker, result, error"""


async def insert_runs(conn: asyncpg.Pool | asyncpg.Connection, runs: Sequence[NewRun]) -> set[str]:
    """Insert runs in one statement; returns the ids actually inserted (the rest conflicted on
    their idempotency key or cron tick, or their id).

    A batch where no run has an idempotency key or a cron tick cannot conflict (its ids are
    fresh UUIDv7s): it goes in with a plain INSERT, without the speculative insertion that ON
    CONFLICT costs (about a fifth of the statement's server CPU); an id that exists already is
    then an error (UniqueViolation), not a silent skip.

    Columns travel as typed arrays (`unnest`), which asyncpg sends in binary: PostgreSQL spends
    about a third less CPU per row than parsing the same batch as JSON (json_to_recordset)."""
    if not runs:
        return set()
    if _uniform(runs):
        first = runs[0]
        await conn.execute(
            _INSERT_UNIFORM, first.tenant_id, [r.id for r in runs], first.type, first.job_id,
            RunState.SCHEDULED if first.delay_s > 0 else RunState.QUEUED,
            [as_text(r.payload_json) for r in runs], first.priority, first.max_attempts,
            first.timeout_s, first.delay_s,
        )  # fmt: skip
        return {r.id for r in runs}
    columns = (
        [r.tenant_id for r in runs], [r.id for r in runs], [r.type for r in runs],
        [r.job_id for r in runs],
        [RunState.SCHEDULED if r.delay_s > 0 else RunState.QUEUED for r in runs],
        [as_text(r.payload_json) for r in runs], [r.priority for r in runs],
        [r.max_attempts for r in runs], [r.timeout_s for r in runs],
        [r.idempotency_key for r in runs], [r.scheduled_for for r in runs],
        [r.delay_s for r in runs],
    )  # fmt: skip
    if any(r.idempotency_key is not None or r.scheduled_for for r in runs):
        rows = await conn.fetch(_INSERT, *columns)
        return {str(row["id"]) for row in rows}
    await conn.execute(_INSERT_FRESH, *columns)
    return {r.id for r in runs}


def _uniform(runs: Sequence[NewRun]) -> bool:
    """True when the runs cannot conflict and share every column but id and payload."""
    first = runs[0]
    if first.idempotency_key is not None or first.scheduled_for is not None:
        return False
    shared = _shared_columns(first)
    return all(_shared_columns(r) == shared for r in runs)


#: Every NewRun field but id and payload_json: what a uniform batch sends once. Derived from
#: the dataclass, so a field added later cannot be left out of the comparison (it would then be
#: missing from _INSERT_UNIFORM too, which a test catches).
_SHARED_FIELDS = tuple(f.name for f in fields(NewRun) if f.name not in ("id", "payload_json"))
_shared_columns = attrgetter(*_SHARED_FIELDS)


async def find_by_idempotency(
    conn: asyncpg.Pool | asyncpg.Connection, tenant_id: str, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Existing runs by idempotency key, for enqueues that conflicted."""
    rows = await conn.fetch(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND idempotency_key = ANY($2)",
        tenant_id,
        list(keys),
    )
    return {row["idempotency_key"]: run_record(row) for row in rows}


async def finish_attempts(
    conn: asyncpg.Pool | asyncpg.Connection, finishes: Sequence[Finish]
) -> set[str]:
    """Record attempts and move their runs on, in one statement; returns the ids whose run row
    changed (the others were fenced off: already final or a later attempt recorded). The same
    statement writes the outbox: a delivery per event and matching subscription (notify)."""
    if not finishes:
        return set()
    batch = [
        {
            "id": f.id, "attempt": f.attempt, "state": f.state, "outcome": f.outcome,
            "worker": f.worker, "started_at": f.started_at, "finished_at": f.finished_at,
            "result": orjson.Fragment(f.result_json) if f.result_json is not None else None,
            "error": f.error, "traceback": f.traceback, "retry_in_s": f.retry_in_s,
        }
        for f in finishes
    ]  # fmt: skip
    rows = await conn.fetch(_FINISH, orjson.dumps(batch).decode())
    return {str(row["id"]) for row in rows}


async def mark_started(
    conn: asyncpg.Pool | asyncpg.Connection,
    starts: Sequence[tuple[str, int, str, float]],
) -> None:
    """Mark (id, attempt, worker, started_at) runs as running, in one statement."""
    if not starts:
        return
    batch = [{"id": i, "attempt": a, "worker": w, "started_at": t} for i, a, w, t in starts]
    await conn.execute(_START, orjson.dumps(batch).decode())


async def mark_released(
    conn: asyncpg.Pool | asyncpg.Connection, released: Sequence[tuple[str, int]]
) -> None:
    """Runs handed back unstarted by a stopping worker are queued again, attempt undone."""
    if not released:
        return
    await conn.execute(_RELEASE, [r[0] for r in released], [r[1] for r in released])


_CANCEL = """
UPDATE runs
SET state = 'cancelled', finished_at = now(), error = $2
WHERE id = ANY($1::uuid[]) AND state IN ('scheduled', 'queued', 'running', 'retrying')
RETURNING id
"""


async def cancel_runs(
    conn: asyncpg.Pool | asyncpg.Connection, run_ids: Sequence[str], reason: str = "cancelled"
) -> set[str]:
    """Mark active runs cancelled (final); returns the ids that were active. A worker still
    running one finds its finish fenced (a final state is never overwritten)."""
    if not run_ids:
        return set()
    rows = await conn.fetch(_CANCEL, list(run_ids), reason)
    return {str(row["id"]) for row in rows}


@dataclass(frozen=True, slots=True)
class ActiveRun:
    """An active run as reconciliation needs it to enqueue it again."""

    id: str
    tenant_id: str
    type: str
    job_id: str | None
    state: str
    payload_json: str
    priority: int
    attempt: int
    max_attempts: int
    timeout_s: float
    delay_s: float  #: run_at - now (PostgreSQL clock), 0 when due


_ACTIVE_COLUMNS = """id, tenant_id, type, job_id, state, payload::text AS payload_json, priority,
    attempt, max_attempts, timeout_s,
    greatest(0, extract(epoch FROM run_at - now()))::float8 AS delay_s"""


def _active_run(r: asyncpg.Record) -> ActiveRun:
    """An ActiveRun from a row selected with _ACTIVE_COLUMNS."""
    return ActiveRun(
        id=str(r["id"]), tenant_id=r["tenant_id"], type=r["type"],
        job_id=str(r["job_id"]) if r["job_id"] else None, state=r["state"],
        payload_json=r["payload_json"], priority=r["priority"], attempt=r["attempt"],
        max_attempts=r["max_attempts"], timeout_s=r["timeout_s"], delay_s=r["delay_s"],
    )  # fmt: skip


async def active_run_ids(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    after: str | None,
    limit: int,
    older_than_s: float = 0.0,
) -> list[str]:
    """Ids of active runs in id order from `after` (keyset paging), created at least
    `older_than_s` ago."""
    rows = await conn.fetch(
        """SELECT id FROM runs
           WHERE state IN ('scheduled', 'queued', 'running', 'retrying')
             AND ($1::uuid IS NULL OR id > $1::uuid)
             AND created_at <= now() - make_interval(secs => $2)
           ORDER BY id LIMIT $3""",
        after,
        older_than_s,
        limit,
    )
    return [str(row["id"]) for row in rows]


async def active_runs(
    conn: asyncpg.Pool | asyncpg.Connection, run_ids: Sequence[str]
) -> list[ActiveRun]:
    """The runs among `run_ids` that are still active, with what enqueueing them needs."""
    if not run_ids:
        return []
    rows = await conn.fetch(
        f"""SELECT {_ACTIVE_COLUMNS} FROM runs
            WHERE id = ANY($1::uuid[])
              AND state IN ('scheduled', 'queued', 'running', 'retrying')""",
        list(run_ids),
    )
    return [_active_run(r) for r in rows]


async def active_runs_of_jobs(
    conn: asyncpg.Pool | asyncpg.Connection, job_ids: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """Per job id, its active runs as (run id, state)."""
    if not job_ids:
        return {}
    rows = await conn.fetch(
        """SELECT job_id, id, state FROM runs
           WHERE job_id = ANY($1::uuid[])
             AND state IN ('scheduled', 'queued', 'running', 'retrying')""",
        list(job_ids),
    )
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        out.setdefault(str(row["job_id"]), []).append((str(row["id"]), row["state"]))
    return out


#: Served by the runs_due index (scheduled and retrying runs only), whatever the history's size.
PROMOTE_DUE = """UPDATE runs SET state = 'queued'
    WHERE id IN (SELECT id FROM runs
                 WHERE state IN ('scheduled', 'retrying') AND run_at <= now()
                 LIMIT $1)
      AND state IN ('scheduled', 'retrying')"""


async def promote_due(conn: asyncpg.Pool | asyncpg.Connection, limit: int = 1000) -> int:
    """Show scheduled and retrying runs whose time has come as queued (Redis promotes them by
    itself; this keeps PostgreSQL's view honest). Returns how many moved."""
    result: str = await conn.execute(PROMOTE_DUE, limit)
    return int(result.split()[-1])


async def prune_finished(
    conn: asyncpg.Pool | asyncpg.Connection,
    older_than_s: float,
    limit: int,
    states: Sequence[str] = ("succeeded", "cancelled"),
) -> int:
    """Delete up to `limit` final runs (and their attempts) finished more than `older_than_s`
    ago; returns how many."""
    deleted: int = await conn.fetchval(
        """WITH gone AS (
               DELETE FROM runs
               WHERE id IN (SELECT id FROM runs
                            WHERE state = ANY($3::text[])
                              AND coalesce(finished_at, created_at)
                                  < now() - make_interval(secs => $1)
                            LIMIT $2)
               RETURNING id
           ), history AS (
               DELETE FROM attempts WHERE run_id IN (SELECT id FROM gone)
           )
           SELECT count(*) FROM gone""",
        older_than_s,
        limit,
        [s for s in states if s in ("succeeded", "dead", "cancelled")],
    )
    return deleted


async def get_run(
    conn: asyncpg.Pool | asyncpg.Connection,
    run_id: str,
    tenant_id: str | None = None,
    *,
    attempts: bool = True,
) -> dict[str, Any] | None:
    """One run with its attempts, or None. With `tenant_id`, only that tenant's run. Without
    `attempts`, an empty list stands for them (a run just enqueued has none): one query."""
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        return None
    row = await conn.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        key,
        tenant_id,
    )
    if row is None:
        return None
    run = run_record(row)
    if not attempts:
        run["attempts"] = []
        return run
    history = await conn.fetch(
        """SELECT attempt, worker, started_at, finished_at, outcome, error, traceback
           FROM attempts WHERE run_id = $1 ORDER BY attempt""",
        key,
    )
    run["attempts"] = [_jsonable(dict(a)) for a in history]
    return run


async def list_runs(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    tenant_id: str,
    state: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
    job_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> list[dict[str, Any]]:
    """Newest first, filtered; `before` (created_at, id) continues from a previous page."""
    rows = await conn.fetch(
        f"""SELECT {_RUN_COLUMNS} FROM runs
            WHERE tenant_id = $1
              AND ($2::text IS NULL OR state = $2)
              AND ($3::text IS NULL OR type = $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
              AND ($7::uuid IS NULL OR job_id = $7)
              AND ($8::timestamptz IS NULL OR created_at >= $8)
              AND ($9::timestamptz IS NULL OR created_at < $9)
            ORDER BY created_at DESC, id DESC
            LIMIT $6""",
        tenant_id,
        state,
        job_type,
        before[0] if before else None,
        before[1] if before else None,
        limit,
        job_id,
        created_after,
        created_before,
    )
    return [run_record(row) for row in rows]


async def replay_dead(
    conn: asyncpg.Pool | asyncpg.Connection, run_id: str, tenant_id: str, budget: int
) -> ActiveRun | None:
    """Put a dead run back to queued with `budget` more attempts (its attempt count goes on, so
    earlier attempts keep their history); None when it is not a dead run of this tenant."""
    row = await conn.fetchrow(
        f"""UPDATE runs
            SET state = 'queued', max_attempts = attempt + $3, run_at = now(),
                finished_at = NULL, result = NULL, error = NULL
            WHERE id = $1::uuid AND tenant_id = $2 AND state = 'dead'
            RETURNING {_ACTIVE_COLUMNS}""",
        run_id,
        tenant_id,
        budget,
    )
    if row is None:
        return None
    return _active_run(row)


async def state_counts_by_type(
    conn: asyncpg.Pool | asyncpg.Connection, tenant_id: str, states: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per type, how many of the tenant's runs are in each of `states`."""
    rows = await conn.fetch(
        """SELECT type, state, count(*) AS n FROM runs
           WHERE tenant_id = $1 AND state = ANY($2::text[]) GROUP BY type, state""",
        tenant_id,
        list(states),
    )
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row["type"], {})[row["state"]] = int(row["n"])
    return out


async def owned(
    conn: asyncpg.Pool | asyncpg.Connection, tenant_id: str, run_ids: Sequence[str]
) -> set[str]:
    """The ids among `run_ids` that are runs of this tenant."""
    if not run_ids:
        return set()
    rows = await conn.fetch(
        "SELECT id FROM runs WHERE id = ANY($1::uuid[]) AND tenant_id = $2",
        list(run_ids),
        tenant_id,
    )
    return {str(row["id"]) for row in rows}


async def count_by_state(
    conn: asyncpg.Pool | asyncpg.Connection, tenant_id: str | None = None
) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT state, count(*) AS n FROM runs
           WHERE ($1::text IS NULL OR tenant_id = $1) GROUP BY state""",
        tenant_id,
    )
    return {row["state"]: int(row["n"]) for row in rows}


def run_record(row: asyncpg.Record) -> dict[str, Any]:
    """A runs row as JSON-ready data."""
    data = dict(row)
    for key in ("payload", "result"):
        if isinstance(data.get(key), str):
            data[key] = orjson.loads(data[key])
    return _jsonable(data)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    for key, value in data.items():
        if isinstance(value, uuid.UUID):
            data[key] = str(value)
        elif isinstance(value, datetime):
            data[key] = value.isoformat()
    return data
