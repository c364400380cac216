"""GET /api/v1/workers: live workers from their heartbeats in Redis.

Workers are shared by all tenants; each worker's current runs are filtered to the key's tenant,
so another tenant's run ids never show.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from host.api.routes import Route, json_response, services, tenant
from host.store import runs as run_store


async def list_workers(request: web.Request) -> web.Response:
    svc = services(request)
    raw = await svc.redis.hgetall(svc.queue.keys.workers)
    beats = sorted((orjson.loads(v) for v in raw.values()), key=lambda w: str(w.get("id")))
    running = [r for w in beats for r in w.get("running", [])]
    mine = await run_store.owned(svc.pool, tenant(request), running)
    # A heartbeat comes every lease/3; missing three in a row means the worker is gone.
    stale_after = svc.settings.lease_s
    now = time.time()
    workers: list[dict[str, Any]] = []
    for w in beats:
        age = max(0.0, now - float(w.get("seen_at", 0)))
        workers.append({
            "id": w.get("id"), "host": w.get("host"), "pid": w.get("pid"),
            "types": w.get("types"), "concurrency": w.get("concurrency"),
            "started_at": w.get("started_at"), "heartbeat_age_s": round(age, 3),
            "alive": age <= stale_after,
            "current_runs": [r for r in w.get("running", []) if r in mine],
        })  # fmt: skip
    return json_response({"workers": workers})


ROUTES = [
    Route(
        "GET",
        "/api/v1/workers",
        list_workers,
        "Live workers and their runs",
        tag="workers",
        response="Workers",
    ),
]
