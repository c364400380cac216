"""Runs: enqueue one or a batch, list with filters and cursor paging, show, cancel, retry.

Every query is scoped to the API key's tenant; another tenant's run id answers 404, exactly as
an unknown id does.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from host.api.routes import Param, Route, json_response, services, tenant
from host.api.validation import body, check_payload, integers
from host.client import Client, RunRequest
from host.errors import (
    BadRequest,
    Conflict,
    FieldError,
    ValidationFailed,
)
from host.scheduler.reconcile import queued_run
from host.states import RunState
from host.store import jobs as job_store
from host.store import runs as run_store

MAX_PAGE = 500


async def create_run(request: web.Request) -> web.Response:
    req = _run_request(request, await body(request), "")
    client = Client(services(request), tenant=tenant(request))
    enqueued = await client.enqueue_many([req])
    run = None
    if enqueued[0].created:  # one query, not three, while the run has not started yet
        run = await run_store.get_run(
            services(request).pool, enqueued[0].id, tenant(request), attempts=False
        )
    if run is None or not _unstarted(run):  # it has (attempts or progress may exist)
        run = await client.get(enqueued[0].id)
    return json_response({**run, "created": enqueued[0].created}, 202)


def _unstarted(run: dict[str, Any]) -> bool:
    """A run PostgreSQL shows as not started: it has no attempt rows (one is only written with
    the update that moves its run past attempt 0, or to a final state). A progress report can
    exist only in the first moments of an attempt not yet marked running: leaving it out is
    reading the run a moment earlier."""
    return run["attempt"] == 0 and run["state"] in (RunState.QUEUED, RunState.SCHEDULED)


async def create_batch(request: web.Request) -> web.Response:
    items = (await body(request))["runs"]
    requests, errors = [], []
    for i, item in enumerate(items):
        try:
            requests.append(_run_request(request, item, f"/runs/{i}"))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    if errors:
        raise ValidationFailed("batch", errors)
    enqueued = await Client(services(request), tenant=tenant(request)).enqueue_many(requests)
    runs = [{"id": e.id, "type": e.type, "state": e.state, "created": e.created} for e in enqueued]
    return json_response({"runs": runs}, 202)


def _run_request(request: web.Request, item: dict[str, Any], path: str) -> RunRequest:
    """A RunRequest from a schema-valid body item; ValidationFailed names the type or payload
    fields (under `path`) that the job type rejects."""
    errors: list[FieldError] = []
    try:
        check_payload(services(request).registry, item["type"], item["payload"], path)
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    run_at = None
    if "run_at" in item:
        run_at = datetime.fromisoformat(item["run_at"])
        if run_at.tzinfo is None:
            errors.append(FieldError(f"{path}/run_at", "must carry a time zone"))
    if errors:
        raise ValidationFailed("run", errors)
    item = integers(item, "priority", "max_attempts")
    return RunRequest(
        type=item["type"], payload=item["payload"], priority=item.get("priority"),
        delay_s=item.get("delay_s"), run_at=run_at,
        idempotency_key=item.get("idempotency_key"), max_attempts=item.get("max_attempts"),
        timeout_s=item.get("timeout_s"),
    )  # fmt: skip


async def list_runs(request: web.Request) -> web.Response:
    q = request.query
    svc, who = services(request), tenant(request)
    limit = _int(q.get("limit", "50"), "limit", 1, MAX_PAGE)
    state = q.get("state")
    if state is not None and state not in {s.value for s in RunState}:
        raise _bad("state", f"must be one of {', '.join(s.value for s in RunState)}")
    job_id = None
    if "job" in q:
        job = await job_store.get_job(svc.pool, who, q["job"])
        if job is None:  # no such job of this tenant: no runs
            return json_response({"runs": [], "next_cursor": None})
        job_id = job.id
    runs = await run_store.list_runs(
        svc.pool, tenant_id=who, state=state, job_type=q.get("type"), limit=limit,
        before=decode_cursor(q["cursor"]) if "cursor" in q else None, job_id=job_id,
        created_after=_time(q, "created_after"), created_before=_time(q, "created_before"),
    )  # fmt: skip
    nxt = encode_cursor(runs[-1]["created_at"], runs[-1]["id"]) if len(runs) == limit else None
    return json_response({"runs": runs, "next_cursor": nxt})


def encode_cursor(created_at: str, run_id: str) -> str:
    """An opaque cursor: the (created_at, id) of the last run on a page."""
    return base64.urlsafe_b64encode(orjson.dumps([created_at, run_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = orjson.loads(raw)
        return datetime.fromisoformat(created_at), str(uuid.UUID(run_id))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise _bad("cursor", "not a cursor this API returned") from exc


def _int(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise _bad(name, f"must be an integer in [{low}, {high}]")
    return value


def _time(query: Any, name: str) -> datetime | None:
    if name not in query:
        return None
    try:
        value = datetime.fromisoformat(query[name])
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise _bad(name, "must be an ISO 8601 time with a time zone")
    return value


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"query parameter {name} {message}", [FieldError(name, message)])


async def get_run(request: web.Request) -> web.Response:
    client = Client(services(request), tenant=tenant(request))
    return json_response(await client.get(request.match_info["id"]))


async def cancel_run(request: web.Request) -> web.Response:
    await body(request)
    client = Client(services(request), tenant=tenant(request))
    run = await client.get(request.match_info["id"])  # 404 for unknown and foreign ids
    if run["id"] not in await client.cancel([run["id"]], "cancelled through the API"):
        raise Conflict(f"run {run['id']} is {run['state']}: only waiting or running runs cancel")
    return json_response(await client.get(run["id"]))


async def retry_run(request: web.Request) -> web.Response:
    """Replay a dead run: queued again with a fresh attempt budget (the type's max_attempts,
    or the run's own when its type is gone), and enqueued in Redis."""
    await body(request)
    svc = services(request)
    client = Client(svc, tenant=tenant(request))
    run = await client.get(request.match_info["id"])
    jt = svc.registry.types.get(run["type"])
    budget = jt.policy.max_attempts if jt is not None else run["max_attempts"]
    active = await run_store.replay_dead(svc.pool, run["id"], tenant(request), budget)
    if active is None:
        raise Conflict(f"run {run['id']} is {run['state']}: only dead runs can be retried")
    # A crash before this enqueue leaves a queued row that reconciliation enqueues.
    await svc.queue.enqueue([queued_run(active, svc.registry)])
    return json_response(await client.get(run["id"]), 202)


_STATES = [s.value for s in RunState]
_LIST_QUERY = (
    Param("state", {"enum": _STATES}, "only runs in this state"),
    Param("type", {"type": "string"}, "only runs of this job type"),
    Param("job", {"type": "string"}, "only runs of this job definition (by name)"),
    Param("created_after", {"type": "string", "format": "date-time"}, "created at or after"),
    Param("created_before", {"type": "string", "format": "date-time"}, "created before"),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}),
    Param("cursor", {"type": "string"}, "next_cursor of the previous page"),
)

ROUTES = [
    Route("POST", "/api/v1/runs", create_run, "Enqueue one run", "write", 202, "run", tag="runs",
          response="Run"),
    Route(
        "POST", "/api/v1/runs/batch", create_batch, "Enqueue many runs, all validated first",
        "write", 202, "batch", tag="runs", response="Batch",
    ),
    Route(
        "GET", "/api/v1/runs", list_runs, "Runs, newest first, with filters and cursor paging",
        query=_LIST_QUERY, tag="runs", response="RunPage",
    ),
    Route("GET", "/api/v1/runs/{id}", get_run, "One run with its attempts", tag="runs",
          response="Run"),
    Route(
        "POST", "/api/v1/runs/{id}/cancel", cancel_run, "Cancel a waiting or running run",
        "write", body="empty", body_required=False, tag="runs", response="Run",
    ),
    Route(
        "POST", "/api/v1/runs/{id}/retry", retry_run, "Replay a dead run", "write", 202,
        body="empty", body_required=False, tag="runs", response="Run",
    ),
]  # fmt: skip
