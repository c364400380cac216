"""Job definitions: create, list, show, change, delete, pause, resume and trigger.

A job is addressed by its name (unique per tenant). Its representation carries the next fire
times of its schedule, so a client sees what a change of cron or time zone means.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from host.api.routes import Route, json_response, services, tenant
from host.api.validation import body, check_payload, integers
from host.definitions import JobDefinitions
from host.store.jobs import JobDef

#: Fire times listed in a job's representation.
NEXT_TIMES = 5


def _defs(request: web.Request) -> JobDefinitions:
    return JobDefinitions(services(request), tenant=tenant(request))


def represent(job: JobDef) -> dict[str, Any]:
    data = job.as_dict()
    del data["tenant_id"]
    times = JobDefinitions.next_times(job, NEXT_TIMES) if job.enabled else []
    data["next_fire_times"] = [t.isoformat() for t in times]
    return data


async def list_jobs(request: web.Request) -> web.Response:
    return json_response({"jobs": [represent(j) for j in await _defs(request).list()]})


async def create_job(request: web.Request) -> web.Response:
    data = integers(await body(request), "priority")
    defs = _defs(request)
    check_payload(services(request).registry, data["type"], data.get("payload", {}))
    job = await defs.create(
        data["name"], data["type"], data.get("payload", {}),
        schedule=data.get("schedule"), priority=data.get("priority"),
    )  # fmt: skip
    if not data.get("enabled", True):
        job = await defs.pause(job.name)
    return json_response(represent(job), 201)


async def get_job(request: web.Request) -> web.Response:
    return json_response(represent(await _defs(request).get(request.match_info["name"])))


async def update_job(request: web.Request) -> web.Response:
    changes = integers(await body(request), "priority")
    defs = _defs(request)
    if "payload" in changes:
        job = await defs.get(request.match_info["name"])
        check_payload(services(request).registry, job.type, changes["payload"])
    job = await defs.update(request.match_info["name"], changes)
    return json_response(represent(job))


async def delete_job(request: web.Request) -> web.Response:
    await _defs(request).delete(request.match_info["name"])
    return web.Response(status=204)


async def pause_job(request: web.Request) -> web.Response:
    await body(request)
    return json_response(represent(await _defs(request).pause(request.match_info["name"])))


async def resume_job(request: web.Request) -> web.Response:
    await body(request)
    return json_response(represent(await _defs(request).resume(request.match_info["name"])))


async def trigger_job(request: web.Request) -> web.Response:
    await body(request)
    name = request.match_info["name"]
    run = await _defs(request).trigger(name)
    return json_response({"id": run.id, "type": run.type, "state": run.state, "job": name}, 202)


_ONE = "/api/v1/jobs/{name}"
ROUTES = [
    Route("GET", "/api/v1/jobs", list_jobs, "Job definitions", tag="jobs", response="JobList"),
    Route("POST", "/api/v1/jobs", create_job, "Define a job", "write", 201, "job", tag="jobs",
          response="Job"),
    Route("GET", _ONE, get_job, "One job definition", tag="jobs", response="Job"),
    Route(
        "PATCH", _ONE, update_job, "Change payload, schedule, priority or enabled", "write",
        body="job_patch", tag="jobs", response="Job",
    ),
    Route("DELETE", _ONE, delete_job, "Delete a definition (its runs stay)", "write", 204,
          tag="jobs"),
    Route("POST", _ONE + "/pause", pause_job, "Stop firing the schedule", "write",
          body="empty", body_required=False, tag="jobs", response="Job"),
    Route("POST", _ONE + "/resume", resume_job, "Fire again from the next tick", "write",
          body="empty", body_required=False, tag="jobs", response="Job"),
    Route("POST", _ONE + "/trigger", trigger_job, "Run the definition now", "write", 202,
          body="empty", body_required=False, tag="jobs", response="Triggered"),
]  # fmt: skip
