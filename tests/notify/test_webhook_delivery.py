"""Webhooks end to end: runs finish in a real worker, the outbox row is written with the state
change, the notifier signs and sends, a loopback receiver verifies with `standardwebhooks`."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from host.client import Client
from host.notify import store
from host.notify.cli import cmd_list
from host.services import Services
from tests.helpers import running_worker, wait_until
from tests.notify.conftest import (
    Hit,
    Receiver,
    deliveries,
    running_notifier,
    start_receiver,
    statuses,
    subscribe,
)
from webhooks.outbound.channel import Channel


def verified(hits: list[Hit], secret: str) -> list[dict[str, Any]]:
    """Every hit's event, verified as a receiver would (raises on a bad signature)."""
    wh = Webhook(secret)
    return [wh.verify(h.body, {k.lower(): v for k, v in h.headers.items()}) for h in hits]


async def test_each_event_arrives_signed_exactly_as_subscribed(
    services: Services, channels: dict[str, Channel], receiver: Receiver
) -> None:
    ok = await subscribe(services, channels, destination={"url": receiver.url("/ok")},
                         events=["run.succeeded"], job_types=["noop"])  # fmt: skip
    bad = await subscribe(
        services, channels, destination={"url": receiver.url("/bad"), "headers": {"X-Team": "a"}},
        events=["run.failed", "run.dead"],
    )  # fmt: skip
    client = Client(services)
    async with running_notifier(services, channels), running_worker(services):
        good = await client.enqueue("noop", {})
        other = await client.enqueue("test.record", {})
        failing = await client.enqueue("test.fail", {})
        permanent = await client.enqueue("test.permanent", {})
        for run in (good, other, failing, permanent):
            await client.wait(run.id, 20)
        await wait_until(_has(receiver, {"/ok": 1, "/bad": 6}))
    ok_events = verified(receiver.at("/ok"), ok["secret"])
    assert [(e["type"], e["data"]["run"]["id"]) for e in ok_events] == [("run.succeeded", good.id)]
    assert ok_events[0]["data"]["run"]["state"] == "succeeded"
    assert ok_events[0]["data"]["run"]["type"] == "noop"
    bad_events = verified(receiver.at("/bad"), bad["secret"])
    assert all(h.headers["X-Team"] == "a" for h in receiver.at("/bad"))
    by_run: dict[str, list[tuple[str, int, bool]]] = {}
    for e in bad_events:
        run = e["data"]["run"]
        by_run.setdefault(run["id"], []).append((e["type"], run["attempt"], run["will_retry"]))
    assert sorted(by_run[failing.id]) == [
        ("run.dead", 3, False), ("run.failed", 1, True), ("run.failed", 2, True),
        ("run.failed", 3, False),
    ]  # fmt: skip
    assert sorted(by_run[permanent.id]) == [("run.dead", 1, False), ("run.failed", 1, False)]
    assert set(by_run) == {failing.id, permanent.id}
    dead = next(
        e for e in bad_events if e["type"] == "run.dead" and e["data"]["run"]["id"] == failing.id
    )
    assert dead["data"]["run"]["state"] == "dead" and dead["data"]["run"]["error"]
    ids = [h.headers["webhook-id"] for h in receiver.hits]
    assert len(ids) == len(set(ids)) == 7  # one message per event, no duplicates
    rows = await deliveries(services, bad["id"])
    assert {r["state"] for r in rows} == {"succeeded"} and len(rows) == 6


def _has(receiver: Receiver, counts: dict[str, int]) -> Any:
    async def check() -> bool:
        return all(len(receiver.at(path)) >= n for path, n in counts.items())

    return check


