"""API keys on requests: `Authorization: Bearer <key>`, its scope, and a per-key rate limit.

401 for no, unknown or revoked keys; 403 for a key without the route's scope. The key's tenant
scopes every query the handler makes (host.api.routes.tenant). The last-used time is written at
most once a minute per key and process, so authentication costs one indexed read per request.
"""

from __future__ import annotations

import time

import asyncpg
from aiohttp import web

from host.api.routes import KEY, ROUTE, Handler, route_of
from host.errors import Forbidden, RateLimited, Unauthorized
from host.store import apikeys
from host.store.apikeys import ApiKey

#: Write a key's last-used time at most this often (per process).
TOUCH_EVERY_S = 60.0


class KeyAuth:
    """Finds the key of a request, keeps last-used times, and applies the per-key rate limit."""

    def __init__(
        self, pool: asyncpg.Pool, *, rate_per_s: float | None = None, burst: int | None = None
    ) -> None:
        self.pool = pool
        self._touched: dict[str, float] = {}
        self._limiter = TokenBuckets(rate_per_s, burst) if rate_per_s else None

    async def authenticate(self, header: str | None) -> ApiKey:
        scheme, _, secret = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
        key = await apikeys.find_active(self.pool, secret.strip())
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        await self._touch(key)
        return key

    def check_rate(self, key: ApiKey) -> None:
        if self._limiter is not None:
            wait_s = self._limiter.take(key.id)
            if wait_s > 0:
                raise RateLimited(
                    f"over the request rate of this API key; retry in {wait_s:.1f}s",
                    retry_after_s=wait_s,
                )

    async def _touch(self, key: ApiKey) -> None:
        now = time.monotonic()
        if now - self._touched.get(key.id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            self._touched[key.id] = now
            await apikeys.touch(self.pool, [key.id])


#: The app's KeyAuth, made in its cleanup context.
AUTH = web.AppKey("auth", KeyAuth)


class TokenBuckets:
    """One token bucket per key, in this process: `rate_per_s` sustained, `burst` at once."""

    def __init__(self, rate_per_s: float, burst: int | None = None) -> None:
        self.rate = rate_per_s
        self.burst = float(burst or max(1, int(rate_per_s)))
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, name: str) -> float:
        """Take a token: 0 when granted, else seconds until one is available."""
        now = time.monotonic()
        tokens, at = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[name] = (tokens - 1, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1 - tokens) / self.rate


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_of(request)
    if route is None:  # aiohttp answers 404 or 405
        return await handler(request)
    request[ROUTE] = route
    if route.scope is None:
        return await handler(request)
    auth = request.app[AUTH]
    key = await auth.authenticate(request.headers.get("Authorization"))
    if not key.allows(route.scope):
        raise Forbidden(f"this API key lacks the {route.scope!r} scope")
    auth.check_rate(key)
    request[KEY] = key
    return await handler(request)
