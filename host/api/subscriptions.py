"""Notification subscriptions and their delivery log: create, list, show, change, delete, page
through deliveries (with their attempts) and redeliver one.

Tenant-scoped like every resource: another tenant's subscription or delivery id answers 404.
The signing secret appears once, in the answer to the request that set it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from host.api.routes import Param, Route, json_response, services, tenant
from host.api.runs import MAX_PAGE, _bad, _int, decode_cursor, encode_cursor
from host.api.validation import body
from host.notify import store
from host.notify import subscriptions as subs
from host.notify.channels import close_channels, load_channels
from host.notify.outbox import DELIVERY_STATES, EVENTS
from webhooks.outbound.channel import Channel

#: The notification channels, loaded once per app (to check destinations).
CHANNELS = web.AppKey("channels", Mapping[str, Channel])


async def channels_context(app: web.Application, svc: Any) -> AsyncIterator[None]:
    """Load the channels for the app's lifetime (a cleanup-context helper for create_app)."""
    app[CHANNELS] = load_channels(svc.registry, svc.settings)
    yield
    await close_channels(app[CHANNELS])


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def list_subscriptions(request: web.Request) -> web.Response:
    found = await store.list_subscriptions(services(request).pool, tenant(request))
    return json_response({"subscriptions": found})


async def create_subscription(request: web.Request) -> web.Response:
    data = await body(request)
    data.setdefault("events", list(EVENTS))
    sub = await subs.create(services(request), request.app[CHANNELS], tenant(request), data)
    return json_response(sub, 201)


async def get_subscription(request: web.Request) -> web.Response:
    sub = await store.get_subscription(services(request).pool, tenant(request), _id(request))
    return json_response(sub)


async def update_subscription(request: web.Request) -> web.Response:
    changes = await body(request)
    sub = await subs.update(
        services(request), request.app[CHANNELS], tenant(request), _id(request), changes
    )
    return json_response(sub)


async def delete_subscription(request: web.Request) -> web.Response:
    await store.delete_subscription(services(request).pool, tenant(request), _id(request))
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    q = request.query
    limit = _int(q.get("limit", "50"), "limit", 1, MAX_PAGE)
    state = q.get("state")
    if state is not None and state not in DELIVERY_STATES:
        raise _bad("state", f"must be one of {', '.join(DELIVERY_STATES)}")
    found = await store.list_deliveries(
        services(request).pool, tenant(request), _id(request), limit=limit, state=state,
        before=decode_cursor(q["cursor"]) if "cursor" in q else None,
    )  # fmt: skip
    nxt = encode_cursor(found[-1]["created_at"], found[-1]["id"]) if len(found) == limit else None
    return json_response({"deliveries": found, "next_cursor": nxt})


async def redeliver(request: web.Request) -> web.Response:
    await body(request)
    delivery = await store.redeliver(services(request).pool, tenant(request), _id(request))
    return json_response(delivery, 202)


_ONE = "/api/v1/subscriptions/{id}"
_PAGE = (
    Param("state", {"enum": list(DELIVERY_STATES)}, "only deliveries in this state"),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}),
    Param("cursor", {"type": "string"}, "next_cursor of the previous page"),
)
ROUTES = [
    Route("GET", "/api/v1/subscriptions", list_subscriptions, "Notification subscriptions",
          tag="notifications", response="SubscriptionList"),
    Route("POST", "/api/v1/subscriptions", create_subscription,
          "Subscribe a destination to run events (the answer shows the signing secret once)",
          "admin", 201, "subscription", tag="notifications", response="Subscription"),
    Route("GET", _ONE, get_subscription, "One subscription with its delivery counts",
          tag="notifications", response="Subscription"),
    Route("PATCH", _ONE, update_subscription,
          "Change events, filters, destination or secret; enable or disable", "admin",
          body="subscription_patch", tag="notifications", response="Subscription"),
    Route("DELETE", _ONE, delete_subscription, "Delete a subscription and its delivery log",
          "admin", 204, tag="notifications"),
    Route("GET", _ONE + "/deliveries", list_deliveries,
          "Deliveries, newest first, with every attempt", query=_PAGE, tag="notifications",
          response="DeliveryPage"),
    Route("POST", "/api/v1/deliveries/{id}/redeliver", redeliver,
          "Send a delivery again now, with a fresh retry schedule", "admin", 202, body="empty",
          body_required=False, tag="notifications", response="Delivery"),
]  # fmt: skip
