"""Digests through a third-party channel registered with `jobhost_notification_channels`:
failures of one job type within the window go out as one message; the rest alone."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from host.client import Client
from host.config import Settings, load_plugins_config
from host.errors import ValidationFailed
from host.registry import Registry, load_registry
from host.services import Services
from tests import plugin_fixtures
from tests.conftest import ROOT
from tests.helpers import running_worker, wait_until
from tests.notify import digest_plugin
from tests.notify.conftest import deliveries, pending_delivery, running_notifier, subscribe
from webhooks.outbound.channel import Channel, Delivery, SendResult


@pytest.fixture
def registry() -> Registry:
    return load_registry(
        load_plugins_config(ROOT / "plugins.toml"), extra=[plugin_fixtures, digest_plugin]
    )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, notify_digest_window_s=2.0)


async def test_failures_of_a_job_type_are_grouped_into_one_message(
    services: Services, channels: dict[str, Channel]
) -> None:
    assert channels["test.chat"] is digest_plugin.CHANNEL  # came through the hook
    with pytest.raises(ValidationFailed, match="/destination/room"):
        await subscribe(services, channels, channel="test.chat", destination={"room": "ops"})
    sub = await subscribe(services, channels, channel="test.chat", destination={"room": "#ops"})
    digest_plugin.CHANNEL.sent.clear()
    client = Client(services)
    started = time.monotonic()
    async with running_notifier(services, channels), running_worker(services):
        failing = [await client.enqueue("test.fail", {}) for _ in range(3)]
        ok = await client.enqueue("noop", {})
        for run in [*failing, ok]:
            await client.wait(run.id, 20)

        async def all_sent() -> bool:
            rows = await deliveries(services, sub["id"])
            return len(rows) == 13 and all(r["state"] == "succeeded" for r in rows)

        await wait_until(all_sent)
    sends = digest_plugin.CHANNEL.sent
    singles = [s for s in sends if len(s) == 1]
    digests = [s for s in sends if len(s) > 1]
    # 3 runs x 3 failed attempts = 9 run.failed in one digest; run.dead x3 and run.succeeded
    # have no digest key: alone.
    assert len(digests) == 1 and len(digests[0]) == 9
    assert {d.event_type for d in digests[0]} == {"run.failed"}
    assert len({d.event_id for d in digests[0]}) == 9
    assert sorted(s[0].event_type for s in singles) == ["run.dead"] * 3 + ["run.succeeded"]
    assert time.monotonic() - started >= 2.0  # held for the window
    rows = await deliveries(services, sub["id"])
    assert all(len(r["attempt_log"]) == 1 and r["attempt_log"][0]["status"] == "posted"
               for r in rows)  # fmt: skip


class FailingDigest:
    """A channel that groups every event and whose destination always fails (retryable)."""

    name = "test.failing"
    destination_schema: Mapping[str, Any] = {"type": "object"}

    def __init__(self) -> None:
        self.sent: list[list[str]] = []

    def check_destination(self, destination: Mapping[str, Any]) -> None:
        pass

    def digest_key(self, delivery: Delivery) -> str | None:
        return "all"

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.sent.append([d.event_id for d in deliveries])
        return SendResult(ok=False, status="503", error="down")

    async def aclose(self) -> None:
        pass


async def test_a_digest_member_with_a_spent_schedule_does_not_fail_the_others(
    services: Services,
) -> None:
    channel = FailingDigest()
    chans: dict[str, Channel] = {channel.name: channel}
    sub = await subscribe(services, chans, channel=channel.name, destination={})
    await pending_delivery(services, sub["id"], "msg_old")
    await pending_delivery(services, sub["id"], "msg_new")
    # msg_old has used its whole schedule (3 retries); msg_new is fresh and not due yet, so
    # it joins the group when msg_old is claimed.
    await services.pool.execute(
        """UPDATE deliveries SET digest_key = 'all',
               attempts = CASE WHEN event_id = 'msg_old' THEN 3 ELSE 0 END,
               next_attempt_at = now() + CASE WHEN event_id = 'msg_old' THEN interval '0'
                                              ELSE interval '1 hour' END
           WHERE subscription_id = $1::uuid""",
        sub["id"],
    )
    async with running_notifier(services, chans):

        async def settled() -> bool:
            return all(r["state"] == "failed" for r in await deliveries(services, sub["id"]))

        await wait_until(settled, timeout_s=15)
    rows = {r["event_id"]: r for r in await deliveries(services, sub["id"])}
    assert rows["msg_old"]["attempts"] == 4 and "gave up" in rows["msg_old"]["last_error"]
    assert rows["msg_new"]["attempts"] == 4  # retried on its own schedule, then gave up
    assert channel.sent[0] == ["msg_old", "msg_new"]  # one digest, then msg_new alone
    assert channel.sent[1:] == [["msg_new"]] * 3
