"""The route table's shape: one Route per endpoint, declared next to its handler.

The app registers routes from it, the auth middleware reads each route's scope from it, body
validation reads its schema name, and the OpenAPI document is built from it, so the document
cannot drift from what the server serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from host.services import Services
from host.store.apikeys import ApiKey

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query parameter, documented with a JSON Schema."""

    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: str | None = "read"  #: None: no API key needed
    status: int = 200  #: the success status
    body: str | None = None  #: request body schema: schemas/api/<body>.json
    body_required: bool = True
    query: tuple[Param, ...] = field(default_factory=tuple)
    tag: str = ""
    response: str | None = None  #: the success body's schema (host.api.openapi.RESPONSES)
    errors: tuple[int, ...] = ()  #: error statuses beyond those its scope and body imply


#: The host's services (pools, queue, registry), shared by every handler.
SERVICES = web.AppKey("services", Services)
#: Every Route by (method, path), for the middlewares.
ROUTE_TABLE = web.AppKey("route_table", dict[tuple[str, str], Route])
#: The API key that authenticated a request (absent on public routes).
KEY = web.RequestKey("api_key", ApiKey)
#: The Route a request matched.
ROUTE = web.RequestKey("route", Route)


def route_of(request: web.Request) -> Route | None:
    """The Route a request matched, or None (no such path, or a method not served)."""
    info = request.match_info.route.resource
    if info is None:
        return None
    return request.app[ROUTE_TABLE].get((request.method, info.canonical))


def tenant(request: web.Request) -> str:
    """The tenant every query of this request is scoped to: the API key's."""
    return request[KEY].tenant_id


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
