"""GET /api/v1/queues: per job type, the tenant's waiting work and the type's limits.

Ready counts come from Redis (the tenant's own lanes only); delayed, in flight and dead from
PostgreSQL, for this tenant. Limits, tokens and throttled claims belong to the type (limits are
shared by all tenants), so they are shown as they are.
"""

from __future__ import annotations

from aiohttp import web

from host.api.routes import Route, json_response, services, tenant
from host.store import runs as run_store

_COUNTED = ("scheduled", "retrying", "running", "dead")


async def list_queues(request: web.Request) -> web.Response:
    svc, who = services(request), tenant(request)
    counts = await run_store.state_counts_by_type(svc.pool, who, _COUNTED)
    types = sorted(set(svc.registry.types) | set(counts))
    ready = await _ready(request, types)
    status = await svc.queue.limit_status(types)
    out = {}
    for name in types:
        c, st = counts.get(name, {}), status[name]
        out[name] = {
            "ready": ready[name],
            "delayed": c.get("scheduled", 0) + c.get("retrying", 0),
            "in_flight": c.get("running", 0),
            "dead": c.get("dead", 0),
            "throttled": st["throttled_claims"],
            "tokens": st["tokens"],
            "limits": {k: st[k] for k in ("rate_per_s", "burst", "concurrency")}
            | {k: st[k] for k in ("lane_rate_per_s", "lane_burst", "lane_concurrency")},
        }
    return json_response({"types": out})


async def _ready(request: web.Request, types: list[str]) -> dict[str, int]:
    """Ready runs per type in this tenant's lanes (the tenant, or `tenant/key`)."""
    svc, who = services(request), tenant(request)
    keys = svc.queue.keys
    pipe = svc.redis.pipeline(transaction=False)
    for t in types:
        pipe.zrange(keys.lanes(t), 0, -1)
    lanes = await pipe.execute()
    mine: list[tuple[str, str]] = []
    for t, names in zip(types, lanes, strict=True):
        for raw in names:
            lane = raw.decode() if isinstance(raw, bytes) else str(raw)
            if lane == who or lane.startswith(who + "/"):
                mine.append((t, lane))
                pipe.zcard(keys.ready(t, lane))
    sizes = await pipe.execute() if mine else []
    out = dict.fromkeys(types, 0)
    for (t, _), n in zip(mine, sizes, strict=True):
        out[t] += int(n)
    return out


ROUTES = [
    Route(
        "GET",
        "/api/v1/queues",
        list_queues,
        "Per-type depth, limits and tokens",
        tag="queues",
        response="Queues",
    ),
]
