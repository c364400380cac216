"""/healthz (the process answers) and /readyz (PostgreSQL and Redis answer too); no API key,
so load balancers and orchestrators can probe them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

from host.api.errors import error_response
from host.api.routes import Route, json_response, services

#: A dependency slower than this is not ready.
CHECK_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = services(request)
    checks = {
        "postgresql": await _check(svc.pool.fetchval("SELECT 1")),
        "redis": await _check(svc.redis.ping()),
    }
    failed = [{"path": name, "message": v} for name, v in checks.items() if v != "ok"]
    if failed:
        return error_response(503, "service_unavailable", "not ready", failed)
    return json_response({"status": "ok", "checks": checks})


async def _check(probe: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means not ready; the reason is in the body
        return f"unavailable: {type(exc).__name__}"
    return "ok"


ROUTES = [
    Route("GET", "/healthz", healthz, "Liveness", scope=None, tag="health", response="Health"),
    Route("GET", "/readyz", readyz, "Readiness: PostgreSQL and Redis answer", scope=None,
          tag="health", response="Ready"),
]  # fmt: skip
