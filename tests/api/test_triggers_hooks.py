"""POST /hooks/{hook} on a real server on loopback, with signatures made by independent
implementations (the Standard Webhooks and Stripe libraries, GitHub's documented example,
openssl's known answers). Every refusal is answered with its code AND queues nothing: runs are
counted in PostgreSQL and in Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import standardwebhooks
import stripe
from aiohttp.test_utils import TestClient, TestServer

from host.api.app import create_app
from host.config import Settings
from host.registry import Registry
from host.services import Services, open_services
from host.store import apikeys
from tests.api.conftest import Api, error_of
from tests.conftest import PrivateRedis
from tests.test_webhooks_inbound import (
    GITHUB_PAYLOAD,
    GITHUB_SECRET,
    GITHUB_SIGNATURE,
    HMAC_BODY,
    HMAC_HEX,
    HMAC_SECRET,
)
from webhooks.inbound.ratelimit import REFUSAL_LOG_BURST

SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()


async def make(api: Api, key: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "t", "type": "noop", "scheme": "standard", "secrets": [SECRET_A], **fields}
    body = {k: v for k, v in body.items() if v is not None}
    r = await api.post("/api/v1/triggers", json=body, headers=key)
    assert r.status == 201, await r.text()
    data: dict[str, Any] = await r.json()
    return data


def standard(body: str, msg_id: str, secret: str = SECRET_A, skew_s: float = 0) -> dict[str, str]:
    when = datetime.fromtimestamp(time.time() + skew_s, UTC)
    sig = standardwebhooks.Webhook(secret).sign(msg_id, when, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": sig, "Content-Type": "application/json"}  # fmt: skip


async def queued(services: Services) -> tuple[int, int]:
    """(runs in PostgreSQL, runs in Redis)."""
    in_pg = await services.pool.fetchval("SELECT count(*) FROM runs")
    in_redis = await services.redis.hlen(services.queue.keys.env)
    return in_pg, in_redis


async def deliveries(api: Api, key: dict[str, str], name: str = "t") -> list[dict[str, Any]]:
    r = await api.get(f"/api/v1/triggers/{name}/deliveries?limit=500", headers=key)
    assert r.status == 200
    found: list[dict[str, Any]] = (await r.json())["deliveries"]
    return found


async def test_standard_webhook_runs_once_and_replays_answer_the_same_run(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, mapping={"user": "{{/data/id}}", "kind": "{{/type}}"})
    body = '{"type":"user.created","data":{"id":7}}'
    headers = standard(body, "msg_1")
    r = await api.post(t["path"], data=body, headers=headers)
    assert r.status == 202, await r.text()
    first = await r.json()
    assert first["created"] is True and first["delivery_id"] == "msg_1"
    run = await (await api.get(f"/api/v1/runs/{first['id']}", headers=admin)).json()
    assert run["payload"] == {"user": 7, "kind": "user.created"} and run["type"] == "noop"
    # The same delivery again (a sender's retry, or an attacker's replay within tolerance).
    for _ in range(2):
        again = await api.post(t["path"], data=body, headers=headers)
        assert again.status == 202
        assert (await again.json())["id"] == first["id"]
        assert (await again.json())["created"] is False
    assert await queued(services) == (1, 1)
    log = await deliveries(api, admin)
    assert [d["reason"] for d in log] == ["replay", "replay", "accepted"]
    assert {d["run_id"] for d in log} == {first["id"]}


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered", "bad_signature"),
        ("reserialised", "bad_signature"),
        ("wrong_secret", "bad_signature"),
        ("missing_header", "bad_signature"),
        ("v1a_only", "bad_signature"),
        ("stale", "stale_timestamp"),
        ("future", "stale_timestamp"),
    ],
)
async def test_bad_standard_deliveries_are_401_and_queue_nothing(
    api: Api, admin: dict[str, str], services: Services, case: str, reason: str
) -> None:
    t = await make(api, admin, tolerance_s=60)
    body = '{"type":"x","n":1}'
    headers = standard(body, "m1")
    if case == "tampered":
        body = body.replace("1", "2")  # one byte
    elif case == "reserialised":  # the same JSON, other bytes (a proxy that re-encodes)
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    elif case == "wrong_secret":
        headers = standard(body, "m1", secret=SECRET_B)
    elif case == "missing_header":
        del headers["webhook-timestamp"]
    elif case == "v1a_only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    elif case in ("stale", "future"):
        headers = standard(body, "m1", skew_s=-61 if case == "stale" else 61)
    error = await error_of(await api.post(t["path"], data=body, headers=headers), 401)
    assert error["code"] == "unauthorized"
    assert error["message"] == "the delivery could not be verified"  # never which part failed
    assert await queued(services) == (0, 0)
    (logged,) = await deliveries(api, admin)
    assert (logged["outcome"], logged["reason"], logged["status"]) == ("rejected", reason, 401)
    assert logged["run_id"] is None and logged["detail"]


async def test_secret_rotation(api: Api, admin: dict[str, str], services: Services) -> None:
    t = await make(api, admin)
    r = await api.patch("/api/v1/triggers/t", json={"add_secrets": [SECRET_B]}, headers=admin)
    assert r.status == 200
    old_id, new_id = [s["id"] for s in (await r.json())["secrets"]]
    for i, secret in enumerate((SECRET_A, SECRET_B)):  # both valid during the rotation
        body = f'{{"n":{i}}}'
        got = await api.post(t["path"], data=body, headers=standard(body, f"r{i}", secret))
        assert got.status == 202
    r = await api.patch("/api/v1/triggers/t", json={"remove_secrets": [old_id]}, headers=admin)
    assert [s["id"] for s in (await r.json())["secrets"]] == [new_id]
    body = '{"n":9}'
    old = await api.post(t["path"], data=body, headers=standard(body, "r9", SECRET_A))
    await error_of(old, 401)
    new = await api.post(t["path"], data=body, headers=standard(body, "r10", SECRET_B))
    assert new.status == 202
    assert await queued(services) == (3, 3)


async def test_github_documented_example_and_deliveries(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, scheme="github", secrets=[GITHUB_SECRET])
    headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "gh-0"}
    # GitHub's example body is not JSON: the signature holds, so the refusal is 400 malformed.
    await error_of(await api.post(t["path"], data=GITHUB_PAYLOAD, headers=headers), 400)
    await error_of(await api.post(t["path"], data=b"Hello, World?", headers=headers), 401)
    assert [d["reason"] for d in await deliveries(api, admin)] == ["bad_signature", "malformed"]
    body = b'{"action":"opened","number":1}'
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "gh-1"}
    first = await (await api.post(t["path"], data=body, headers=headers)).json()
    again = await api.post(t["path"], data=body, headers=headers)
    assert again.status == 202 and (await again.json())["id"] == first["id"]
    assert await queued(services) == (1, 1)


async def test_stripe_library_signature(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    secret = "whsec_stripe_endpoint_secret"
    t = await make(api, admin, scheme="stripe", secrets=[secret])
    body = '{"id":"evt_1","type":"charge.succeeded","data":{"object":{"amount":500}}}'
    header = stripe.WebhookSignature.generate_signature_header(body, secret)
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)  # Stripe agrees
    r = await api.post(t["path"], data=body, headers={"Stripe-Signature": header})
    assert r.status == 202 and (await r.json())["delivery_id"] == "evt_1"
    # Stripe retries an event with a fresh signature and timestamp: still the same event id.
    later = stripe.WebhookSignature.generate_signature_header(body, secret, int(time.time()) + 5)
    again = await api.post(t["path"], data=body, headers={"Stripe-Signature": later})
    assert (await again.json())["id"] == (await r.json())["id"]
    stale = stripe.WebhookSignature.generate_signature_header(body, secret, int(time.time()) - 301)
    await error_of(await api.post(t["path"], data=body, headers={"Stripe-Signature": stale}), 401)
    assert await queued(services) == (1, 1)


async def test_generic_hmac_openssl_known_answer(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, scheme="hmac", secrets=[HMAC_SECRET],
                   hmac={"header": "X-Sig", "prefix": "sha256="})  # fmt: skip
    assert t["hmac"] == {"header": "X-Sig", "prefix": "sha256=", "encoding": "hex",
                         "timestamp_header": None, "id_header": None}  # fmt: skip
    r = await api.post(t["path"], data=HMAC_BODY, headers={"X-Sig": "sha256=" + HMAC_HEX})
    assert r.status == 202
    run = await (await api.get(f"/api/v1/runs/{(await r.json())['id']}", headers=admin)).json()
    assert run["payload"] == {"ref": "main", "n": 1}
    # No delivery id header configured: the body's hash is the id, so a resend is a replay.
    again = await api.post(t["path"], data=HMAC_BODY, headers={"X-Sig": "sha256=" + HMAC_HEX})
    assert (await again.json())["created"] is False
    tampered = HMAC_BODY.replace(b"1", b"2")
    await error_of(await api.post(t["path"], data=tampered,
                                  headers={"X-Sig": "sha256=" + HMAC_HEX}), 401)  # fmt: skip
    assert await queued(services) == (1, 1)


async def test_body_limit_and_malformed_bodies(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, max_body_bytes=64)
    big = '{"pad":"' + "x" * 100 + '"}'
    error = await error_of(await api.post(t["path"], data=big, headers=standard(big, "b1")), 413)
    assert error["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: refused while reading
        for _ in range(10):
            yield b"x" * 16

    await error_of(await api.post(t["path"], data=chunks(), headers=standard("", "b2")), 413)
    bad = '{"n": 1'
    await error_of(await api.post(t["path"], data=bad, headers=standard(bad, "b3")), 400)
    assert await queued(services) == (0, 0)
    reasons = [d["reason"] for d in await deliveries(api, admin)]
    assert reasons == ["malformed", "too_large", "too_large"]


async def test_mapped_payload_is_validated_before_anything_is_queued(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, type="test.strict",
                   mapping={"email": "{{/sender/email}}", "count": "{{/n}}"})  # fmt: skip
    cases = [
        ('{"sender":{"email":"a@example.com"},"n":0}', "/payload/count"),  # schema: minimum 1
        ('{"sender":{"email":"a@example.com"}}', "/mapping/count"),  # nothing at /n
    ]
    for i, (body, path) in enumerate(cases):
        error = await error_of(
            await api.post(t["path"], data=body, headers=standard(body, f"v{i}")), 422
        )
        assert error["code"] == "validation_failed"
        assert [d["path"] for d in error["details"]] == [path]
    assert await queued(services) == (0, 0)
    body = '{"sender":{"email":"a@example.com"},"n":2}'
    r = await api.post(t["path"], data=body, headers=standard(body, "v9"))
    run = await (await api.get(f"/api/v1/runs/{(await r.json())['id']}", headers=admin)).json()
    assert run["payload"] == {"email": "a@example.com", "count": 2}


async def test_rate_limit_429_with_retry_after(
    api: Api, admin: dict[str, str], other: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, rate=0.05, burst=3)  # one token per 20 s after the burst
    theirs = await make(api, other, rate=0.05, burst=3)  # another tenant's, same settings
    statuses, retry_after = [], []
    for i in range(6):
        body = f'{{"i":{i}}}'
        r = await api.post(t["path"], data=body, headers=standard(body, f"rl{i}"))
        statuses.append(r.status)
        if r.status == 429:
            retry_after.append(int(r.headers["Retry-After"]))
            assert (await r.json())["error"]["code"] == "rate_limited"
    assert statuses == [202, 202, 202, 429, 429, 429]
    assert all(1 <= s <= 20 for s in retry_after)
    assert await queued(services) == (3, 3)  # exactly what the bucket allows
    # The exhausted bucket is this trigger's only: the other tenant's hook is unaffected.
    body = '{"b":1}'
    assert (await api.post(theirs["path"], data=body, headers=standard(body, "b1"))).status == 202
    reasons = [d["reason"] for d in await deliveries(api, admin)]
    assert reasons.count("rate_limited") == 3


async def test_disabled_and_unknown_hooks_are_404(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin)
    await api.patch("/api/v1/triggers/t", json={"enabled": False}, headers=admin)
    body = "{}"
    await error_of(await api.post(t["path"], data=body, headers=standard(body, "d1")), 404)
    await error_of(await api.post("/hooks/h_unknown", data=body, headers=standard(body, "d2")),
                   404)  # fmt: skip
    assert [d["reason"] for d in await deliveries(api, admin)] == ["disabled"]
    assert await queued(services) == (0, 0)


async def test_a_job_definition_target_runs_the_definition(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    job = {"name": "deploy", "type": "noop", "payload": {"env": "prod", "ref": "main"}}
    assert (await api.post("/api/v1/jobs", json=job, headers=admin)).status == 201
    t = await make(api, admin, type=None, job="deploy", mapping={"ref": "{{/ref}}"})
    assert (t["type"], t["job"]) == (None, "deploy")
    body = '{"ref":"v2"}'
    r = await api.post(t["path"], data=body, headers=standard(body, "j1"))
    run = await (await api.get(f"/api/v1/runs/{(await r.json())['id']}", headers=admin)).json()
    assert run["payload"] == {"env": "prod", "ref": "v2"} and run["job_id"] is not None


async def test_replays_hold_across_api_processes_and_restarts(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    """Two more API apps with their own pools and Redis connections (as separate processes
    have), started after the first closed (a restart): PostgreSQL's replay table answers."""
    t = await make(api, admin)
    body = '{"n":1}'
    headers = standard(body, "x1")
    first = await (await api.post(t["path"], data=body, headers=headers)).json()
    await api.close()  # the first process stops

    async def another_process() -> TestClient[Any, Any]:
        svc = await stack.enter_async_context(open_services(services.settings, services.registry))
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(svc)))
        await client.start_server()
        return client

    async with contextlib.AsyncExitStack() as stack:
        two, three = await another_process(), await another_process()
        try:
            answers = await asyncio.gather(*[
                c.post(t["path"], data=body, headers=headers) for c in (two, three) * 5
            ])  # fmt: skip
            ids = {(await a.json())["id"] for a in answers}
            assert ids == {first["id"]}
            # A new delivery raced to both processes at once makes exactly one run.
            fresh = standard(body, "x2")
            raced = await asyncio.gather(*[
                c.post(t["path"], data=body, headers=fresh) for c in (two, three) * 5
            ])  # fmt: skip
            got = [orjson.loads(await a.read()) for a in raced]
            assert len({g["id"] for g in got}) == 1 and sum(g["created"] for g in got) == 1
        finally:
            await two.close()
            await three.close()
    assert await queued(services) == (2, 2)


