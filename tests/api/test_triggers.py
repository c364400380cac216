"""/api/v1/triggers on a real server on loopback: the resource, write-only secrets, validation,
tenant isolation, the delivery log's paging, and `jobhost triggers` as a process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from host.services import Services
from tests.api.conftest import Api, MakeKey, error_of
from tests.api.test_api_cli import cli
from tests.api.test_triggers_hooks import SECRET_A, SECRET_B, make, standard


async def test_create_show_list_change_delete(api: Api, admin: dict[str, str]) -> None:
    t = await make(api, admin, name="gh", scheme="github", secrets=["first-secret-123"],
                   mapping={"ref": "{{/ref}}"}, rate=5, burst=10)  # fmt: skip
    assert t["path"] == f"/hooks/{t['hook']}" and t["hook"].startswith("h_")
    assert (t["type"], t["job"], t["tolerance_s"], t["max_body_bytes"]) == (
        "noop",
        None,
        300,
        1024 * 1024,
    )
    assert (t["rate"], t["burst"], t["hmac"], t["enabled"]) == (5, 10, None, True)
    shown = await api.get("/api/v1/triggers/gh", headers=admin)
    assert await shown.json() == t
    listed = await (await api.get("/api/v1/triggers", headers=admin)).json()
    assert [x["name"] for x in listed["triggers"]] == ["gh"]
    for response in (t, await shown.json(), listed):  # secrets are write-only
        assert "first-secret-123" not in json.dumps(response)
    assert set(t["secrets"][0]) == {"id", "created_at"}
    r = await api.patch("/api/v1/triggers/gh", json={"rate": None, "tolerance_s": 60,
                        "mapping": None, "enabled": False}, headers=admin)  # fmt: skip
    changed = await r.json()
    assert (changed["rate"], changed["tolerance_s"], changed["mapping"]) == (None, 60, None)
    assert changed["enabled"] is False and changed["hook"] == t["hook"]
    assert (await api.delete("/api/v1/triggers/gh", headers=admin)).status == 204
    await error_of(await api.get("/api/v1/triggers/gh", headers=admin), 404)
    await error_of(await api.delete("/api/v1/triggers/gh", headers=admin), 404)


@pytest.mark.parametrize(
    ("fields", "status", "path"),
    [
        ({"scheme": "standard", "secrets": ["not-whsec-base64!"]}, 422, "/secrets/0"),
        ({"scheme": "github", "secrets": ["short"]}, 422, "/secrets/0"),
        ({"scheme": "github", "secrets": ["long-enough"], "hmac": {"header": "X"}}, 422, "/hmac"),
        ({"type": "no.such.type"}, 422, "/type"),
        ({"type": None, "job": "missing"}, 422, "/job"),
        ({"mapping": {"x": "{{ nope }}"}}, 422, "/mapping/x"),
        ({"scheme": "sha1"}, 422, "/scheme"),
        ({"secrets": []}, 422, "/secrets"),
        ({"max_body_bytes": 0}, 422, "/max_body_bytes"),
    ],
)
async def test_invalid_triggers_name_the_field(
    api: Api, admin: dict[str, str], fields: dict[str, Any], status: int, path: str
) -> None:
    body = {"name": "t", "type": "noop", "scheme": "standard", "secrets": [SECRET_A], **fields}
    body = {k: v for k, v in body.items() if v is not None}
    error = await error_of(await api.post("/api/v1/triggers", json=body, headers=admin), status)
    assert path in [d["path"] for d in error["details"]], error


async def test_conflicts(api: Api, admin: dict[str, str]) -> None:
    t = await make(api, admin)
    await error_of(
        await api.post("/api/v1/triggers", headers=admin,
                       json={"name": "t", "type": "noop", "scheme": "github",
                             "secrets": ["another-secret"]}), 409,
    )  # fmt: skip
    only = t["secrets"][0]["id"]
    error = await error_of(await api.patch("/api/v1/triggers/t", headers=admin,
                                           json={"remove_secrets": [only]}), 409)  # fmt: skip
    assert "at least one secret" in error["message"]
    unknown = "00000000-0000-0000-0000-000000000000"
    await error_of(await api.patch("/api/v1/triggers/t", headers=admin,
                                   json={"remove_secrets": [unknown]}), 409)  # fmt: skip
    # Nothing changed by the refused patches.
    assert (await (await api.get("/api/v1/triggers/t", headers=admin)).json())["secrets"] == [
        t["secrets"][0]
    ]


async def test_tenants_cannot_see_change_or_infer_each_others_triggers(
    api: Api, admin: dict[str, str], other: dict[str, str], services: Services
) -> None:
    mine = await make(api, admin, name="shared-name")
    body = "{}"
    await api.post(mine["path"], data=body, headers=standard(body, "t1"))
    for method, path, kw in [
        ("GET", "/api/v1/triggers/shared-name", {}),
        ("PATCH", "/api/v1/triggers/shared-name", {"json": {"enabled": False}}),
        ("PATCH", "/api/v1/triggers/shared-name", {"json": {"add_secrets": [SECRET_B]}}),
        ("DELETE", "/api/v1/triggers/shared-name", {}),
        ("GET", "/api/v1/triggers/shared-name/deliveries", {}),
    ]:
        r = await api.request(method, path, headers=other, **kw)
        assert (await error_of(r, 404))["message"] == "trigger 'shared-name' not found"
    assert (await (await api.get("/api/v1/triggers", headers=other)).json())["triggers"] == []
    # The same name is free for the other tenant (no 409 telling it the name exists), with its
    # own unguessable hook.
    theirs = await make(api, other, name="shared-name")
    assert theirs["hook"] != mine["hook"]
    assert theirs["secrets"][0]["id"] != mine["secrets"][0]["id"]
    after = await (await api.get("/api/v1/triggers/shared-name", headers=admin)).json()
    assert after == mine  # untouched by the other tenant's attempts
    log = await (await api.get("/api/v1/triggers/shared-name/deliveries", headers=other)).json()
    assert log["deliveries"] == []


async def test_delivery_log_pages_with_a_cursor(api: Api, admin: dict[str, str]) -> None:
    t = await make(api, admin)
    for i in range(7):
        await api.post(t["path"], data="{}", headers=standard("{}", f"p{i}", SECRET_B))
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/triggers/t/deliveries?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(url, headers=admin)).json()
        seen += page["deliveries"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7
    assert [d["delivery_id"] for d in seen] == [None] * 7  # unverified: no trusted id logged
    assert [d["id"] for d in seen] == sorted((d["id"] for d in seen), reverse=True)
    assert {d["reason"] for d in seen} == {"bad_signature"}
    for cursor in ("abc", "%C2%B2", "1" * 19):  # "²" is a digit to str.isdigit, not to int
        bad = await api.get(f"/api/v1/triggers/t/deliveries?cursor={cursor}", headers=admin)
        assert (await error_of(bad, 400))["details"][0]["path"] == "cursor"


async def test_scopes(api: Api, make_key: MakeKey) -> None:
    reader = await make_key("acme", "read")
    body = {"name": "t", "type": "noop", "scheme": "github", "secrets": ["a-long-secret"]}
    await error_of(await api.post("/api/v1/triggers", json=body, headers=reader), 403)
    await error_of(await api.post("/api/v1/triggers", json=body), 401)
    assert (await api.get("/api/v1/triggers", headers=reader)).status == 200


@pytest.mark.slow
def test_triggers_cli(worker_env: dict[str, str]) -> None:
    def run(*args: str) -> Any:
        done = cli("--json", "triggers", *args, env=worker_env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    created = run("create", "ci", "--scheme", "github", "--secret", "cli-secret-1", "--type",
                  "noop", "--rate", "2", "--mapping", '{"ref": "{{/ref}}"}')  # fmt: skip
    assert created["path"].startswith("/hooks/h_") and created["rate"] == 2
    assert "cli-secret-1" not in json.dumps(created)
    assert [t["name"] for t in run("list")["triggers"]] == ["ci"]
    updated = run("update", "ci", "--add-secret", "cli-secret-2", "--disable")
    assert len(updated["secrets"]) == 2 and updated["enabled"] is False
    assert run("show", "ci")["hook"] == created["hook"]
    assert run("deliveries", "ci") == {"deliveries": [], "next_cursor": None}
    assert run("delete", "ci") == {"deleted": "ci"}
    missing = cli("--json", "triggers", "show", "ci", env=worker_env)
    assert missing.returncode == 1 and "not found" in missing.stderr
