"""Subscriptions and deliveries over HTTP: the secret shown once, validation against the channel
and the SSRF guard, delivery paging, redelivery, and tenant isolation (another tenant's ids are
404, exactly like unknown ones)."""

from __future__ import annotations

from typing import Any

from standardwebhooks import Webhook

from host.client import Client
from host.services import Services
from tests.api.conftest import Api, MakeKey, error_of
from tests.helpers import running_worker

SUBS = "/api/v1/subscriptions"
URL = "https://hooks.example.com/jobhost"  # does not resolve here: accepted, checked at send


async def _create(api: Api, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "hook", "channel": "webhook", "destination": {"url": URL}} | fields
    r = await api.post(SUBS, json=body, headers=headers)
    assert r.status == 201, await r.text()
    data: dict[str, Any] = await r.json()
    return data


async def test_create_shows_the_secret_once_and_validates(
    api: Api, admin: dict[str, str], make_key: MakeKey
) -> None:
    sub = await _create(api, admin, events=["run.dead"], job_types=["noop"])
    Webhook(sub["secret"])  # a valid Standard Webhooks secret
    assert sub["secret"].startswith("whsec_")
    assert sub["events"] == ["run.dead"] and sub["enabled"] and sub["source"] == "api"
    listed = (await (await api.get(SUBS, headers=admin)).json())["subscriptions"]
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
    shown = await (await api.get(f"{SUBS}/{sub['id']}", headers=admin)).json()
    assert "secret" not in shown and shown["counts"] == {"pending": 0, "succeeded": 0, "failed": 0}
    await error_of(
        await api.post(
            SUBS,
            json={"name": "hook", "channel": "webhook", "destination": {"url": URL}},
            headers=admin,
        ),
        409,
    )
    bad = {"name": "x", "channel": "webhook"}
    err = await error_of(
        await api.post(
            SUBS,
            json=bad | {"destination": {"url": "http://169.254.169.254/latest/meta-data/"}},
            headers=admin,
        ),
        422,
    )
    assert (
        err["details"][0]["path"] == "/destination/url" and "SSRF" in err["details"][0]["message"]
    )
    err = await error_of(await api.post(SUBS, json=bad | {"destination": {"link": URL}},
                                        headers=admin), 422)  # fmt: skip
    assert {d["path"] for d in err["details"]} >= {"/destination"}
    err = await error_of(
        await api.post(SUBS, json={**bad, "channel": "pager", "destination": {}}, headers=admin),
        422,
    )
    assert err["details"][0]["path"] == "/channel"
    reader = await make_key("acme", "read")
    await error_of(await api.post(SUBS, json=bad | {"destination": {"url": URL}},
                                  headers=reader), 403)  # fmt: skip


async def test_disable_enable_rotate_and_delete(api: Api, admin: dict[str, str]) -> None:
    sub = await _create(api, admin)
    one = f"{SUBS}/{sub['id']}"
    off = await (await api.patch(one, json={"enabled": False}, headers=admin)).json()
    assert not off["enabled"] and off["disabled_reason"] == "disabled by hand"
    assert off["disabled_at"] is not None and off["times_disabled"] == 0  # counts the notifier's
    again = await (await api.patch(one, json={"enabled": False}, headers=admin)).json()
    assert again["disabled_at"] == off["disabled_at"]  # since when, not the last PATCH
    on = await (await api.patch(one, json={"enabled": True}, headers=admin)).json()
    assert on["enabled"] and on["disabled_reason"] is None and on["failure_streak"] == 0
    assert on["disabled_at"] is None
    secret = "whsec_" + "A" * 44
    rotated = await (await api.patch(one, json={"secret": secret}, headers=admin)).json()
    assert rotated["secret"] == secret
    assert (await api.delete(one, headers=admin)).status == 204
    await error_of(await api.get(one, headers=admin), 404)


async def test_deliveries_page_redeliver_and_tenant_isolation(
    api: Api, admin: dict[str, str], other: dict[str, str], services: Services
) -> None:
    sub = await _create(api, admin, events=["run.succeeded"])
    client = Client(services, tenant="acme")
    async with running_worker(services):  # no notifier: deliveries stay pending
        runs = [await client.enqueue("noop", {}) for _ in range(3)]
        for run in runs:
            await client.wait(run.id, 20)
    pages = f"{SUBS}/{sub['id']}/deliveries"
    first = await (await api.get(pages + "?limit=2", headers=admin)).json()
    assert len(first["deliveries"]) == 2 and first["next_cursor"]
    rest = await (await api.get(f"{pages}?limit=2&cursor={first['next_cursor']}",
                                headers=admin)).json()  # fmt: skip
    seen = [d for page in (first, rest) for d in page["deliveries"]]
    assert sorted(d["run_id"] for d in seen) == sorted(r.id for r in runs)
    assert all(d["state"] == "pending" and d["attempt_log"] == [] for d in seen)
    assert all(d["body"]["type"] == "run.succeeded" and d["event_id"] == d["body"]["id"]
               for d in seen)  # fmt: skip
    counts = (await (await api.get(f"{SUBS}/{sub['id']}", headers=admin)).json())["counts"]
    assert counts == {"pending": 3, "succeeded": 0, "failed": 0}
    again = f"/api/v1/deliveries/{seen[0]['id']}/redeliver"
    assert (await api.post(again, headers=admin)).status == 202
    # Another tenant: every id is unknown to it.
    one = f"{SUBS}/{sub['id']}"
    for method, path, body in (
        ("GET", one, None), ("PATCH", one, {"enabled": False}), ("DELETE", one, None),
        ("GET", pages, None), ("POST", again, None),
    ):  # fmt: skip
        await error_of(await api.request(method, path, json=body, headers=other), 404)
    assert (await (await api.get(SUBS, headers=other)).json())["subscriptions"] == []
    still = await (await api.get(one, headers=admin)).json()
    assert still["enabled"]
