"""The notifier's claims against an admin's redelivery and a concurrent subscription delete:
a send in flight keeps its lease, and no pending delivery outlives its subscription."""

from __future__ import annotations

from typing import Any

import pytest

from host.config import NOTIFY_LEASE_MARGIN_S, NOTIFY_SEND_GRACE_S, Settings
from host.errors import ConfigError
from host.notify import store
from host.notify.store import Outcome
from host.scheduler.leader import Term
from host.services import Services
from tests.notify.conftest import deliveries, pending_delivery, subscribe
from webhooks.outbound.channel import Channel

URL = "http://127.0.0.1:9/"


def _ok() -> Outcome:
    return Outcome(ok=True, state="succeeded", next_in_s=0, status="200", error=None,
                   excerpt="ok", latency_ms=1.0, disable_reason=None)  # fmt: skip


async def test_redeliver_leaves_a_send_in_flight_to_finish_then_goes_again(
    services: Services, channels: dict[str, Channel]
) -> None:
    sub = await subscribe(services, channels, destination={"url": URL})
    await pending_delivery(services, sub["id"], "msg_inflight")
    (a,) = await store.claim_due(services.pool, 10, 60.0, 5)  # notifier A is sending
    await store.redeliver(services.pool, "default", a.id)  # the admin asks again meanwhile
    assert await store.claim_due(services.pool, 10, 60.0, 5) == []  # B may not send it too
    async with services.pool.acquire() as conn:
        kept, _ = await store.record_attempt(conn, a, _ok(), notifier="A", disable_after=0)
    assert kept  # A's answer is recorded, not fenced away
    (row,) = await deliveries(services, sub["id"])
    assert row["state"] == "pending" and row["attempts"] == 1  # the redelivery follows
    assert [x["ok"] for x in row["attempt_log"]] == [True]
    (again,) = await store.claim_due(services.pool, 10, 60.0, 5)
    assert again.id == a.id and again.attempts == again.retry_base == 1  # a fresh schedule
    async with services.pool.acquire() as conn:
        kept, _ = await store.record_attempt(conn, again, _ok(), notifier="B", disable_after=0)
    assert kept
    (row,) = await deliveries(services, sub["id"])
    assert row["state"] == "succeeded" and row["attempts"] == 2


async def test_redeliver_of_an_idle_delivery_is_due_at_once(
    services: Services, channels: dict[str, Channel]
) -> None:
    sub = await subscribe(services, channels, destination={"url": URL})
    await pending_delivery(services, sub["id"], "msg_done")
    (a,) = await store.claim_due(services.pool, 10, 60.0, 5)
    async with services.pool.acquire() as conn:
        await store.record_attempt(conn, a, _ok(), notifier="A", disable_after=0)
    again: dict[str, Any] = await store.redeliver(services.pool, "default", a.id)
    assert again["state"] == "pending"
    (b,) = await store.claim_due(services.pool, 10, 60.0, 5)
    assert b.id == a.id and b.retry_base == b.attempts == 1


def test_the_lease_must_outlast_the_longest_send() -> None:
    # A send may run notify_timeout_s + NOTIFY_SEND_GRACE_S; a lease shorter than that (plus a
    # margin) would let another notifier take a send still running.
    longest = 10 + NOTIFY_SEND_GRACE_S + NOTIFY_LEASE_MARGIN_S
    env = {"JOBHOST_NOTIFY_TIMEOUT_S": "10"}
    for lease in (11, longest):
        with pytest.raises(ConfigError, match=r"JOBHOST_NOTIFY_LEASE_S.*JOBHOST_NOTIFY_TIMEOUT_S"):
            Settings.from_env({**env, "JOBHOST_NOTIFY_LEASE_S": f"{lease:g}"})
    ok = Settings.from_env({**env, "JOBHOST_NOTIFY_LEASE_S": f"{longest + 0.5:g}"})
    assert ok.notify_lease_s == longest + 0.5


async def test_retention_prunes_pending_deliveries_of_a_deleted_subscription(
    services: Services, channels: dict[str, Channel]
) -> None:
    from host.scheduler import retention

    gone = await subscribe(services, channels, destination={"url": URL})
    kept = await subscribe(services, channels, destination={"url": URL})
    await pending_delivery(services, gone["id"], "msg_orphan")
    await pending_delivery(services, kept["id"], "msg_kept")
    # What a delete racing the outbox trigger leaves: the subscription without its delivery.
    await services.pool.execute("DELETE FROM subscriptions WHERE id = $1::uuid", gone["id"])
    term = Term("me", 1)
    await retention.prune(services.pool, services.settings.namespace, term, 0)  # 0 days: any
    left = await services.pool.fetch("SELECT event_id, state FROM deliveries ORDER BY event_id")
    assert [(r["event_id"], r["state"]) for r in left] == [("msg_kept", "pending")]
