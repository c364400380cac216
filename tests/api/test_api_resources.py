"""Job definitions, types, queues, workers and health over HTTP."""

from __future__ import annotations

from datetime import datetime

from host.services import Services
from tests.api.conftest import Api, error_of
from tests.helpers import running_worker, wait_until


async def test_job_definitions_lifecycle(api: Api, admin: dict[str, str]) -> None:
    body = {"name": "nightly", "type": "noop", "payload": {},
            "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Paris"}}  # fmt: skip
    r = await api.post("/api/v1/jobs", json=body, headers=admin)
    assert r.status == 201, await r.text()
    job = await r.json()
    assert job["enabled"] and len(job["next_fire_times"]) == 5
    assert datetime.fromisoformat(job["next_fire_times"][0]).astimezone().tzinfo is not None
    error = await error_of(await api.post("/api/v1/jobs", json=body, headers=admin), 409)
    assert error["code"] == "conflict"

    r = await api.patch("/api/v1/jobs/nightly", json={"schedule": {"cron": "@hourly"},
                        "priority": 3}, headers=admin)  # fmt: skip
    job = await r.json()
    assert r.status == 200 and job["schedule"]["cron"] == "@hourly" and job["priority"] == 3
    r = await api.patch("/api/v1/jobs/nightly", json={"enabled": False}, headers=admin)
    assert (await r.json())["enabled"] is False and (await r.json())["next_fire_times"] == []
    r = await api.post("/api/v1/jobs/nightly/resume", headers=admin)
    assert (await r.json())["enabled"] is True
    r = await api.post("/api/v1/jobs/nightly/pause", headers=admin)
    assert (await r.json())["enabled"] is False
    r = await api.patch("/api/v1/jobs/nightly", json={"schedule": None}, headers=admin)
    assert (await r.json())["schedule"] is None

    r = await api.post("/api/v1/jobs/nightly/trigger", headers=admin)
    assert r.status == 202
    run_id = (await r.json())["id"]
    run = await (await api.get(f"/api/v1/runs/{run_id}", headers=admin)).json()
    assert run["job_id"] == job["id"]

    listed = await (await api.get("/api/v1/jobs", headers=admin)).json()
    assert [j["name"] for j in listed["jobs"]] == ["nightly"]
    assert (await api.get("/api/v1/jobs/nightly", headers=admin)).status == 200
    assert (await api.delete("/api/v1/jobs/nightly", headers=admin)).status == 204
    await error_of(await api.get("/api/v1/jobs/nightly", headers=admin), 404)


async def test_job_validation_errors(api: Api, admin: dict[str, str]) -> None:
    bad_cron = {"name": "x", "type": "noop", "schedule": {"cron": "every day"}}
    error = await error_of(await api.post("/api/v1/jobs", json=bad_cron, headers=admin), 422)
    assert error["details"][0]["path"] == "/schedule/cron"
    bad_payload = {"name": "x", "type": "sleep", "payload": {"seconds": "x"}}
    error = await error_of(await api.post("/api/v1/jobs", json=bad_payload, headers=admin), 422)
    assert error["details"][0]["path"] == "/payload/seconds"
    await api.post("/api/v1/jobs", json={"name": "s", "type": "sleep",
                   "payload": {"seconds": 0}}, headers=admin)  # fmt: skip
    r = await api.patch("/api/v1/jobs/s", json={"payload": {"seconds": "x"}}, headers=admin)
    assert (await error_of(r, 422))["details"][0]["path"] == "/payload/seconds"
    await error_of(await api.patch("/api/v1/jobs/s", json={}, headers=admin), 422)
    unknown = {"name": "u", "type": "nope"}
    error = await error_of(await api.post("/api/v1/jobs", json=unknown, headers=admin), 422)
    assert error["details"][0]["path"] == "/type"


async def test_types_lists_schema_and_policy(api: Api, admin: dict[str, str]) -> None:
    types = (await (await api.get("/api/v1/types", headers=admin)).json())["types"]
    sleep = next(t for t in types if t["name"] == "sleep")
    assert sleep["schema"]["type"] == "object" and "max_attempts" in sleep["policy"]


async def test_queues_count_ready_delayed_and_dead(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    runs = [{"type": "noop", "payload": {}}] * 3 + [{"type": "noop", "payload": {},
            "delay_s": 60}]  # fmt: skip
    await api.post("/api/v1/runs/batch", json={"runs": runs}, headers=admin)
    queues = (await (await api.get("/api/v1/queues", headers=admin)).json())["types"]
    assert queues["noop"]["ready"] == 3 and queues["noop"]["delayed"] == 1
    assert set(queues["noop"]) >= {"in_flight", "dead", "throttled", "tokens", "limits"}


async def test_workers_show_heartbeat_age(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    async with running_worker(services):

        async def listed() -> bool:
            r = await api.get("/api/v1/workers", headers=admin)
            return bool((await r.json())["workers"])

        await wait_until(listed)
        worker = (await (await api.get("/api/v1/workers", headers=admin)).json())["workers"][0]
    assert worker["alive"] is True and worker["heartbeat_age_s"] < 5
    assert worker["current_runs"] == []


async def test_health_and_readiness_need_no_key(api: Api) -> None:
    assert (await (await api.get("/healthz")).json()) == {"status": "ok"}
    r = await api.get("/readyz")
    assert r.status == 200
    assert (await r.json())["checks"] == {"postgresql": "ok", "redis": "ok"}
