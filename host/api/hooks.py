"""POST /hooks/{hook}: an inbound webhook. No API key: the signature is the authentication.

In order: the trigger (404 when unknown or disabled), the body limit before reading it all
(413), the signature and timestamp per scheme with every active secret (401, one message
whatever failed), the trigger's token bucket in Redis (429 with Retry-After), the event as JSON
(400, also when nested deeper than MAX_DEPTH), the mapping and the job type's schema (422
naming the path). Then, in one PostgreSQL transaction, the replay key (signed: see
webhooks.inbound.schemes) is claimed in the replay table and the run inserted: a key seen before
answers 202 with the earlier run and queues nothing. The run reaches Redis after the commit (a
crash in between leaves a queued row that reconciliation enqueues).

Every delivery to a known trigger is recorded with its outcome, the sender's delivery id and
the precise reason, which the caller is not told; refusals only up to the trigger's refusal log
bucket (webhooks.inbound.ratelimit), beyond which they are counted, so unsigned requests cannot
grow the log without limit.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from aiohttp import web

from host.api.errors import error_response, retry_after
from host.api.routes import Route, json_response, services
from host.api.validation import MAX_DEPTH, check_payload, nul_paths, too_deep
from host.client import Client, RunRequest
from host.errors import FieldError, NotFound, ValidationFailed
from host.services import Services
from host.store import jobs as job_store
from host.store import runs as run_store
from host.store import triggers as store
from host.store.triggers import Delivery, Trigger
from webhooks.inbound import mapping as mappings
from webhooks.inbound.ratelimit import HookBuckets
from webhooks.inbound.schemes import Check, Rejected, verify

#: The app's HookBuckets, made in its cleanup context.
HOOK_BUCKETS = web.AppKey("hook_buckets", HookBuckets)

_UNVERIFIED = "the delivery could not be verified"


class Refusal(Exception):
    """A delivery answered with an error: the log's reason and detail, the caller's answer."""

    def __init__(
        self,
        reason: str,
        status: int,
        code: str,
        message: str,
        *,
        detail: str = "",
        details: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        delivery_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail or message}")
        self.reason, self.status, self.code, self.message = reason, status, code, message
        self.detail = detail or message
        self.details = details or []
        self.headers = headers
        self.delivery_id = delivery_id

    def response(self) -> web.Response:
        details = [{"path": d.path, "message": d.message} for d in self.details]
        return error_response(self.status, self.code, self.message, details, self.headers)


async def receive(request: web.Request) -> web.Response:
    svc = services(request)
    trigger = await store.by_hook(svc.pool, request.match_info["name"])
    if trigger is None:
        raise NotFound("no such hook")
    try:
        return await _accept(request, svc, trigger)
    except Refusal as refusal:
        if await request.app[HOOK_BUCKETS].may_log_refusal(trigger.id):
            await store.record(svc.pool, Delivery(
                trigger, "rejected", refusal.reason, refusal.status, refusal.delivery_id,
                detail=refusal.detail,
            ))  # fmt: skip
        return refusal.response()


async def _accept(request: web.Request, svc: Services, trigger: Trigger) -> web.Response:
    if not trigger.enabled:
        raise Refusal("disabled", 404, "not_found", "no such hook", detail="trigger disabled")
    body = await _read(request, trigger.max_body_bytes)
    check = Check([s.secret for s in trigger.secrets], trigger.tolerance_s, trigger.options,
                  time.time())  # fmt: skip
    try:
        verified = verify(trigger.scheme, check, request.headers, body)
    except Rejected as exc:
        raise Refusal(exc.reason, 401, "unauthorized", _UNVERIFIED, detail=exc.detail) from None
    replay_key = _short(verified.replay_key)
    delivery_id = _short(verified.delivery_id or verified.replay_key)  # the sender's, for the log
    await _take_token(request, trigger, delivery_id)
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal("malformed", 400, "bad_request", "the body is not valid JSON",
                      detail=str(exc), delivery_id=delivery_id) from None  # fmt: skip
    if too_deep(event, body):  # orjson cannot serialise the run beyond 254 levels
        nested = f"the body is nested deeper than {MAX_DEPTH} levels"
        raise Refusal("malformed", 400, "bad_request", nested, delivery_id=delivery_id)
    paths = sorted(nul_paths(event, "")) if b"\\u0000" in body else []
    if paths:  # PostgreSQL cannot store NUL in jsonb
        raise Refusal("invalid_payload", 422, "validation_failed",
                      "the event must not contain the NUL character (\\u0000)",
                      detail=f"NUL at {', '.join(paths[:5])}", delivery_id=delivery_id,
                      details=[FieldError(p, "contains NUL") for p in paths])  # fmt: skip
    req = await _run_request(svc, trigger, event, delivery_id)
    return await _enqueue(svc, trigger, req, delivery_id, replay_key)


def _short(key: str) -> str:
    """`key`, or its hash when over 200 characters: the log and replay table stay small, and
    the hash is as unique."""
    return key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


async def _read(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: from Content-Length
    before reading anything, else while reading."""
    too_large = Refusal("too_large", 413, "payload_too_large", "the request body is too large",
                        detail=f"over {limit} bytes")  # fmt: skip
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _take_token(request: web.Request, trigger: Trigger, delivery_id: str) -> None:
    if trigger.rate_per_s is None:
        return
    wait_s = await request.app[HOOK_BUCKETS].take(trigger.id, trigger.rate_per_s, trigger.burst)
    if wait_s > 0:
        raise Refusal(
            "rate_limited", 429, "rate_limited", "over this hook's rate; retry later",
            detail=f"next token in {wait_s:.3f}s", delivery_id=delivery_id,
            headers=retry_after(wait_s),
        )  # fmt: skip


