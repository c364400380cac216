"""The served OpenAPI document is valid OpenAPI 3.1 and lists exactly the routes the app
serves, with the request schemas the server validates with."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from host.client import Client
from host.services import Services
from tests.api.conftest import Api
from tests.helpers import running_worker


async def test_openapi_is_valid_and_matches_the_router(api: Api) -> None:
    r = await api.get("/api/v1/openapi.json")
    assert r.status == 200
    doc = await r.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == served
    run_op = doc["paths"]["/api/v1/runs"]["post"]
    ref = run_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"] == ["type", "payload"]
    assert run_op["security"] == [{"apiKey": []}] and "422" in run_op["responses"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


class Conformance:
    """Calls the API and checks each answer against the served document: the status must be
    documented for the operation and the body must match its schema."""

    def __init__(self, api: Api, doc: dict[str, Any], headers: dict[str, str]) -> None:
        self.api, self.doc, self.headers = api, doc, headers
        self.exercised: set[tuple[str, str]] = set()
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:doc", resource)

    async def call(self, method: str, template: str, path: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", self.headers)
        r = await self.api.request(method, path or template, headers=headers, **kw)
        op = self.doc["paths"][template][method.lower()]
        documented = op["responses"].get(str(r.status))
        assert documented is not None, f"{method} {template} answered undocumented {r.status}"
        if "$ref" in documented:
            documented = self.doc["components"]["responses"][documented["$ref"].split("/")[-1]]
        self.exercised.add((method, template))
        if "content" not in documented:
            assert not await r.read()
            return None
        body = await r.json()
        schema = documented["content"]["application/json"]["schema"]
        ref = {"$ref": "urn:doc" + schema["$ref"]}
        errors = list(Draft202012Validator(ref, registry=self.registry).iter_errors(body))
        assert not errors, f"{method} {template} {r.status}: {errors[0].message}"
        return body


async def test_every_route_answers_as_documented(
    api: Api, admin: dict[str, str], services: Services
) -> None:
    doc = await (await api.get("/api/v1/openapi.json")).json()
    c = Conformance(api, doc, admin)
    await c.call("GET", "/healthz")
    await c.call("GET", "/readyz")
    await c.call("GET", "/api/v1/openapi.json")
    await c.call("GET", "/api/v1/types")
    run = await c.call("POST", "/api/v1/runs", json={"type": "noop", "payload": {}})
    one = "/api/v1/runs/{id}"
    await c.call("POST", "/api/v1/runs", json={"type": "noop", "payload": {"x": 1}, "priority": 1})
    await c.call("POST", "/api/v1/runs", json={"type": "noop"})  # 422
    await c.call("POST", "/api/v1/runs/batch", json={"runs": [{"type": "noop", "payload": {}}]})
    await c.call("GET", "/api/v1/runs", "/api/v1/runs?limit=1")
    await c.call("GET", "/api/v1/runs", "/api/v1/runs?limit=-1")  # 400
    await c.call("GET", one, f"/api/v1/runs/{run['id']}")
    await c.call("GET", one, "/api/v1/runs/nope")  # 404
    await c.call("POST", one + "/retry", f"/api/v1/runs/{run['id']}/retry")  # 409
    await c.call("POST", one + "/cancel", f"/api/v1/runs/{run['id']}/cancel")
    dead = await c.call("POST", "/api/v1/runs", json={"type": "test.permanent", "payload": {}})
    async with running_worker(services):
        await Client(services, tenant="acme").wait(dead["id"], 20)
        await c.call("GET", one, f"/api/v1/runs/{dead['id']}")
        await c.call("POST", one + "/retry", f"/api/v1/runs/{dead['id']}/retry")
        await c.call("GET", "/api/v1/workers")
    job = "/api/v1/jobs/{name}"
    await c.call("POST", "/api/v1/jobs", json={"name": "j", "type": "noop",
                 "schedule": {"cron": "@hourly"}})  # fmt: skip
    await c.call("POST", "/api/v1/jobs", json={"name": "j", "type": "noop"})  # 409
    await c.call("GET", "/api/v1/jobs")
    await c.call("GET", job, "/api/v1/jobs/j")
    await c.call("PATCH", job, "/api/v1/jobs/j", json={"priority": 2})
    await c.call("POST", job + "/pause", "/api/v1/jobs/j/pause")
    await c.call("POST", job + "/resume", "/api/v1/jobs/j/resume", json={})
    await c.call("POST", job + "/trigger", "/api/v1/jobs/j/trigger")
    await c.call("GET", "/api/v1/queues")
    await c.call("DELETE", job, "/api/v1/jobs/j")
    await _triggers_as_documented(c)
    subs, sub_one = "/api/v1/subscriptions", "/api/v1/subscriptions/{id}"
    hook = {"name": "h", "channel": "webhook", "destination": {"url": "https://hooks.example.com"},
            "events": ["run.succeeded"]}  # fmt: skip
    sub = await c.call("POST", subs, json=hook)
    await c.call("POST", subs, json={**hook, "destination": {"url": "http://10.0.0.1"}})  # 422
    await c.call("GET", subs)
    await c.call("GET", sub_one, f"{subs}/{sub['id']}")
    await c.call("GET", sub_one, f"{subs}/nope")  # 404
    await c.call("PATCH", sub_one, f"{subs}/{sub['id']}", json={"enabled": False})
    await c.call("PATCH", sub_one, f"{subs}/{sub['id']}", json={"enabled": True})
    async with running_worker(services):
        done = await c.call("POST", "/api/v1/runs", json={"type": "noop", "payload": {}})
        await Client(services, tenant="acme").wait(done["id"], 20)
    page = await c.call("GET", sub_one + "/deliveries", f"{subs}/{sub['id']}/deliveries?limit=5")
    redeliver = "/api/v1/deliveries/{id}/redeliver"
    await c.call("POST", redeliver, f"/api/v1/deliveries/{page['deliveries'][0]['id']}/redeliver")
    await c.call("POST", redeliver, "/api/v1/deliveries/nope/redeliver")  # 404
    await c.call("DELETE", sub_one, f"{subs}/{sub['id']}")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert c.exercised == documented


async def _triggers_as_documented(c: Conformance) -> None:
    """The trigger routes and POST /hooks/{name}, each answer checked against the document."""
    from tests.api.test_triggers_hooks import SECRET_A, standard

    one = "/api/v1/triggers/{name}"
    t = await c.call("POST", "/api/v1/triggers", json={
        "name": "t", "type": "noop", "scheme": "standard", "secrets": [SECRET_A],
        "rate": 0.01, "burst": 1, "max_body_bytes": 100})  # fmt: skip
    await c.call("POST", "/api/v1/triggers", json={"name": "t"})  # 422
    await c.call("GET", "/api/v1/triggers")
    await c.call("GET", one, "/api/v1/triggers/t")
    await c.call("GET", one, "/api/v1/triggers/nope")  # 404
    await c.call("PATCH", one, "/api/v1/triggers/t", json={"tolerance_s": 100})
    hook = "/hooks/{name}"
    body = '{"n":1}'
    await c.call("POST", hook, t["path"], data=body, headers=standard(body, "c1"))  # 202
    await c.call("POST", hook, t["path"], data=body, headers=standard(body, "c2"))  # 429
    await c.call("POST", hook, t["path"], data=body, headers={})  # 401
    await c.call("POST", hook, t["path"], data="x" * 200)  # 413
    await c.call("POST", hook, "/hooks/h_nope", data=body)  # 404
    await c.call("GET", one + "/deliveries", "/api/v1/triggers/t/deliveries?limit=2")
    await c.call("GET", one + "/deliveries", "/api/v1/triggers/t/deliveries?cursor=x")  # 400
    await c.call("DELETE", one, "/api/v1/triggers/t")
