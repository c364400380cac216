"""Every error status with the one error shape: 400, 401, 403, 404, 405, 409, 413, 415, 422,
429 with Retry-After, and 503 when Redis is down."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from host.api.app import create_app
from host.config import Settings
from host.registry import Registry
from host.services import Services, open_services
from host.store import apikeys
from tests.api.conftest import Api, MakeKey, error_of
from tests.conftest import PrivateRedis


async def test_malformed_json_wrong_type_and_unknown_paths(api: Api, admin: dict[str, str]) -> None:
    json_headers = {**admin, "Content-Type": "application/json"}
    r = await api.post("/api/v1/runs", data=b'{"type": "noop",', headers=json_headers)
    assert (await error_of(r, 400))["code"] == "bad_request"
    r = await api.post("/api/v1/runs", data=b"type=noop", headers={**admin,
                       "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (await error_of(r, 415))["code"] == "unsupported_media_type"
    nul = b'{"type": "noop", "payload": {"a\\u0000": ["x\\u0000"]}, "idempotency_key": "\\u0000"}'
    error = await error_of(await api.post("/api/v1/runs", data=nul, headers=json_headers), 422)
    paths = [d["path"] for d in error["details"]]
    assert paths == ["/idempotency_key", "/payload/a\x00", "/payload/a\x00/0"]
    assert await error_of(await api.get("/api/v1/runs?type=x%00", headers=admin), 400)
    r = await api.post("/api/v1/runs", headers=admin)
    assert "needs a JSON body" in (await error_of(r, 400))["message"]
    r = await api.post("/api/v1/runs", data=b"[1]", headers=json_headers)
    assert (await error_of(r, 422))["details"][0]["path"] == ""
    assert (await error_of(await api.get("/api/v1/nothing", headers=admin), 404))["code"] == (
        "not_found"
    )
    r = await api.put("/api/v1/runs", headers=admin)
    assert (await error_of(r, 405))["code"] == "method_not_allowed"
    r = await api.post("/api/v1/runs", json={"type": "noop", "payload": {}, "extra": 1},
                       headers=admin)  # fmt: skip
    error = await error_of(r, 422)
    assert error["code"] == "validation_failed" and "extra" in error["details"][0]["message"]


async def test_a_deeply_nested_body_is_400_not_500(api: Api, admin: dict[str, str]) -> None:
    """A payload nested past the limit is refused before it can reach orjson's 254 levels."""
    json_headers = {**admin, "Content-Type": "application/json"}
    for depth, inner in ((300, ""), (600, '"\\u0000"')):
        body = '{"type": "noop", "payload": {"d": ' + "[" * depth + inner + "]" * depth + "}}"
        r = await api.post("/api/v1/runs", data=body, headers=json_headers)
        error = await error_of(r, 400)
        assert error["code"] == "bad_request" and "nested" in error["message"]
    body = '{"type": "noop", "payload": {"d": ' + "[" * 100 + "]" * 100 + "}}"
    assert (await api.post("/api/v1/runs", data=body, headers=json_headers)).status == 202


async def test_oversized_body_is_413(
    services: Services, aiohttp_client: Any, make_key: MakeKey
) -> None:
    api = await aiohttp_client(create_app(services, max_body=1024))
    headers = await make_key("acme", "write")
    body = {"type": "noop", "payload": {"x": "y" * 4096}}
    error = await error_of(await api.post("/api/v1/runs", json=body, headers=headers), 413)
    assert error["code"] == "payload_too_large"
    assert (await (await api.get("/api/v1/runs", headers=headers)).json())["runs"] == []


async def test_over_the_rate_is_429_with_retry_after(
    services: Services, aiohttp_client: Any, make_key: MakeKey
) -> None:
    api = await aiohttp_client(create_app(services, rate_per_key=0.5, burst_per_key=2))
    headers = await make_key("acme", "read")
    assert (await api.get("/api/v1/types", headers=headers)).status == 200
    assert (await api.get("/api/v1/types", headers=headers)).status == 200
    r = await api.get("/api/v1/types", headers=headers)
    assert (await error_of(r, 429))["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    # Another key has its own budget.
    assert (await api.get("/api/v1/types", headers=await make_key("acme", "read"))).status == 200


async def test_redis_down_is_503_and_not_ready(
    settings: Settings,
    registry: Registry,
    private_redis: PrivateRedis,
    aiohttp_client: Any,
) -> None:
    local = settings.with_urls(settings.database_url or "", private_redis.url)
    async with open_services(local, registry) as services:
        api = await aiohttp_client(create_app(services))
        key, _ = await apikeys.create_key(services.pool, "acme", ["write"])
        headers = {"Authorization": f"Bearer {key}"}
        private_redis.stop()
        r = await api.post("/api/v1/runs", json={"type": "noop", "payload": {}}, headers=headers)
        error = await error_of(r, 503)
        assert error["code"] == "service_unavailable" and "Traceback" not in error["message"]
        error = await error_of(await api.get("/readyz"), 503)
        assert [d["path"] for d in error["details"]] == ["redis"]
        await error_of(await api.get("/api/v1/queues", headers=headers), 503)


async def test_an_unexpected_error_is_500_without_details(
    services: Services, aiohttp_client: Any
) -> None:
    app = create_app(services)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/api/v1/broken", broken)
    api = await aiohttp_client(app)
    r = await api.get("/api/v1/broken")
    error = await error_of(r, 500)
    assert error == {"code": "internal_error", "message": "internal error", "details": []}
    assert "secret" not in await r.text()
