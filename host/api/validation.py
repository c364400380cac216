"""Request bodies: JSON only, parsed once, validated against schemas/api/<name>.json.

Every failing field is reported as a JSON pointer into the body, so a client can point at it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from aiohttp import web
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from host.api.routes import ROUTE
from host.errors import (
    BadRequest,
    FieldError,
    UnknownJobType,
    UnsupportedMediaType,
    ValidationFailed,
)
from host.registry import Registry as JobRegistry
from host.schemas import payload_errors, pointer

#: How deeply a request body may nest objects and arrays: far below orjson's 254 levels (a run's
#: payload is serialised inside its envelope), deep enough for any real payload.
MAX_DEPTH = 128

#: The top-level schemas/ folder (package data), API request schemas under api/.
API_SCHEMAS_DIR = Path(__file__).resolve().parent.parent.parent / "schemas" / "api"


def load_api_schemas(directory: Path = API_SCHEMAS_DIR) -> dict[str, dict[str, Any]]:
    """Every request schema by name (file name without .json)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


class BodyValidator:
    """Validators for every request schema, built once per app; `$ref: "x.json"` resolves to
    the sibling schema."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        self.schemas = schemas
        resources = [(f"{name}.json", Resource.from_contents(s)) for name, s in schemas.items()]
        registry: Registry[Any] = Registry().with_resources(resources)
        cls = jsonschema.Draft202012Validator
        self._validators: dict[str, Validator] = {}
        for name, schema in schemas.items():
            cls.check_schema(schema)
            self._validators[name] = cls(
                schema, registry=registry, format_checker=cls.FORMAT_CHECKER
            )

    def check(self, name: str, body: Any) -> dict[str, Any]:
        errors = payload_errors(self._validators[name], body)
        if errors:
            raise ValidationFailed("request body", errors)
        assert isinstance(body, dict)
        return body


#: The app's BodyValidator.
BODIES = web.AppKey("bodies", BodyValidator)


async def body(request: web.Request) -> dict[str, Any]:
    """The request body, validated against its route's schema (422 naming each bad field)."""
    route = request[ROUTE]
    assert route.body is not None, f"{route.path} declares no body schema"
    data = await read_json(request, required=route.body_required)
    return request.app[BODIES].check(route.body, data)


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request body as JSON: 415 unless application/json, 400 when malformed, 413 (from
    aiohttp's client_max_size) when too large. No body on an optional one reads as {}."""
    raw = await request.read()
    if not raw:
        if required:
            raise BadRequest("this request needs a JSON body")
        return {}
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.content_type or 'nothing'}"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if too_deep(data, raw):
        raise BadRequest(f"the body is nested deeper than {MAX_DEPTH} levels")
    if b"\\u0000" in raw:  # PostgreSQL text and jsonb cannot hold NUL
        paths = sorted(nul_paths(data, ""))
        if paths:
            message = "must not contain the NUL character (\\u0000)"
            raise ValidationFailed("request body", [FieldError(p, message) for p in paths])
    return data


def too_deep(node: Any, raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when `node` (parsed from `raw`) nests objects and arrays deeper than `limit`. A
    loop, not recursion, so no depth can exhaust the stack; skipped when `raw` has too few
    brackets to get there."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        here, depth = stack.pop()
        if depth > limit:
            return True
        children = here.values() if isinstance(here, dict) else here
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def nul_paths(node: Any, at: str) -> list[str]:
    """JSON pointers of every string (value or key) in `node` that contains NUL, in no set
    order. A loop, not recursion, so no depth can exhaust the stack."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(node, at)]
    while stack:
        here, path = stack.pop()
        if isinstance(here, str):
            found += [path] if "\x00" in here else []
        elif isinstance(here, list):
            stack.extend((v, f"{path}/{i}") for i, v in enumerate(here))
        elif isinstance(here, dict):
            for key, value in here.items():
                inner = f"{path}/{pointer([key])[1:]}"
                found += [inner] if "\x00" in key else []
                stack.append((value, inner))
    return found


def integers(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """`data` with the named fields as Python ints: JSON Schema's integer admits 3.0, the code
    behind it wants 3."""
    return {k: int(v) if k in names and isinstance(v, float) else v for k, v in data.items()}


def check_payload(registry: JobRegistry, job_type: str, payload: Any, at: str = "") -> None:
    """ValidationFailed unless `job_type` exists and `payload` fits its schema; paths point into
    the request body (`{at}/type`, `{at}/payload/...`)."""
    try:
        registry.validate(job_type, payload)
    except UnknownJobType as exc:
        raise ValidationFailed("request body", [FieldError(f"{at}/type", exc.message)]) from None
    except ValidationFailed as exc:
        errors = [FieldError(f"{at}/payload{e.path}", e.message) for e in exc.errors]
        raise ValidationFailed(exc.what, errors) from None