async def test_down_failing_and_slow_receivers_get_it_after_retries(
    services: Services, channels: dict[str, Channel], receiver: Receiver
) -> None:
    from host.embedded import free_port

    down_port = free_port()  # nothing listens yet: connection refused

    async def slow_first(hit: Hit, n: int) -> web.StreamResponse:
        if n == 0:
            import asyncio

            await asyncio.sleep(1.5)  # past notify_timeout_s = 1
        return web.Response(text="ok")

    subs = {
        "down": await subscribe(services, channels, events=["run.succeeded"],
                                destination={"url": f"http://127.0.0.1:{down_port}/down"}),
        "500": await subscribe(services, channels, events=["run.succeeded"],
                               destination={"url": receiver.on("/500", statuses(500, 500))}),
        "slow": await subscribe(services, channels, events=["run.succeeded"],
                                destination={"url": receiver.on("/slow", slow_first)}),
    }  # fmt: skip
    client = Client(services)
    came_back: Receiver | None = None
    try:
        async with running_notifier(services, channels), running_worker(services):
            run = await client.enqueue("noop", {})
            await client.wait(run.id, 20)

            async def down_tried_twice() -> bool:
                rows = await deliveries(services, subs["down"]["id"])
                return bool(rows) and rows[0]["attempts"] >= 2

            await wait_until(down_tried_twice)
            came_back = await start_receiver(down_port)

            async def all_done() -> bool:
                for sub in subs.values():
                    rows = await deliveries(services, sub["id"])
                    if not rows or rows[0]["state"] != "succeeded":
                        return False
                return True

            await wait_until(all_done)
    finally:
        if came_back is not None and came_back.server is not None:
            await came_back.server.close()
    logs = {
        name: (await deliveries(services, s["id"]))[0]["attempt_log"] for name, s in subs.items()
    }
    assert [a["status"] for a in logs["500"]] == ["500", "500", "200"]
    assert [a["status"] for a in logs["slow"]] == ["timeout", "200"]
    assert [a["status"] for a in logs["down"]][:2] == ["connect_error", "connect_error"]
    assert logs["down"][-1]["status"] == "200" and all(not a["ok"] for a in logs["down"][:-1])
    for log in logs.values():  # retries wait for the schedule (0.3 s, no jitter in tests)
        times = [_ts(a["at"]) for a in log]
        assert all(b - a >= 0.29 for a, b in itertools.pairwise(times))
    assert came_back is not None and len(came_back.at("/down")) == 1
    assert len({h.headers["webhook-id"] for h in receiver.at("/500")}) == 1  # same id each try


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def test_exhausted_delivery_fails_streak_disables_reenable_and_redeliver(
    services: Services, channels: dict[str, Channel], receiver: Receiver
) -> None:
    from dataclasses import replace

    services.settings = replace(services.settings, notify_disable_after=2)
    url = receiver.on("/flaky", statuses(*([500] * 8)))
    sub = await subscribe(services, channels, events=["run.succeeded"],
                          destination={"url": url})  # fmt: skip
    client = Client(services)
    async with running_notifier(services, channels), running_worker(services):
        first = await client.enqueue("noop", {})
        await client.wait(first.id, 20)

        async def failed(n: int) -> Any:
            async def check() -> bool:
                rows = await deliveries(services, sub["id"])
                return sum(r["state"] == "failed" for r in rows) >= n

            return check

        await wait_until(await failed(1))
        rows = await deliveries(services, sub["id"])
        assert rows[0]["attempts"] == 4 and rows[0]["state"] == "failed"
        assert "gave up after 4 attempts" in rows[0]["last_error"]
        current = await store.get_subscription(services.pool, "default", sub["id"])
        assert current["enabled"] and current["failure_streak"] == 1
        second = await client.enqueue("noop", {})
        await client.wait(second.id, 20)
        await wait_until(await failed(2))
        current = await store.get_subscription(services.pool, "default", sub["id"])
        assert not current["enabled"]
        assert "2 deliveries failed in a row" in current["disabled_reason"]
        assert current["times_disabled"] == 1 and current["disabled_at"] is not None
        third = await client.enqueue("noop", {})
        await client.wait(third.id, 20)
        assert len(await deliveries(services, sub["id"])) == 2  # disabled: no new deliveries
        # Fixed receiver, re-enabled subscription, a manual redelivery: it arrives.
        receiver.behaviours["/flaky"] = statuses()
        await store.update_subscription(services.pool, "default", sub["id"], {"enabled": True})
        await store.redeliver(services.pool, "default", rows[0]["id"])

        async def redelivered() -> bool:
            rows = await deliveries(services, sub["id"])
            return any(r["state"] == "succeeded" for r in rows)

        await wait_until(redelivered)
    rows = await deliveries(services, sub["id"])
    again = next(r for r in rows if r["state"] == "succeeded")
    assert again["attempts"] == 5 and again["attempt_log"][-1]["status"] == "200"
    ids = [h.headers["webhook-id"] for h in receiver.at("/flaky")]
    assert ids.count(again["event_id"]) == 5  # the same event id on every try
    current = await store.get_subscription(services.pool, "default", sub["id"])
    assert current["enabled"] and current["failure_streak"] == 0
    assert current["disabled_at"] is None and current["times_disabled"] == 1  # the history stays


