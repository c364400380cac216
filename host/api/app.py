"""The API application: `create_app(services)` builds it from one route table.

Middlewares, outermost first: errors (the one error shape), then auth (API key and scope).
Per-app resources (key authentication, body validators) are made in the cleanup context, so
tests build as many independent apps as they need.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from host.api import (
    health,
    hooks,
    jobs,
    openapi,
    queues,
    runs,
    subscriptions,
    triggers,
    types,
    workers,
)
from host.api.auth import AUTH, KeyAuth, auth_middleware
from host.api.errors import error_middleware
from host.api.routes import ROUTE_TABLE, SERVICES, Route
from host.api.validation import BODIES, BodyValidator, load_api_schemas
from host.services import Services
from webhooks.inbound.ratelimit import HookBuckets

#: Largest request body accepted (bytes); larger answers 413.
MAX_BODY = 1024 * 1024


def all_routes() -> list[Route]:
    """Every endpoint the app serves, in one table."""
    return [
        *health.ROUTES, *openapi.ROUTES, *types.ROUTES, *runs.ROUTES, *jobs.ROUTES,
        *queues.ROUTES, *workers.ROUTES, *triggers.ROUTES, *hooks.ROUTES, *subscriptions.ROUTES,
    ]  # fmt: skip


def create_app(
    services: Services,
    *,
    max_body: int = MAX_BODY,
    rate_per_key: float | None = None,
    burst_per_key: int | None = None,
) -> web.Application:
    """The API for `services`; `rate_per_key` (requests/s, per process) answers 429 above it."""
    app = web.Application(client_max_size=max_body, middlewares=[error_middleware, auth_middleware])
    app[SERVICES] = services
    table = all_routes()
    app[ROUTE_TABLE] = {(r.method, r.path): r for r in table}
    for route in table:
        app.router.add_route(route.method, route.path, route.handler)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[AUTH] = KeyAuth(services.pool, rate_per_s=rate_per_key, burst=burst_per_key)
        app[BODIES] = BodyValidator(load_api_schemas())
        app[hooks.HOOK_BUCKETS] = HookBuckets(services.redis, services.settings.namespace)
        yield

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(lambda app: subscriptions.channels_context(app, services))
    return app


async def serve(
    services: Services,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    fallback_port: bool = False,
    started: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve the API until `stop` is set. With `fallback_port`, a busy port gives way to a free
    one (`jobhost dev`). `started` receives the base URL once the socket listens."""
    runner = web.AppRunner(create_app(services, **options), access_log=None)
    await runner.setup()
    try:
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError:
            if not fallback_port:
                raise
            site = web.TCPSite(runner, host, 0)
            await site.start()
        bound = runner.addresses[0]
        if started is not None:
            started(f"http://{_host_for_url(host)}:{bound[1]}")
        await stop.wait()
    finally:
        await runner.cleanup()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
