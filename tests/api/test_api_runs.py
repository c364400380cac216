"""Runs over HTTP: enqueue one and many, idempotency, show, list with filters and cursor paging,
cancel and retry of dead runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from host.client import Client, RunRequest
from host.services import Services
from tests.api.conftest import Api, error_of
from tests.helpers import running_worker, wait_until


async def test_enqueue_answers_202_with_the_run(api: Api, admin: dict[str, str]) -> None:
    r = await api.post(
        "/api/v1/runs", json={"type": "noop", "payload": {}, "priority": 7}, headers=admin
    )
    assert r.status == 202
    run = await r.json()
    assert run["type"] == "noop" and run["state"] == "queued" and run["priority"] == 7
    assert run["created"] is True and run["attempts"] == []
    r = await api.get(f"/api/v1/runs/{run['id']}", headers=admin)
    assert r.status == 200 and (await r.json())["id"] == run["id"]


async def test_delay_and_run_at_schedule_the_run(api: Api, admin: dict[str, str]) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for extra in ({"delay_s": 60}, {"run_at": later}):
        r = await api.post("/api/v1/runs", json={"type": "noop", "payload": {}, **extra},
                           headers=admin)  # fmt: skip
        assert r.status == 202 and (await r.json())["state"] == "scheduled"
    both = {"type": "noop", "payload": {}, "delay_s": 1, "run_at": later}
    error = await error_of(await api.post("/api/v1/runs", json=both, headers=admin), 422)
    assert error["code"] == "validation_failed"


async def test_idempotency_key_returns_the_existing_run(api: Api, admin: dict[str, str]) -> None:
    body = {"type": "noop", "payload": {}, "idempotency_key": "order-42"}
    first = await (await api.post("/api/v1/runs", json=body, headers=admin)).json()
    again = await api.post("/api/v1/runs", json=body, headers=admin)
    second = await again.json()
    assert again.status == 202 and second["id"] == first["id"] and second["created"] is False
    listed = await (await api.get("/api/v1/runs", headers=admin)).json()
    assert [r["id"] for r in listed["runs"]] == [first["id"]]


async def test_enqueueing_a_finished_run_again_answers_it_with_its_attempts(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    body = {"type": "noop", "payload": {}, "idempotency_key": "order-43"}
    first = await (await api.post("/api/v1/runs", json=body, headers=admin)).json()
    assert first["created"] is True and first["attempts"] == []  # read back in one query
    async with running_worker(services):
        await Client(services, tenant="acme").wait(first["id"], 20)
    second = await (await api.post("/api/v1/runs", json=body, headers=admin)).json()
    assert second["created"] is False and second["state"] == "succeeded"
    assert [(a["attempt"], a["outcome"]) for a in second["attempts"]] == [(1, "succeeded")]


async def test_payload_errors_name_the_failing_path(api: Api, admin: dict[str, str]) -> None:
    r = await api.post("/api/v1/runs", json={"type": "test.strict", "payload": {}},
                       headers=admin)  # fmt: skip
    error = await error_of(r, 422)
    assert error["details"] and all(d["path"].startswith("/payload") for d in error["details"])
    r = await api.post("/api/v1/runs", json={"type": "nope", "payload": {}}, headers=admin)
    error = await error_of(r, 422)
    assert error["details"][0]["path"] == "/type"


async def test_batch_validates_all_first_and_queues_none_if_any_is_invalid(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    good = {"type": "sleep", "payload": {"seconds": 0}}
    bad = {"type": "sleep", "payload": {"seconds": "x"}}
    r = await api.post("/api/v1/runs/batch", json={"runs": [good, good, bad]}, headers=admin)
    error = await error_of(r, 422)
    assert [d["path"] for d in error["details"]] == ["/runs/2/payload/seconds"]
    assert (await (await api.get("/api/v1/runs", headers=admin)).json())["runs"] == []
    r = await api.post("/api/v1/runs/batch", json={"runs": [good, {"type": "sleep"}]},
                       headers=admin)  # fmt: skip
    error = await error_of(r, 422)
    assert error["details"][0]["path"] == "/runs/1"
    r = await api.post("/api/v1/runs/batch", json={"runs": [good] * 3}, headers=admin)
    assert r.status == 202
    runs = (await r.json())["runs"]
    assert len({x["id"] for x in runs}) == 3 and all(x["created"] for x in runs)
    assert (await services.queue.depths(["sleep"]))["sleep"] == 3


async def test_list_filters_by_state_type_job_and_time(api: Api, admin: dict[str, str]) -> None:
    await api.post("/api/v1/jobs", json={"name": "j", "type": "noop"}, headers=admin)
    await api.post("/api/v1/jobs/j/trigger", headers=admin)
    await api.post("/api/v1/runs", json={"type": "noop", "payload": {}, "delay_s": 60},
                   headers=admin)  # fmt: skip
    await api.post("/api/v1/runs", json={"type": "sleep", "payload": {"seconds": 0}},
                   headers=admin)  # fmt: skip

    async def ids(query: str) -> list[str]:
        r = await api.get(f"/api/v1/runs?{query}", headers=admin)
        assert r.status == 200, await r.text()
        return [x["type"] + ":" + x["state"] for x in (await r.json())["runs"]]

    assert sorted(await ids("")) == ["noop:queued", "noop:scheduled", "sleep:queued"]
    assert await ids("state=scheduled") == ["noop:scheduled"]
    assert await ids("type=sleep") == ["sleep:queued"]
    assert await ids("job=j") == ["noop:queued"]
    assert await ids("job=unknown") == []
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+", "%2B")
    assert await ids(f"created_after={future}") == []
    assert len(await ids(f"created_before={future}")) == 3
    for bad in ("state=nope", "limit=0", "limit=x", "cursor=zzz", "created_after=yesterday"):
        error = await error_of(await api.get(f"/api/v1/runs?{bad}", headers=admin), 400)
        assert error["code"] == "bad_request" and error["details"][0]["path"] == bad.split("=")[0]


async def test_cursor_paging_over_thousands_of_runs_is_stable_under_inserts(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    client = Client(services, tenant="acme")
    seeded = await client.enqueue_many([RunRequest("noop", {"i": i}) for i in range(3000)])
    expected = {e.id for e in seeded}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=200" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(f"/api/v1/runs?{query}", headers=admin)).json()
        seen += [r["id"] for r in page["runs"]]
        pages += 1
        # New runs keep arriving while paging: they sort before the cursor, never into it.
        await client.enqueue_many([RunRequest("noop", {"new": pages}) for _ in range(20)])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "duplicates across pages"
    assert set(seen) == expected, "gaps: runs that existed before paging were skipped"


async def test_cancel_and_retry(api: Api, admin: dict[str, str], services: Services) -> None:
    run = await (await api.post("/api/v1/runs", json={"type": "noop", "payload": {}, "delay_s": 60},
                                headers=admin)).json()  # fmt: skip
    r = await api.post(f"/api/v1/runs/{run['id']}/cancel", headers=admin)
    assert r.status == 200 and (await r.json())["state"] == "cancelled"
    error = await error_of(await api.post(f"/api/v1/runs/{run['id']}/cancel", headers=admin), 409)
    assert error["code"] == "conflict"
    error = await error_of(await api.post(f"/api/v1/runs/{run['id']}/retry", headers=admin), 409)
    assert "only dead runs" in error["message"]

    dead = await (await api.post("/api/v1/runs", json={"type": "test.permanent", "payload": {}},
                                 headers=admin)).json()  # fmt: skip
    client = Client(services, tenant="acme")
    async with running_worker(services):
        assert (await client.wait(dead["id"], 20))["state"] == "dead"
        r = await api.post(f"/api/v1/runs/{dead['id']}/retry", headers=admin)
        assert r.status == 202, await r.text()
        assert (await r.json())["state"] in {"queued", "running", "dead"}
        await asyncio.sleep(0)
        final = await client.wait(dead["id"], 20)
    # Replayed: a fresh attempt ran (numbered after the first) and failed permanently again.
    assert final["state"] == "dead"
    assert [a["attempt"] for a in final["attempts"]] == [1, 2]


async def test_retry_gives_a_dead_run_a_fresh_attempt_budget(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    body = {"type": "test.fail", "payload": {}}  # fails every attempt; max_attempts 3
    run = await (await api.post("/api/v1/runs", json=body, headers=admin)).json()
    client = Client(services, tenant="acme")
    async with running_worker(services):
        first = await client.wait(run["id"], 30)
        assert first["state"] == "dead" and first["attempt"] == 3
        r = await api.post(f"/api/v1/runs/{run['id']}/retry", headers=admin)
        assert r.status == 202 and (await r.json())["max_attempts"] == 6

        async def spent() -> bool:
            again = await client.get(run["id"])
            return again["state"] == "dead" and again["attempt"] == 6

        await wait_until(spent, 30)
    final = await client.get(run["id"])
    assert [a["attempt"] for a in final["attempts"]] == [1, 2, 3, 4, 5, 6]
    assert [a["outcome"] for a in final["attempts"]] == ["failed", "failed", "dead"] * 2
