"""Inbound webhook triggers as users manage them (REST API and CLI): validated on the way in
(target exists, secrets fit the scheme, mapping placeholders are pointers, the hmac options only
for the hmac scheme), stored, and represented without their secrets."""

from __future__ import annotations

import builtins
from typing import Any

from host.errors import FieldError, NotFound, ValidationFailed
from host.services import Services
from host.store import jobs as job_store
from host.store import triggers as store
from host.store.triggers import Trigger
from webhooks.inbound import mapping as mappings
from webhooks.inbound.schemes import HMAC_DEFAULTS, check_secret

DEFAULT_TOLERANCE_S = 300
#: Default and largest body a trigger accepts (bytes).
DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_LIMIT = 10 * 1024 * 1024


class TriggerNotFound(NotFound):
    """Raised when a trigger name is not known (or belongs to another tenant)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"trigger {name!r} not found")


def represent(t: Trigger) -> dict[str, Any]:
    """A trigger as the API shows it: secrets by id and age only (they are write-only)."""
    return {
        "name": t.name, "hook": t.hook, "path": f"/hooks/{t.hook}", "type": t.type,
        "job": t.job, "scheme": t.scheme, "tolerance_s": t.tolerance_s, "mapping": t.mapping,
        "max_body_bytes": t.max_body_bytes, "rate": t.rate_per_s, "burst": t.burst,
        "hmac": {**HMAC_DEFAULTS, **t.options} if t.scheme == "hmac" else None,
        "enabled": t.enabled,
        "secrets": [{"id": s.id, "created_at": s.created_at.isoformat()} for s in t.secrets],
        "created_at": t.created_at.isoformat(), "updated_at": t.updated_at.isoformat(),
    }  # fmt: skip


class Triggers:
    """Create, list, show, change and delete the triggers of one tenant."""

    def __init__(self, services: Services, *, tenant: str | None = None) -> None:
        self.services = services
        self.tenant = tenant or services.settings.tenant

    async def create(self, data: dict[str, Any]) -> Trigger:
        """`data` as schemas/api/trigger.json describes it."""
        scheme = data["scheme"]
        errors = self._check_secrets(scheme, data["secrets"], "/secrets")
        errors += self._check_common(data, scheme)
        target, more = await self._target(data)
        if errors or more:
            raise ValidationFailed("trigger", errors + more)
        fields = {
            "name": data["name"], "scheme": scheme, **target,
            "tolerance_s": int(data.get("tolerance_s", DEFAULT_TOLERANCE_S)),
            "mapping": data.get("mapping"),
            "max_body_bytes": int(data.get("max_body_bytes", DEFAULT_MAX_BODY)),
            "rate_per_s": data.get("rate"), "burst": _int(data.get("burst")),
            "options": data.get("hmac") or {}, "enabled": data.get("enabled", True),
        }  # fmt: skip
        return await store.create(self.services.pool, self.tenant, fields, data["secrets"])

    async def get(self, name: str) -> Trigger:
        found = await store.get(self.services.pool, self.tenant, name)
        if found is None:
            raise TriggerNotFound(name)
        return found

    async def list(self) -> builtins.list[Trigger]:
        return await store.list_all(self.services.pool, self.tenant)

    async def update(self, name: str, data: dict[str, Any]) -> Trigger:
        """`data` as schemas/api/trigger_patch.json describes it."""
        current = await self.get(name)
        errors = self._check_secrets(current.scheme, data.get("add_secrets", []), "/add_secrets")
        errors += self._check_common(data, current.scheme)
        changes: dict[str, Any] = {}
        if "type" in data or "job" in data:
            target, more = await self._target(data)
            errors += more
            changes |= {"type": None, "job_id": None} | target
        if errors:
            raise ValidationFailed("trigger", errors)
        renames = {"rate": "rate_per_s", "hmac": "options"}
        for key in ("tolerance_s", "mapping", "max_body_bytes", "rate", "burst", "hmac",
                    "enabled"):  # fmt: skip
            if key in data:
                value = data[key]
                if key in ("tolerance_s", "max_body_bytes", "burst"):
                    value = _int(value)
                changes[renames.get(key, key)] = value
        updated = await store.update(
            self.services.pool, self.tenant, name, changes,
            data.get("add_secrets", []), data.get("remove_secrets", []),
        )  # fmt: skip
        if updated is None:
            raise TriggerNotFound(name)
        return updated

    async def delete(self, name: str) -> None:
        if not await store.delete(self.services.pool, self.tenant, name):
            raise TriggerNotFound(name)

    async def deliveries(
        self, name: str, *, limit: int = 50, before: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        found = await store.deliveries(
            self.services.pool, self.tenant, name, limit=limit, before=before
        )
        if found is None:
            raise TriggerNotFound(name)
        return found

    @staticmethod
    def _check_secrets(
        scheme: str, secrets: builtins.list[str], at: str
    ) -> builtins.list[FieldError]:
        errors = []
        for i, secret in enumerate(secrets):
            problem = check_secret(scheme, secret)
            if problem:
                errors.append(FieldError(f"{at}/{i}", problem))
        return errors

    @staticmethod
    def _check_common(data: dict[str, Any], scheme: str) -> builtins.list[FieldError]:
        errors = []
        if data.get("hmac") is not None and scheme != "hmac":
            errors.append(FieldError("/hmac", f"only for the hmac scheme, not {scheme}"))
        if data.get("mapping") is not None:
            errors += mappings.check_template(data["mapping"])
        return errors

    async def _target(
        self, data: dict[str, Any]
    ) -> tuple[dict[str, Any], builtins.list[FieldError]]:
        """{"type": ...} or {"job_id": ...} from the body's type or job name, or the errors."""
        if data.get("job") is not None:
            job = await job_store.get_job(self.services.pool, self.tenant, data["job"])
            if job is None:
                return {}, [FieldError("/job", f"job {data['job']!r} not found")]
            return {"job_id": job.id}, []
        if data.get("type") not in self.services.registry.types:
            return {}, [FieldError("/type", f"unknown job type {data.get('type')!r}")]
        return {"type": data["type"]}, []


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
