"""Inbound webhook triggers: create, list, show, change, delete, and each one's delivery log.

Addressed by name, unique per tenant; another tenant's name answers 404 like an unknown one.
The public side, POST /hooks/{hook}, is host.api.hooks.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from host.api.hooks import HOOK_BUCKETS
from host.api.routes import Param, Route, json_response, services, tenant
from host.api.runs import MAX_PAGE, _bad, _int
from host.api.validation import body
from host.store.triggers import Trigger
from host.triggers import Triggers, represent

#: A delivery log cursor: the id of the last delivery on the previous page.
_CURSOR = re.compile(r"[0-9]{1,18}")


def _triggers(request: web.Request) -> Triggers:
    return Triggers(services(request), tenant=tenant(request))


async def _shown(request: web.Request, triggers: list[Trigger]) -> list[dict[str, Any]]:
    """The triggers as the API shows them, with the count of refusals not logged (Redis)."""
    counts = await request.app[HOOK_BUCKETS].unlogged([t.id for t in triggers])
    return [
        {**represent(t), "refusals_not_logged": n} for t, n in zip(triggers, counts, strict=True)
    ]


async def list_triggers(request: web.Request) -> web.Response:
    return json_response({"triggers": await _shown(request, await _triggers(request).list())})


async def create_trigger(request: web.Request) -> web.Response:
    trigger = await _triggers(request).create(await body(request))
    return json_response((await _shown(request, [trigger]))[0], 201)


async def get_trigger(request: web.Request) -> web.Response:
    trigger = await _triggers(request).get(request.match_info["name"])
    return json_response((await _shown(request, [trigger]))[0])


async def update_trigger(request: web.Request) -> web.Response:
    changes = await body(request)
    trigger = await _triggers(request).update(request.match_info["name"], changes)
    return json_response((await _shown(request, [trigger]))[0])


async def delete_trigger(request: web.Request) -> web.Response:
    await _triggers(request).delete(request.match_info["name"])
    return web.Response(status=204)


async def list_trigger_deliveries(request: web.Request) -> web.Response:
    q = request.query
    limit = _int(q.get("limit", "50"), "limit", 1, MAX_PAGE)
    before = None
    if "cursor" in q:
        if not _CURSOR.fullmatch(q["cursor"]):
            raise _bad("cursor", "not a cursor this API returned")
        before = int(q["cursor"])
    found = await _triggers(request).deliveries(
        request.match_info["name"], limit=limit, before=before
    )
    nxt = str(found[-1]["id"]) if len(found) == limit else None
    return json_response({"deliveries": found, "next_cursor": nxt})


_ONE = "/api/v1/triggers/{name}"
ROUTES = [
    Route("GET", "/api/v1/triggers", list_triggers, "Inbound webhook triggers", tag="triggers",
          response="TriggerList"),
    Route("POST", "/api/v1/triggers", create_trigger, "Create a trigger (secrets write-only)",
          "write", 201, "trigger", tag="triggers", response="Trigger"),
    Route("GET", _ONE, get_trigger, "One trigger", tag="triggers", response="Trigger"),
    Route("PATCH", _ONE, update_trigger, "Change a trigger; rotate its secrets", "write",
          body="trigger_patch", tag="triggers", response="Trigger"),
    Route("DELETE", _ONE, delete_trigger, "Delete a trigger and its delivery log", "write", 204,
          tag="triggers"),
    Route(
        "GET", _ONE + "/deliveries", list_trigger_deliveries,
        "Deliveries received, newest first: accepted, replays, and rejections with the reason",
        query=(Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                               "default": 50}),
               Param("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                     "next_cursor of the previous page")),
        tag="triggers", response="HookDeliveryPage",
    ),
]  # fmt: skip
