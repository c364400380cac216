"""The served OpenAPI document is valid OpenAPI 3.1 and lists exactly the routes the app
serves, with the request schemas the server validates with."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.api.conftest import Api


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