async def test_hostile_bytes_are_refused_and_logged(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    t = await make(api, admin, scheme="github", secrets=[GITHUB_SECRET])
    # A signature header that is not UTF-8, on a raw connection (clients refuse to send it).
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(f"POST {t['path']} HTTP/1.1\r\nHost: x\r\nX-GitHub-Delivery: n1\r\n".encode()
                 + b"X-Hub-Signature-256: sha256=\xff\xfe\r\nContent-Length: 2\r\n"
                 b"Connection: close\r\n\r\n{}")  # fmt: skip
    await writer.drain()
    status_line = (await reader.readline()).decode()
    writer.close()
    assert " 401 " in status_line
    # NUL in a validly signed event: PostgreSQL cannot store it; a 422 naming where, logged.
    body = b'{"name":"a\\u0000b"}'
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "n2"}
    error = await error_of(await api.post(t["path"], data=body, headers=headers), 422)
    assert error["details"] == [{"path": "/name", "message": "contains NUL"}]
    reasons = [(d["reason"], d["status"]) for d in await deliveries(api, admin)]
    assert reasons == [("invalid_payload", 422), ("bad_signature", 401)]
    assert await queued(services) == (0, 0)


@pytest.mark.parametrize("scheme", ["github", "hmac"])
async def test_a_resent_delivery_with_a_new_unsigned_id_is_a_replay(
    api: Api, admin: dict[str, str], services: Services, scheme: str
) -> None:
    """X-GitHub-Delivery and a generic trigger's id header are not signed: a captured delivery
    resent with a fresh id must answer the first run, not start another (fault matrix H5)."""
    body = b'{"action":"opened","number":1}'
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    if scheme == "github":
        t = await make(api, admin, scheme="github", secrets=[GITHUB_SECRET])
        sig, id_header = {"X-Hub-Signature-256": f"sha256={digest}"}, "X-GitHub-Delivery"
    else:
        t = await make(api, admin, scheme="hmac", secrets=[GITHUB_SECRET],
                       hmac={"id_header": "X-Id"})  # fmt: skip
        sig, id_header = {"X-Signature": digest}, "X-Id"
    answers = []
    for guid in ("guid-1", "guid-2", "guid-3", "guid-1"):  # the last: GitHub's "redeliver"
        r = await api.post(t["path"], data=body, headers={**sig, id_header: guid})
        assert r.status == 202
        answers.append(await r.json())
    assert len({a["id"] for a in answers}) == 1
    assert [a["created"] for a in answers] == [True, False, False, False]
    assert [a["delivery_id"] for a in answers] == ["guid-1", "guid-2", "guid-3", "guid-1"]
    assert await queued(services) == (1, 1)
    log = await deliveries(api, admin)  # the sender's ids, as sent
    assert [(d["reason"], d["delivery_id"]) for d in log] == [
        ("replay", "guid-1"), ("replay", "guid-3"), ("replay", "guid-2"), ("accepted", "guid-1")
    ]  # fmt: skip
    # Another event (another body) is another run, whatever id it claims.
    other = b'{"action":"closed","number":1}'
    digest = hmac.new(GITHUB_SECRET.encode(), other, hashlib.sha256).hexdigest()
    sig = {k: (f"sha256={digest}" if scheme == "github" else digest) for k in sig}
    r = await api.post(t["path"], data=other, headers={**sig, id_header: "guid-1"})
    assert (await r.json())["created"] is True
    assert await queued(services) == (2, 2)


