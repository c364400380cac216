"""The OpenAPI 3.1 document, built from the route table and the request schemas the server
validates with, so what it says is what the server does. Served at /api/v1/openapi.json."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from host.api.responses import RESPONSES
from host.api.routes import ROUTE_TABLE, SERVICES, Route, json_response
from host.api.validation import BODIES
from host.registry import Registry

#: Request schemas whose `payload` is checked against the schema of their `type`.
_TYPED_BODIES = ("run", "job")

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 400: "Malformed request",
    401: "No, unknown or revoked API key", 403: "The API key lacks the scope", 404: "Not found",
    409: "Conflict with the resource's state", 413: "Body too large",
    415: "Body not application/json", 422: "Schema violation", 429: "Rate limited",
    503: "PostgreSQL or Redis unavailable",
}  # fmt: skip

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}


def build_document(
    routes: list[Route], schemas: dict[str, dict[str, Any]], registry: Registry
) -> dict[str, Any]:
    """The document for these routes and request schemas; bodies naming a job type list this
    host's types and, per type, its payload schema (what the server checks next)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    components: dict[str, Any] = {
        "schemas": {"Error": ERROR_SCHEMA}
        | RESPONSES
        | {n: _typed(n, _component(s), registry) for n, s in schemas.items()},
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        "responses": {
            str(code): _error_response(code) for code in (400, 401, 403, 404, 409, 413, 415, 422)
        }
        | {"429": _error_response(429, retry_after=True), "503": _error_response(503)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobhost", "version": "1", "description": __doc__ or ""},
        "paths": paths,
        "components": components,
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag] if route.tag else [],
        "responses": {
            str(route.status): _success(route),
            **{str(c): {"$ref": f"#/components/responses/{c}"} for c in _errors(route)},
        },
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    params += [
        {"name": p.name, "in": "query", "required": False, "schema": p.schema,
         "description": p.description}
        for p in route.query
    ]  # fmt: skip
    if params:
        op["parameters"] = params
    if route.scope is None:
        op["security"] = []
    else:
        op["security"] = [{"apiKey": []}]
        op["x-required-scope"] = route.scope
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}
            },
        }
    return op


def _errors(route: Route) -> list[int]:
    if route.scope is None:
        return sorted({503, *route.errors})
    codes = [400, 401, 403, 404, 429, 503]
    if route.body is not None:
        codes += [409, 413, 415, 422]
    elif route.method != "GET":
        codes += [409]
    return sorted({*codes, *route.errors})


def _success(route: Route) -> dict[str, Any]:
    if route.response is None:
        return {"description": _STATUS_TEXT[route.status]}
    schema = {"$ref": f"#/components/schemas/{route.response}"}
    return {
        "description": _STATUS_TEXT[route.status],
        "content": {"application/json": {"schema": schema}},
    }


def _error_response(status: int, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _STATUS_TEXT[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
        }
    return response


def _component(schema: dict[str, Any]) -> dict[str, Any]:
    """A request schema as a component: `$ref: "x.json"` points at the sibling component."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items() if k != "$schema"}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.endswith(".json"):
                out["$ref"] = "#/components/schemas/" + ref.removesuffix(".json")
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def _typed(name: str, schema: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """For request bodies with `type` and `payload` (run, job): the registered types, and each
    type's payload schema as an if/then branch."""
    if name not in _TYPED_BODIES or not registry.types:
        return schema
    props = dict(schema["properties"])
    props["type"] = {**props["type"], "enum": sorted(registry.types)}
    branches = [
        {
            "if": {"properties": {"type": {"const": t.name}}, "required": ["type"]},
            "then": {"properties": {"payload": _component(dict(t.schema))}},
        }
        for t in sorted(registry.types.values(), key=lambda t: t.name)
    ]
    return {**schema, "properties": props, "allOf": branches}


async def openapi(request: web.Request) -> web.Response:
    app = request.app
    doc = build_document(
        list(app[ROUTE_TABLE].values()), app[BODIES].schemas, app[SERVICES].registry
    )
    return json_response(doc)


ROUTES = [
    Route(
        "GET",
        "/api/v1/openapi.json",
        openapi,
        "This document",
        scope=None,
        tag="meta",
        response="OpenAPI",
    ),
]
