"""Email end to end: runs finish in a real worker, the notifier sends through the bundled email
channel to a real SMTP server (aiosmtpd on loopback, tests/conftest.py FaultHandler), and every
attempt is recorded. SMTP down means retries, then delivery; failures of one job within the
window are one digest; a permanent (5xx) refusal fails the delivery at once, visible in the API."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from host.api.app import create_app
from host.client import Client
from host.config import Settings
from host.embedded import free_port
from host.services import Services
from host.store import apikeys
from tests.conftest import FaultHandler
from tests.helpers import running_worker, wait_until
from tests.notify.conftest import deliveries, running_notifier, subscribe
from webhooks.outbound.channel import Channel
from webhooks.outbound.email import EmailChannel

TO = ["ops@example.com", "dev@example.com"]
CC = ["lead@example.com"]


def start_smtp(handler: FaultHandler, port: int) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture(scope="module")
def smtp_port() -> Iterator[int]:
    """The port of a module-wide server; tests that want it down use another port."""
    yield free_port()


@pytest.fixture(scope="module")
def module_smtp(smtp_port: int) -> Iterator[FaultHandler]:
    handler = FaultHandler()
    controller = start_smtp(handler, smtp_port)
    yield handler
    controller.stop()


@pytest.fixture
def smtp(module_smtp: FaultHandler) -> FaultHandler:
    """The module's server, reset to accept everything."""
    module_smtp.mode, module_smtp.refuse = "accept", set()
    module_smtp.received.clear()
    return module_smtp


@pytest.fixture
def settings(settings: Settings, smtp_port: int) -> Settings:
    return replace(
        settings, smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_timeout_s=5.0,
        smtp_from="Jobhost <jobhost@example.org>",
    )  # fmt: skip


@pytest.fixture
async def api(services: Services, aiohttp_client: Any) -> AsyncIterator[Any]:
    """The real API on loopback, with an admin key of the default tenant (the client's)."""
    key, _ = await apikeys.create_key(services.pool, services.settings.tenant, ("admin",))
    client = await aiohttp_client(create_app(services))
    client.headers = {"Authorization": f"Bearer {key}"}
    yield client