async def test_refusals_are_logged_up_to_a_bound_and_counted_beyond(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    """Unsigned requests cannot grow the delivery log without limit: past the refusal log's
    bucket they are still refused, counted (shown on the trigger) but not logged row by row."""
    t = await make(api, admin, rate=1, burst=1)
    for _ in range(50):
        await error_of(await api.post(t["path"], data=b"x", headers={}), 401)
    logged = await deliveries(api, admin)
    assert {d["reason"] for d in logged} == {"bad_signature"}
    assert REFUSAL_LOG_BURST <= len(logged) <= REFUSAL_LOG_BURST + 1  # the bucket, no more
    shown = await (await api.get("/api/v1/triggers/t", headers=admin)).json()
    assert len(logged) + shown["refusals_not_logged"] == 50
    # A signed delivery is still accepted and logged.
    body = '{"n":1}'
    assert (await api.post(t["path"], data=body, headers=standard(body, "ok1"))).status == 202
    assert (await deliveries(api, admin))[0]["reason"] == "accepted"
    assert await queued(services) == (1, 1)


@pytest.mark.parametrize("nul", [False, True])
async def test_a_deeply_nested_signed_event_is_400_malformed_and_logged(
    api: Api, admin: dict[str, str], services: Services, nul: bool
) -> None:
    t = await make(api, admin)
    inner = '"\\u0000"' if nul else ""
    for depth in (300, 600):
        body = '{"d":' + "[" * depth + inner + "]" * depth + "}"
        r = await api.post(t["path"], data=body, headers=standard(body, f"deep{depth}"))
        error = await error_of(r, 400)
        assert error["code"] == "bad_request" and "nested" in error["message"]
    assert [(d["reason"], d["status"]) for d in await deliveries(api, admin)] == [
        ("malformed", 400), ("malformed", 400)
    ]  # fmt: skip
    body = '{"d":' + "[" * 100 + "]" * 100 + "}"  # deep but within the limit: a run
    assert (await api.post(t["path"], data=body, headers=standard(body, "ok"))).status == 202
    assert await queued(services) == (1, 1)


async def test_with_redis_down_refusals_are_still_answered_and_logged(
    settings: Settings, registry: Registry, private_redis: PrivateRedis, aiohttp_client: Any
) -> None:
    local = settings.with_urls(settings.database_url or "", private_redis.url)
    async with open_services(local, registry) as svc:
        api = await aiohttp_client(create_app(svc))
        key, _ = await apikeys.create_key(svc.pool, "acme", ["write"])
        admin = {"Authorization": f"Bearer {key}"}
        t = await make(api, admin)
        private_redis.stop()
        await error_of(await api.post(t["path"], data=b"x", headers={}), 401)
        assert [d["reason"] for d in await deliveries(api, admin)] == ["bad_signature"]
        shown = await api.get("/api/v1/triggers/t", headers=admin)
        assert shown.status == 200 and (await shown.json())["refusals_not_logged"] is None
