"""The API on a real aiohttp server on loopback, and API keys for two tenants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from host.api.app import create_app
from host.services import Services
from host.store import apikeys

Api = TestClient[web.Request, web.Application]
MakeKey = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def make_key(services: Services) -> MakeKey:
    """Create a key (`tenant`, scopes) and return its Authorization header."""

    async def make(tenant: str = "acme", *scopes: str) -> dict[str, str]:
        key, _ = await apikeys.create_key(services.pool, tenant, scopes or ("admin",))
        return {"Authorization": f"Bearer {key}"}

    return make


@pytest.fixture
async def api(services: Services, aiohttp_client: Any) -> Api:
    client: Api = await aiohttp_client(create_app(services))
    return client


@pytest.fixture
async def admin(make_key: MakeKey) -> dict[str, str]:
    """An admin key of tenant acme."""
    return await make_key("acme", "admin")


@pytest.fixture
async def other(make_key: MakeKey) -> dict[str, str]:
    """An admin key of another tenant, globex."""
    return await make_key("globex", "admin")


async def error_of(response: Any, status: int) -> dict[str, Any]:
    """Assert the status and the one error shape; return the error."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    data = await response.json()
    assert set(data) == {"error"}
    assert set(data["error"]) == {"code", "message", "details"}
    assert all(set(d) == {"path", "message"} for d in data["error"]["details"])
    error: dict[str, Any] = data["error"]
    return error