async def _post(api: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(path, json=body, headers=api.headers)
    assert r.status == 201, await r.text()
    data: dict[str, Any] = await r.json()
    return data


async def _get(api: Any, path: str) -> dict[str, Any]:
    r = await api.get(path, headers=api.headers)
    assert r.status == 200, await r.text()
    data: dict[str, Any] = await r.json()
    return data


async def test_emails_for_runs_that_succeed_and_die_arrive_through_the_notifier(
    services: Services, channels: dict[str, Channel], smtp: FaultHandler, api: Any
) -> None:
    sub = await _post(api, "/api/v1/subscriptions", {
        "name": "ops-mail", "channel": "email", "events": ["run.succeeded", "run.dead"],
        "destination": {"to": TO, "cc": CC},
    })  # fmt: skip
    client = Client(services)
    async with running_notifier(services, channels), running_worker(services):
        good = await client.enqueue("noop", {})
        bad = await client.enqueue("test.permanent", {})
        for run in (good, bad):
            await client.wait(run.id, 20)
        await wait_until(lambda: _at_least(smtp, 2))
    mails = {m["X-Jobhost-Event-Type"]: (env, m) for env, m in smtp.received}
    assert len(smtp.received) == 2 and set(mails) == {"run.succeeded", "run.dead"}
    for env, msg in mails.values():
        assert sorted(env.rcpt_tos) == sorted(TO + CC)
        assert env.mail_from == "jobhost@example.org"
        assert msg["To"] == ", ".join(TO) and msg["Cc"] == ", ".join(CC)
        assert msg["X-Jobhost-Subscription-Id"] == sub["id"]
    env, ok = mails["run.succeeded"]
    assert ok["Subject"] == f"[jobhost] noop succeeded (run {good.id})"
    assert f"Run {good.id} of noop succeeded on attempt 1." in ok.get_content()
    env, dead = mails["run.dead"]
    assert dead["Subject"] == f"[jobhost] test.permanent is dead (run {bad.id}, attempt 1)"
    assert "the input can never work" in dead.get_content()
    page = await _get(api, f"/api/v1/subscriptions/{sub['id']}/deliveries")
    rows = page["deliveries"]
    assert sorted(r["event_type"] for r in rows) == ["run.dead", "run.succeeded"]
    assert all(r["state"] == "succeeded" and r["attempts"] == 1 for r in rows)
    assert all(r["attempt_log"][0]["status"] == "250" for r in rows)


async def _at_least(smtp: FaultHandler, n: int) -> bool:
    return len(smtp.received) >= n


async def test_smtp_down_then_up_retries_on_the_schedule_and_loses_nothing(
    services: Services, channels: dict[str, Channel]
) -> None:
    port = free_port()  # nothing listens yet: connection refused
    services.settings = replace(services.settings, notify_schedule="0.3,0.3,5,5")
    channels = {**channels, "email": EmailChannel(replace(services.settings, smtp_port=port))}
    sub = await subscribe(services, channels, channel="email", events=["run.succeeded"],
                          destination={"to": TO})  # fmt: skip
    client = Client(services)
    handler = FaultHandler()
    controller: Controller | None = None
    try:
        async with running_notifier(services, channels), running_worker(services):
            runs = [await client.enqueue("noop", {}) for _ in range(2)]
            for run in runs:
                await client.wait(run.id, 20)

            async def tried_twice() -> bool:
                rows = await deliveries(services, sub["id"])
                return len(rows) == 2 and all(r["attempts"] >= 2 for r in rows)

            await wait_until(tried_twice)
            assert handler.received == []
            controller = start_smtp(handler, port)

            async def delivered() -> bool:
                rows = await deliveries(services, sub["id"])
                return all(r["state"] == "succeeded" for r in rows)

            await wait_until(delivered, timeout_s=20)
    finally:
        if controller is not None:
            controller.stop()
    rows = await deliveries(services, sub["id"])
    assert sorted(m["X-Jobhost-Event-Id"] for _, m in handler.received) == sorted(
        r["event_id"] for r in rows
    )  # each event once, none lost
    for row in rows:
        log = row["attempt_log"]
        assert [a["status"] for a in log[:2]] == ["refused", "refused"]
        assert all(not a["ok"] and "connection refused" in a["error"] for a in log[:-1])
        assert log[-1]["ok"] and log[-1]["status"] == "250"
        times = [datetime.fromisoformat(a["at"]).timestamp() for a in log]
        assert all(b - a >= 0.29 for a, b in itertools.pairwise(times))  # the schedule, no jitter


async def test_failures_of_one_job_within_the_window_are_one_digest_email(
    services: Services, channels: dict[str, Channel], smtp: FaultHandler
) -> None:
    services.settings = replace(services.settings, notify_digest_window_s=2.0)
    sub = await subscribe(services, channels, channel="email", events=["run.failed", "run.dead"],
                          destination={"to": TO})  # fmt: skip
    client = Client(services)
    async with running_notifier(services, channels), running_worker(services):
        failing = [await client.enqueue("test.fail", {}) for _ in range(2)]
        for run in failing:
            await client.wait(run.id, 20)

        async def settled() -> bool:
            rows = await deliveries(services, sub["id"])
            return len(rows) == 8 and all(r["state"] == "succeeded" for r in rows)

        await wait_until(settled, timeout_s=20)
    # 2 runs x (3 failed attempts + dead) = 8 events, one message.
    assert len(smtp.received) == 1
    env, digest = smtp.received[0]
    assert sorted(env.rcpt_tos) == sorted(TO)
    assert digest["Subject"] == "[jobhost] 8 failures of test.fail (2 dead)"
    assert digest["X-Jobhost-Digest-Count"] == "8"
    text = digest.get_content()
    for run in failing:
        assert text.count(f"run {run.id}") == 4
    assert "boom on attempt 3" in text
    rows = await deliveries(services, sub["id"])
    assert all(len(r["attempt_log"]) == 1 and r["attempt_log"][0]["status"] == "250"
               for r in rows)  # fmt: skip


async def test_a_permanent_refusal_fails_the_delivery_at_once_visible_in_the_api(
    services: Services, channels: dict[str, Channel], smtp: FaultHandler, api: Any
) -> None:
    smtp.mode = "permfail"  # 550 to every RCPT TO
    sub = await _post(api, "/api/v1/subscriptions", {
        "name": "nobody", "channel": "email", "events": ["run.succeeded"],
        "destination": {"to": ["nobody@example.com"]},
    })  # fmt: skip
    client = Client(services)
    async with running_notifier(services, channels), running_worker(services):
        run = await client.enqueue("noop", {})
        await client.wait(run.id, 20)

        async def failed() -> bool:
            page = await _get(api, f"/api/v1/subscriptions/{sub['id']}/deliveries")
            return bool(page["deliveries"]) and page["deliveries"][0]["state"] == "failed"

        await wait_until(failed)
    [row] = (await _get(api, f"/api/v1/subscriptions/{sub['id']}/deliveries"))["deliveries"]
    assert row["attempts"] == 1 and row["run_id"] == run.id  # no retry of a 5xx
    [attempt] = row["attempt_log"]
    assert attempt["status"] == "550" and not attempt["ok"]
    assert "nobody@example.com" in attempt["error"] and "550" in attempt["error"]
    assert smtp.received == []
    shown = await _get(api, f"/api/v1/subscriptions/{sub['id']}")
    assert shown["counts"] == {"pending": 0, "succeeded": 0, "failed": 1}
