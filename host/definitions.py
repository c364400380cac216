"""Job definitions as users manage them (CLI now, the REST API later): validated on the way in
(type known, payload valid against the type's schema, schedule parseable), then stored."""

from __future__ import annotations

import builtins
import re
from datetime import UTC, datetime
from typing import Any

from host.client import Client, Enqueued, RunRequest
from host.cron import Schedule, fire_times, next_fire, parse_schedule
from host.errors import FieldError, JobNotFound, ValidationFailed
from host.policy import MAX_PRIORITY, MIN_PRIORITY
from host.services import Services
from host.store import jobs as job_store
from host.store.jobs import JobDef

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class JobDefinitions:
    """Create, list, pause, resume, delete and trigger the job definitions of one tenant."""

    def __init__(self, services: Services, *, tenant: str | None = None) -> None:
        self.services = services
        self.tenant = tenant or services.settings.tenant

    async def create(
        self,
        name: str,
        type: str,
        payload: dict[str, Any],
        *,
        schedule: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> JobDef:
        """Validate and store a definition; a scheduled one fires from its next tick on."""
        errors = []
        if not _NAME.match(name):
            errors.append(FieldError("/name", "must be 1-128 letters, digits, _ . - "))
        if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            errors.append(
                FieldError("/priority", f"must be an integer in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
            )
        if errors:
            raise ValidationFailed("job", errors)
        self.services.registry.get(type)  # UnknownJobType names it
        self.services.registry.validate(type, payload)
        parsed = parse_schedule(schedule) if schedule is not None else None
        first = next_fire(parsed, datetime.now(UTC)) if parsed else None
        return await job_store.create_job(
            self.services.pool, tenant_id=self.tenant, name=name, type=type, payload=payload,
            schedule=parsed, priority=priority, next_fire_at=first,
        )  # fmt: skip

    async def get(self, name: str) -> JobDef:
        job = await job_store.get_job(self.services.pool, self.tenant, name)
        if job is None:
            raise JobNotFound(name)
        return job

    async def list(self) -> list[JobDef]:
        return await job_store.list_jobs(self.services.pool, self.tenant)

    async def pause(self, name: str) -> JobDef:
        job = await self.get(name)
        return await self._set(name, False, job.next_fire_at)

    async def resume(self, name: str) -> JobDef:
        """Enable again. By default the schedule restarts from its next tick (paused ticks are
        not owed); with `backfill_on_resume` the paused ticks count as missed and the misfire
        policy decides (skip, once, catch_up)."""
        job = await self.get(name)
        if job.schedule is None:
            return await self._set(name, True, None)
        return await self._set(name, True, _resumed_at(job.schedule, job.next_fire_at))

    async def _set(self, name: str, enabled: bool, next_at: datetime | None) -> JobDef:
        job = await job_store.set_enabled(self.services.pool, self.tenant, name, enabled, next_at)
        if job is None:
            raise JobNotFound(name)
        return job

    async def update(self, name: str, changes: dict[str, Any]) -> JobDef:
        """Change some of payload, schedule (None: on demand only), priority (None: the type's)
        and enabled. A new schedule starts from its next tick; enabling resumes as `resume`."""
        job = await self.get(name)
        if "payload" in changes:
            self.services.registry.validate(job.type, changes["payload"])
        schedule = job.schedule
        if "schedule" in changes:
            raw = changes["schedule"]
            schedule = parse_schedule(raw) if raw is not None else None
        enabled = changes.get("enabled", job.enabled)
        next_at = job.next_fire_at
        if "schedule" in changes:
            next_at = next_fire(schedule, datetime.now(UTC)) if schedule else None
        elif enabled and not job.enabled and schedule is not None:
            next_at = _resumed_at(schedule, job.next_fire_at)
        updated = await job_store.update_job(
            self.services.pool, self.tenant, name, payload=changes.get("payload", job.payload),
            schedule=schedule, priority=changes.get("priority", job.priority), enabled=enabled,
            next_fire_at=next_at,
        )  # fmt: skip
        if updated is None:
            raise JobNotFound(name)
        return updated

    async def delete(self, name: str) -> None:
        if not await job_store.delete_job(self.services.pool, self.tenant, name):
            raise JobNotFound(name)

    async def trigger(self, name: str) -> Enqueued:
        """Run the definition now, outside its schedule (no overlap policy applies)."""
        job = await self.get(name)
        request = RunRequest(job.type, job.payload, priority=job.priority, job_id=job.id)
        return (await Client(self.services, tenant=self.tenant).enqueue_many([request]))[0]

    @staticmethod
    def next_times(
        job: JobDef, count: int, after: datetime | None = None
    ) -> builtins.list[datetime]:
        """The next `count` fire times of a scheduled definition (none for an unscheduled one)."""
        if job.schedule is None:
            return []
        return fire_times(job.schedule, after or datetime.now(UTC), count)


def _resumed_at(schedule: Schedule, paused_next: datetime | None) -> datetime | None:
    """Where a resumed schedule starts: its next tick, or (backfill_on_resume) the first tick
    missed while paused."""
    if schedule.backfill_on_resume and paused_next is not None:
        return paused_next
    return next_fire(schedule, datetime.now(UTC))
