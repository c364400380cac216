"""The Python client applications use to enqueue runs and look them up.

It validates payloads exactly as every other entry point does (the registry's validators), writes
the runs to PostgreSQL first (the truth) in one statement per batch, then enqueues them in Redis
with one script call. A crash between the two leaves queued rows that reconciliation re-enqueues;
it never leaves a Redis run without its PostgreSQL record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from host.errors import FieldError, RunNotFound, ValidationFailed
from host.ids import new_run_id_text, new_run_ids_text
from host.lanes import lane_of
from host.policy import MAX_PRIORITY, MIN_PRIORITY, Policy
from host.queue.queue import QueuedRun
from host.services import Services
from host.states import TERMINAL_STATES
from host.store import runs as run_store


@dataclass(frozen=True)
class RunRequest:
    """One run to enqueue. Unset fields take the job type's policy."""

    type: str
    payload: dict[str, Any]
    priority: int | None = None
    delay_s: float | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    job_id: str | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: the run's id and whether this call created it."""

    id: str
    type: str
    state: str
    created: bool  #: False when the idempotency key named an existing run


class Client:
    """Enqueue, look up and wait for runs of one tenant."""

    def __init__(self, services: Services, *, tenant: str | None = None) -> None:
        self.services = services
        self.tenant = tenant or services.settings.tenant

    async def enqueue(self, type: str, payload: dict[str, Any], **options: Any) -> Enqueued:
        """Validate and enqueue one run; see RunRequest for the options."""
        return (await self.enqueue_many([RunRequest(type, payload, **options)]))[0]

    async def enqueue_many(self, requests: Sequence[RunRequest]) -> list[Enqueued]:
        """Validate every request first (nothing is queued if any is invalid), then enqueue all
        with one PostgreSQL statement and one Redis call."""
        prepared = self._prepare_all(requests)
        rows = [p[0] for p in prepared]
        inserted = await run_store.insert_runs(self.services.hot_pool, rows)
        fresh = [p[1] for p in prepared if p[0].id in inserted]
        await self.services.queue.enqueue(fresh)
        existing = await self._existing([p[0] for p in prepared if p[0].id not in inserted])
        out = []
        for row, _ in prepared:
            if row.id in inserted:
                state = "scheduled" if row.delay_s > 0 else "queued"
                out.append(Enqueued(row.id, row.type, state, True))
            else:
                found = existing[row.idempotency_key or ""]
                out.append(Enqueued(found["id"], found["type"], found["state"], False))
        return out

    def _prepare_all(
        self, requests: Sequence[RunRequest]
    ) -> list[tuple[run_store.NewRun, QueuedRun]]:
        """`_prepare` for every request, with what depends only on the job type worked out
        once per type. A plain request (payload only: every option unset) whose payload
        passes takes the short path below; anything else, and any payload that fails (for
        its error message), goes through `_prepare`, which gives the same result. A single
        request goes there too: a plan costs about as much as it saves on two runs."""
        total = len(requests)
        if total == 1:
            return [self._prepare(0, requests[0], 1)]
        ids = new_run_ids_text(total)
        tenant = self.tenant
        plans: dict[str, _Plan | None] = {}
        validate = self.services.registry.validate
        dumps, NewRun = orjson.dumps, run_store.NewRun
        out = []
        for index, req in enumerate(requests):
            name = req.type
            plan = plans[name] if name in plans else plans.setdefault(name, self._plan(name))
            if plan is None or not _is_plain(req):
                out.append(self._prepare(index, req, total, ids[index]))
                continue
            try:
                validate(name, req.payload)
            except ValidationFailed:
                out.append(self._prepare(index, req, total, ids[index]))
                continue
            run_id = ids[index]
            payload_json = dumps(req.payload)
            env = b"".join((_ENVELOPE_START, run_id.encode(), plan.tail, payload_json, b"}"))
            priority, max_attempts = plan.priority, plan.max_attempts
            lane = plan.lane if plan.lane is not None else lane_of(plan.policy, tenant, req.payload)
            out.append(
                (
                    NewRun(
                        run_id, tenant, name, payload_json, priority, max_attempts,
                        plan.timeout_s, 0.0,
                    ),
                    QueuedRun(run_id, name, priority, max_attempts, 0, env, 0, lane),
                )
            )  # fmt: skip
        return out

    def _plan(self, name: str) -> _Plan | None:
        """What a plain request of type `name` gets from its policy, or None when it gets
        nothing the short path can use (an unknown type, or a policy default that fails
        _check_options: `_prepare` raises for those)."""
        jt = self.services.registry.types.get(name)
        if jt is None:
            return None
        policy = jt.policy
        try:
            plain = RunRequest(name, {})
            _check_options("run", policy.priority, policy.max_attempts, policy.timeout_s, plain)
        except ValidationFailed:
            return None
        probe = envelope(
            _PROBE_ID, name, self.tenant, policy.max_attempts, policy.timeout_s, None, b""
        )
        head = _ENVELOPE_START + _PROBE_ID.encode()
        if not probe.startswith(head) or not probe.endswith(b"}"):
            return None
        lane = self.tenant if policy.lane_key is None else None
        return _Plan(
            policy, policy.priority, policy.max_attempts, policy.timeout_s, lane,
            probe[len(head) : -1],
        )  # fmt: skip

    def _prepare(
        self, index: int, req: RunRequest, total: int, run_id: str | None = None
    ) -> tuple[run_store.NewRun, QueuedRun]:
        registry = self.services.registry
        what = f"run {index}" if total > 1 else "run"
        try:
            jt = registry.get(req.type)
            registry.validate(req.type, req.payload)
        except ValidationFailed as exc:
            if total > 1:
                errors = [type(e)(f"/{index}/payload{e.path}", e.message) for e in exc.errors]
                raise ValidationFailed(
                    f"{what} payload for job type {req.type!r}", errors
                ) from None
            raise
        policy = jt.policy
        priority = policy.priority if req.priority is None else req.priority
        max_attempts = policy.max_attempts if req.max_attempts is None else req.max_attempts
        timeout_s = policy.timeout_s if req.timeout_s is None else req.timeout_s
        _check_options(what, priority, max_attempts, timeout_s, req)
        delay_s = _delay(req)
        if run_id is None:
            run_id = new_run_id_text()
        payload_json = orjson.dumps(req.payload)
        env = envelope(
            run_id, req.type, self.tenant, max_attempts, timeout_s, req.job_id, payload_json
        )
        row = run_store.NewRun(
            id=run_id,
            tenant_id=self.tenant,
            type=req.type,
            payload_json=payload_json,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            delay_s=delay_s,
            idempotency_key=req.idempotency_key,
            job_id=req.job_id,
            scheduled_for=req.scheduled_for,
        )
        queued = QueuedRun(
            run_id, req.type, priority, max_attempts, int(delay_s * 1000), env,
            lane=lane_of(policy, self.tenant, req.payload),
        )  # fmt: skip
        return row, queued

    async def _existing(self, rows: Sequence[run_store.NewRun]) -> dict[str, dict[str, Any]]:
        keys = [r.idempotency_key for r in rows if r.idempotency_key]
        if len(keys) != len(rows):
            raise RuntimeError("a run without an idempotency key conflicted on its fresh id")
        if not keys:
            return {}
        return await run_store.find_by_idempotency(self.services.pool, self.tenant, keys)

    async def get(self, run_id: str) -> dict[str, Any]:
        """A run with its attempts (and its last progress report while it runs)."""
        run = await run_store.get_run(self.services.pool, run_id, self.tenant)
        if run is None:
            raise RunNotFound(run_id)
        progress = await self.services.queue.get_progress(run["id"])
        if progress is not None:
            run["progress"] = orjson.loads(progress)
        return run

    async def list(self, **filters: Any) -> list[dict[str, Any]]:
        return await run_store.list_runs(self.services.pool, tenant_id=self.tenant, **filters)

    async def wait(self, run_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll until the run is final (succeeded, dead or cancelled); TimeoutError past timeout."""
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            run = await self.get(run_id)
            if run["state"] in TERMINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout_s}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def prepare(self, req: RunRequest) -> tuple[run_store.NewRun, QueuedRun]:
        """Validate one request and build its PostgreSQL row and Redis entry without writing
        either: for callers that insert inside their own transaction and enqueue after the
        commit (the scheduler's fenced cron fires). ValidationFailed or UnknownJobType when
        the request is invalid."""
        return self._prepare(0, req, 1)

    async def cancel(self, run_ids: Sequence[str], reason: str = "cancelled") -> set[str]:
        """Cancel waiting or running runs: PostgreSQL marks them cancelled (final) first, then
        Redis drops the waiting ones; a running one finishes but its result is fenced off.
        Returns the ids that were active (and are now cancelled)."""
        cancelled = await run_store.cancel_runs(self.services.pool, run_ids, reason)
        await self.services.queue.cancel(sorted(cancelled))
        return cancelled


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every plain request of one job type shares, within one enqueue_many call."""

    policy: Policy
    priority: int
    max_attempts: int
    timeout_s: float
    lane: str | None  #: None when the lane depends on the payload (the type has a lane_key)
    tail: bytes  #: the envelope after the run id, up to where the payload goes


#: The envelope's start, up to the run id (which needs no escaping: hex digits and dashes).
_ENVELOPE_START = b'{"id":"'
_PROBE_ID = "00000000-0000-7000-8000-000000000000"


def _is_plain(req: RunRequest) -> bool:
    """Whether `req` sets no option: the policy decides everything but the payload."""
    return (
        req.priority is None
        and req.max_attempts is None
        and req.timeout_s is None
        and req.delay_s is None
        and req.run_at is None
        and req.idempotency_key is None
        and req.job_id is None
        and req.scheduled_for is None
    )


def _check_options(
    what: str, priority: int, max_attempts: int, timeout_s: float, req: RunRequest
) -> None:
    errors = []
    if not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        errors.append(
            FieldError("/priority", f"must be an integer in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
        )
    if not isinstance(max_attempts, int) or max_attempts < 1:
        errors.append(FieldError("/max_attempts", "must be an integer >= 1"))
    if not isinstance(timeout_s, int | float) or timeout_s <= 0:
        errors.append(FieldError("/timeout_s", "must be a positive number"))
    if req.delay_s is not None and req.run_at is not None:
        errors.append(FieldError("/delay_s", "give delay_s or run_at, not both"))
    if req.delay_s is not None and req.delay_s < 0:
        errors.append(FieldError("/delay_s", "must be >= 0"))
    if req.run_at is not None and req.run_at.tzinfo is None:
        errors.append(FieldError("/run_at", "must carry a time zone"))
    if req.idempotency_key is not None and not 0 < len(req.idempotency_key) <= 200:
        errors.append(FieldError("/idempotency_key", "must be 1-200 characters"))
    if errors:
        raise ValidationFailed(what, errors)


def _delay(req: RunRequest) -> float:
    if req.run_at is not None:
        return max(0.0, (req.run_at - datetime.now(UTC)).total_seconds())
    return float(req.delay_s or 0.0)


def envelope(
    run_id: str,
    job_type: str,
    tenant: str,
    max_attempts: int,
    timeout_s: float,
    job_id: str | None,
    payload_json: bytes,
) -> bytes:
    """The JSON a worker needs to start the run; the payload is spliced in, not re-encoded.
    Reconciliation builds the same envelope from a PostgreSQL row."""
    head = orjson.dumps(
        {
            "id": run_id,
            "type": job_type,
            "tenant": tenant,
            "max_attempts": max_attempts,
            "timeout_s": timeout_s,
            "job_id": job_id,
        }
    )
    return head[:-1] + b',"payload":' + payload_json + b"}"