async def _run_request(svc: Services, trigger: Trigger, event: Any, delivery_id: str) -> RunRequest:
    """The run the event asks for: the target's type, the mapped payload checked against the
    type's schema (422 naming the path otherwise)."""

    def invalid(errors: list[FieldError]) -> Refusal:
        text = "; ".join(f"{e.path}: {e.message}" for e in errors)
        return Refusal("invalid_payload", 422, "validation_failed",
                       f"the event does not make a valid payload: {text}", detail=text,
                       details=errors, delivery_id=delivery_id)  # fmt: skip

    try:
        mapped = event if trigger.mapping is None else mappings.apply(trigger.mapping, event)
    except mappings.MappingError as exc:
        raise invalid(exc.errors) from None
    job_type, payload, job_id = trigger.type, mapped, None
    if trigger.job is not None:
        job = await job_store.get_job(svc.pool, trigger.tenant_id, trigger.job)
        if job is not None:
            extra = mapped if trigger.mapping is not None and isinstance(mapped, dict) else {}
            job_type, payload, job_id = job.type, {**job.payload, **extra}, job.id
    if job_type is None:
        raise Refusal("no_target", 404, "not_found", "no such hook",
                      detail="the trigger's job definition is gone")  # fmt: skip
    if not isinstance(payload, dict):
        raise invalid([FieldError("/payload", "must be a JSON object")])
    try:
        check_payload(svc.registry, job_type, payload)
    except ValidationFailed as exc:
        raise invalid(exc.errors) from None
    return RunRequest(job_type, payload, job_id=job_id)


async def _enqueue(
    svc: Services, trigger: Trigger, req: RunRequest, delivery_id: str, replay_key: str
) -> web.Response:
    row, queued = Client(svc, tenant=trigger.tenant_id).prepare(req)
    async with svc.pool.acquire() as conn, conn.transaction():
        earlier = await store.claim_delivery(conn, trigger.id, replay_key, row.id)
        if earlier is None:
            await run_store.insert_runs(conn, [row])
        await store.record(conn, Delivery(
            trigger, "accepted" if earlier is None else "replay",
            "accepted" if earlier is None else "replay", 202, delivery_id, earlier or row.id,
        ))  # fmt: skip
    if earlier is not None:
        run = await run_store.get_run(svc.pool, earlier, trigger.tenant_id, attempts=False)
        state = run["state"] if run else "queued"
        return _accepted(earlier, req.type if run is None else run["type"], state, delivery_id,
                         created=False)  # fmt: skip
    await svc.queue.enqueue([queued])
    state = "scheduled" if row.delay_s > 0 else "queued"
    return _accepted(row.id, row.type, state, delivery_id, created=True)


def _accepted(run_id: str, job_type: str, state: str, delivery_id: str, *, created: bool
              ) -> web.Response:  # fmt: skip
    return json_response({"id": run_id, "type": job_type, "state": state, "created": created,
                          "delivery_id": delivery_id}, 202)  # fmt: skip


ROUTES = [
    Route(
        "POST", "/hooks/{name}", receive,
        "An inbound webhook for the trigger whose hook id is {name}: signed, not API-keyed",
        scope=None, status=202, tag="hooks", response="HookAccepted",
        errors=(400, 401, 404, 413, 422, 429),
    ),
]  # fmt: skip
