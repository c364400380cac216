"""The bundled http.request job type against real HTTP servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from host.client import Client
from host.errors import ValidationFailed
from host.services import Services
from tests.helpers import running_worker


@pytest.fixture
async def receiver(aiohttp_server) -> AsyncIterator[tuple[str, list[web.Request], dict]]:
    seen: list[tuple[str, str, bytes]] = []
    state = {"fail_first": 0}

    async def ok(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("X-Token", ""), await request.read()))
        return web.json_response({"ok": True}, status=201)

    async def flaky(request: web.Request) -> web.Response:
        seen.append((request.method, "", b""))
        if state["fail_first"] > 0:
            state["fail_first"] -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(text="recovered")

    async def gone(request: web.Request) -> web.Response:
        seen.append((request.method, "", b""))
        return web.Response(status=404)

    app = web.Application()
    app.add_routes([web.post("/ok", ok), web.get("/flaky", flaky), web.get("/gone", gone)])
    server = await aiohttp_server(app)
    yield str(server.make_url("")).rstrip("/"), seen, state


async def test_request_is_made_and_its_response_recorded(services: Services, receiver) -> None:
    base, seen, _ = receiver
    client = Client(services)
    run_id = (
        await client.enqueue(
            "http.request",
            {
                "method": "POST",
                "url": f"{base}/ok",
                "headers": {"X-Token": "t1"},
                "body": {"n": 1},
                "expected_status": 201,
            },
        )
    ).id
    async with running_worker(services):
        run = await client.wait(run_id, 20)
    assert run["state"] == "succeeded"
    assert run["result"] == {"status": 201, "body": '{"ok": true}'}
    assert seen == [("POST", "t1", b'{"n": 1}')]


async def test_503_is_retried_then_succeeds(services: Services, receiver) -> None:
    base, seen, state = receiver
    state["fail_first"] = 2
    client = Client(services)
    run_id = (await client.enqueue("http.request", {"url": f"{base}/flaky"})).id
    async with running_worker(services):
        run = await client.wait(run_id, 30)
    assert run["state"] == "succeeded" and run["attempt"] == 3
    assert [a["outcome"] for a in run["attempts"]] == ["failed", "failed", "succeeded"]
    assert "answered 503" in run["attempts"][0]["error"]
    assert len(seen) == 3


async def test_unexpected_4xx_fails_permanently(services: Services, receiver) -> None:
    base, seen, _ = receiver
    client = Client(services)
    run_id = (await client.enqueue("http.request", {"url": f"{base}/gone"})).id
    async with running_worker(services):
        run = await client.wait(run_id, 20)
    assert run["state"] == "dead" and run["attempt"] == 1 and len(seen) == 1
    assert "answered 404" in run["error"]


async def test_header_injection_and_bad_urls_are_rejected(services: Services) -> None:
    client = Client(services)
    with pytest.raises(ValidationFailed) as info:
        await client.enqueue(
            "http.request", {"url": "file:///etc/passwd", "headers": {"X": "a\r\nB: c"}}
        )
    assert [e.path for e in info.value.errors] == ["/headers/X", "/url"]