async def test_gone_disables_with_an_owner_notice_and_retry_after_is_honoured(
    services: Services,
    channels: dict[str, Channel],
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gone = await subscribe(
        services,
        channels,
        name="team-a-hook",
        events=["run.succeeded"],
        destination={"url": receiver.on("/gone", statuses(410))},
    )
    busy = await subscribe(
        services, channels, events=["run.succeeded"],
        destination={"url": receiver.on("/busy", statuses(429, headers={"Retry-After": "1"}))},
    )  # fmt: skip
    client = Client(services)
    async with running_notifier(services, channels), running_worker(services):
        run = await client.enqueue("noop", {})
        await client.wait(run.id, 20)

        async def settled() -> bool:
            a = await deliveries(services, gone["id"])
            b = await deliveries(services, busy["id"])
            return bool(a and b) and a[0]["state"] == "failed" and b[0]["state"] == "succeeded"

        await wait_until(settled)
    sub = await store.get_subscription(services.pool, "default", gone["id"])
    assert not sub["enabled"] and "410" in sub["disabled_reason"]
    assert sub["times_disabled"] == 1 and sub["disabled_at"] is not None
    [notice] = [r for r in caplog.records if getattr(r, "subscription_id", None) == gone["id"]]
    assert notice.levelno == logging.WARNING and notice.name == "jobhost.notifier"
    assert notice.__dict__["subscription"] == "team-a-hook" and "410" in notice.getMessage()
    assert "disabled" in notice.getMessage() and notice.__dict__["tenant"] == "default"
    capsys.readouterr()
    await cmd_list(argparse.Namespace(json=False), services.settings)
    listed = capsys.readouterr().out.splitlines()
    [line] = [x for x in listed if x.startswith(gone["id"])]
    assert "DISABLED (the destination asked to stop" in line and "disabled 1x" in line
    [busy_line] = [x for x in listed if x.startswith(busy["id"])]
    assert "enabled" in busy_line and "DISABLED" not in busy_line
    assert len(receiver.at("/gone")) == 1  # no retry after 410
    hits = receiver.at("/busy")
    assert len(hits) == 2 and hits[1].at - hits[0].at >= 0.95  # waited Retry-After, not 0.3 s
    body = json.loads(hits[1].body)
    assert body["type"] == "run.succeeded" and body["id"] == hits[1].headers["webhook-id"]


async def test_a_slow_endpoint_does_not_take_every_send(
    services: Services, channels: dict[str, Channel], receiver: Receiver
) -> None:
    import asyncio
    from dataclasses import replace

    services.settings = replace(services.settings, notify_per_endpoint=2, notify_concurrency=4)
    now, most = 0, 0

    async def slow(hit: Hit, n: int) -> web.StreamResponse:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.5)
        now -= 1
        return web.Response(text="ok")

    slow_sub = await subscribe(
        services,
        channels,
        events=["run.succeeded"],
        destination={"url": receiver.on("/slow", slow)},
    )
    fast_sub = await subscribe(services, channels, events=["run.succeeded"],
                               destination={"url": receiver.url("/fast")})  # fmt: skip
    client = Client(services)
    async with running_worker(services):  # the outbox fills first
        runs = [await client.enqueue("noop", {}) for _ in range(6)]
        for run in runs:
            await client.wait(run.id, 20)
    async with running_notifier(services, channels):
        await wait_until(_has(receiver, {"/slow": 6, "/fast": 6}))
    assert most == 2  # never more than notify_per_endpoint at the slow receiver
    fast_done = max(h.at for h in receiver.at("/fast"))
    assert fast_done < sorted(h.at for h in receiver.at("/slow"))[4]  # not queued behind it
    for sub in (slow_sub, fast_sub):
        assert all(r["state"] == "succeeded" for r in await deliveries(services, sub["id"]))
