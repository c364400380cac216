"""Real receivers on loopback, compressed notification settings and an in-process notifier."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from host.config import Settings
from host.notify import subscriptions as subs
from host.notify.channels import close_channels, load_channels
from host.notify.notifier import Notifier
from host.services import Services
from webhooks.outbound.channel import Channel

#: Retry delays for tests: three retries a few tenths of a second apart, no jitter.
FAST = {
    "notify_schedule": "0.3,0.3,0.3",
    "notify_jitter": 0.0,
    "notify_timeout_s": 1.0,
    "notify_lease_s": 7.5,  # > timeout + NOTIFY_SEND_GRACE_S + NOTIFY_LEASE_MARGIN_S
    "notify_poll_s": 0.1,
    "notify_allow_cidrs": "127.0.0.1/32",
    "notify_allow_ports": "*",  # receivers listen on random loopback ports
    "notify_digest_window_s": 0.8,
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, **FAST)  # type: ignore[arg-type]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Behaviour = Callable[[Hit, int], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 that records every request; each path answers by its
    behaviour (default 200), which gets the hit and how many hits that path had before."""

    server: TestServer | None = None
    hits: list[Hit] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request.path, dict(request.headers), await request.read(), time.monotonic())
        before = len(self.at(request.path))
        self.hits.append(hit)
        behaviour = self.behaviours.get(request.path)
        if behaviour is None:
            return web.Response(text="ok")
        return await behaviour(hit, before)


def statuses(*codes: int, then: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    """Answer these statuses in turn, then `then` for ever."""

    async def answer(hit: Hit, n: int) -> web.StreamResponse:
        code = codes[n] if n < len(codes) else then
        return web.Response(status=code, text=f"answer {code}", headers=headers or {})

    return answer


async def start_receiver(port: int = 0) -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    receiver.server = TestServer(app, host="127.0.0.1", port=port)
    await receiver.server.start_server()
    return receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await start_receiver()
    yield r
    assert r.server is not None
    await r.server.close()


@pytest.fixture
async def channels(services: Services) -> AsyncIterator[dict[str, Channel]]:
    loaded = load_channels(services.registry, services.settings)
    yield loaded
    await close_channels(loaded)


@contextlib.asynccontextmanager
async def running_notifier(
    services: Services, channels: dict[str, Channel] | None = None
) -> AsyncIterator[Notifier]:
    stop = asyncio.Event()
    notifier = Notifier(services, channels)
    task = asyncio.create_task(notifier.run(stop))
    try:
        yield notifier
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def subscribe(
    services: Services, channels: dict[str, Channel], tenant: str = "default", **fields: Any
) -> dict[str, Any]:
    fields.setdefault("channel", "webhook")
    fields.setdefault("events", ["run.succeeded", "run.failed", "run.dead"])
    fields.setdefault("name", f"sub-{time.monotonic_ns()}")
    return await subs.create(services, channels, tenant, fields)


async def deliveries(services: Services, sub_id: str, tenant: str = "default") -> list[Any]:
    from host.notify import store

    return await store.list_deliveries(services.pool, tenant, sub_id, limit=500)


async def pending_delivery(services: Services, sub_id: str, event_id: str) -> None:
    """A pending run.succeeded delivery written straight to the outbox table."""
    await services.pool.execute(
        """INSERT INTO deliveries (id, tenant_id, subscription_id, event_id, event_type, run_id,
               run_type, run_state, attempt, max_attempts, outcome, run_created_at,
               attempt_finished_at)
           VALUES (gen_random_uuid(), 'default', $1::uuid, $2, 'run.succeeded',
                   gen_random_uuid(), 'noop', 'succeeded', 1, 3, 'succeeded', now(), now())""",
        sub_id, event_id,
    )  # fmt: skip
