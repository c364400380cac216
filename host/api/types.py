"""GET /api/v1/types: the registered job types with plugin, payload schema and policy."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from host.api.routes import Route, json_response, services
from host.policy import policy_as_dict


async def list_types(request: web.Request) -> web.Response:
    registry = services(request).registry
    types: list[dict[str, Any]] = [
        {
            "name": t.name, "plugin": t.plugin, "description": t.description,
            "schema": t.schema, "policy": policy_as_dict(t.policy),
        }
        for t in sorted(registry.types.values(), key=lambda t: t.name)
    ]  # fmt: skip
    return json_response({"types": types})


ROUTES = [
    Route(
        "GET", "/api/v1/types", list_types, "Registered job types", tag="types", response="TypeList"
    ),
]
