"""API keys and tenant isolation: 401 without a valid key, 403 without the scope, and a key of
one tenant gets 404 for another tenant's runs and jobs, with nothing changed."""

from __future__ import annotations

from typing import Any

from host.services import Services
from host.store import apikeys
from tests.api.conftest import Api, MakeKey, error_of
from tests.helpers import recorded, running_worker, wait_until


async def test_no_bad_or_revoked_key_is_401(api: Api, services: Services) -> None:
    error = await error_of(await api.get("/api/v1/runs"), 401)
    assert error["code"] == "unauthorized"
    for header in ("Bearer jh_nope", "Basic abc", "Bearer ", "jh_x"):
        await error_of(await api.get("/api/v1/runs", headers={"Authorization": header}), 401)
    key, record = await apikeys.create_key(services.pool, "acme", ["read"])
    headers = {"Authorization": f"Bearer {key}"}
    assert (await api.get("/api/v1/runs", headers=headers)).status == 200
    await apikeys.revoke(services.pool, record.id)
    await error_of(await api.get("/api/v1/runs", headers=headers), 401)


async def test_scopes_admin_implies_write_implies_read(api: Api, make_key: MakeKey) -> None:
    run = {"type": "noop", "payload": {}}
    read, write = await make_key("acme", "read"), await make_key("acme", "write")
    assert (await api.get("/api/v1/runs", headers=read)).status == 200
    error = await error_of(await api.post("/api/v1/runs", json=run, headers=read), 403)
    assert error["code"] == "forbidden" and "write" in error["message"]
    assert (await api.post("/api/v1/runs", json=run, headers=write)).status == 202
    assert (await api.get("/api/v1/runs", headers=write)).status == 200


async def test_last_used_time_is_recorded(api: Api, services: Services) -> None:
    key, record = await apikeys.create_key(services.pool, "acme", ["read"])
    assert record.last_used_at is None
    await api.get("/api/v1/types", headers={"Authorization": f"Bearer {key}"})
    (listed,) = await apikeys.list_keys(services.pool, "acme")
    assert listed.last_used_at is not None
    assert key not in str(listed.as_dict())  # only a prefix is ever shown


async def test_a_tenant_cannot_see_or_change_another_tenants_runs_and_jobs(
    api: Api, admin: dict[str, str], other: dict[str, str], services: Services
) -> None:
    async def ok(method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
        r = await api.request(method, path, headers=headers, **kw)
        assert r.status < 300, await r.text()
        return await r.json() if r.status != 204 else None

    job_body = {"name": "nightly", "type": "noop", "schedule": {"cron": "@daily"}}
    job = await ok("POST", "/api/v1/jobs", admin, json=job_body)
    queued = await ok("POST", "/api/v1/runs", admin,
                      json={"type": "noop", "payload": {}, "idempotency_key": "k"})  # fmt: skip
    rid = queued["id"]
    # Every endpoint that takes an id, with acme's ids and globex's key: 404, as for no such id.
    attempts = [
        ("GET", f"/api/v1/runs/{rid}", None), ("POST", f"/api/v1/runs/{rid}/cancel", None),
        ("POST", f"/api/v1/runs/{rid}/retry", None), ("GET", "/api/v1/jobs/nightly", None),
        ("PATCH", "/api/v1/jobs/nightly", {"enabled": False}),
        ("POST", "/api/v1/jobs/nightly/pause", None),
        ("POST", "/api/v1/jobs/nightly/resume", None),
        ("POST", "/api/v1/jobs/nightly/trigger", None), ("DELETE", "/api/v1/jobs/nightly", None),
    ]  # fmt: skip
    for method, path, body in attempts:
        mine = await api.request(method, path, headers=other, json=body)
        error = await error_of(mine, 404)
        unknown = path.replace(rid, "0190f1e4-0000-7000-8000-000000000000").replace(
            "nightly", "no-such-job"
        )
        none = await error_of(await api.request(method, unknown, headers=other, json=body), 404)
        assert error["code"] == none["code"] == "not_found"
    # Listings and counts show nothing of acme; the same idempotency key is a new run.
    assert (await ok("GET", "/api/v1/runs", other))["runs"] == []
    assert (await ok("GET", "/api/v1/runs?job=nightly&type=noop", other))["runs"] == []
    assert (await ok("GET", "/api/v1/jobs", other))["jobs"] == []
    assert (await ok("GET", "/api/v1/queues", other))["types"]["noop"]["ready"] == 0
    theirs = await ok("POST", "/api/v1/runs", other,
                      json={"type": "noop", "payload": {}, "idempotency_key": "k"})  # fmt: skip
    assert theirs["id"] != rid and theirs["created"] is True
    # Nothing of acme changed.
    assert (await ok("GET", f"/api/v1/runs/{rid}", admin))["state"] == "queued"
    after = await ok("GET", "/api/v1/jobs/nightly", admin)
    assert after["enabled"] is True and after["next_fire_at"] == job["next_fire_at"]
    runs = (await ok("GET", "/api/v1/runs", admin))["runs"]
    assert [r["id"] for r in runs] == [rid]  # the trigger made no run
    assert (await ok("GET", "/api/v1/queues", admin))["types"]["noop"]["ready"] == 1


async def test_workers_show_only_the_keys_tenants_current_runs(
    api: Api, admin: dict[str, str], other: dict[str, str], services: Services
) -> None:
    body = {"type": "test.record", "payload": {"sleep_s": 3, **recorded(services)}}
    run = await (await api.post("/api/v1/runs", json=body, headers=admin)).json()

    async def current(headers: dict[str, str]) -> list[str]:
        workers = (await (await api.get("/api/v1/workers", headers=headers)).json())["workers"]
        return [r for w in workers for r in w["current_runs"]]

    async with running_worker(services):

        async def shown() -> bool:
            return run["id"] in await current(admin)

        await wait_until(shown, 10)
        assert await current(other) == []
        workers = (await (await api.get("/api/v1/workers", headers=other)).json())["workers"]
        assert len(workers) == 1  # the shared worker is visible, not what it runs for acme
