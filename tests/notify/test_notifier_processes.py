"""`jobhost notifier` as processes: a notifier SIGKILLed mid-send loses nothing (a second one
takes its claims over once their lease expires), and plugins.toml subscriptions sync at start;
`jobhost subscriptions` manages them from the command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from host.client import Client
from host.definitions import JobDefinitions
from host.notify import store
from host.services import Services
from tests.helpers import ROOT, jobhost, running_worker, stop, wait_until
from tests.notify.conftest import Hit, Receiver, deliveries, subscribe
from webhooks.outbound.channel import Channel

RUNS = 12


def notifier_env(worker_env: dict[str, str]) -> dict[str, str]:
    return worker_env | {
        "JOBHOST_NOTIFY_ALLOW_CIDRS": "127.0.0.1/32", "JOBHOST_NOTIFY_ALLOW_PORTS": "*",
        "JOBHOST_NOTIFY_TIMEOUT_S": "1", "JOBHOST_NOTIFY_LEASE_S": "7.5",
        "JOBHOST_NOTIFY_POLL_S": "0.1",
        "JOBHOST_NOTIFY_SCHEDULE": "0.3,0.3,0.3", "JOBHOST_NOTIFY_CONCURRENCY": "4",
    }  # fmt: skip


@pytest.mark.slow
async def test_no_event_missing_across_a_notifier_sigkill(
    services: Services, channels: dict[str, Channel], receiver: Receiver,
    worker_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_first(hit: Hit, n: int) -> web.StreamResponse:
        if n == 0:
            held.set()
            await release.wait()  # never answers the first: its sender is killed meanwhile
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    sub = await subscribe(services, channels, events=["run.succeeded"],
                          destination={"url": receiver.on("/hook", hold_first)})  # fmt: skip
    client = Client(services)
    async with running_worker(services):  # the outbox fills; no notifier yet
        runs = [await client.enqueue("noop", {}) for _ in range(RUNS)]
        for run in runs:
            await client.wait(run.id, 20)
    env = notifier_env(worker_env)
    first = jobhost("notifier", cwd=tmp_path, env=env)
    second = None
    try:
        await asyncio.wait_for(held.wait(), 30)
        await asyncio.sleep(0.2)  # let it have a few more sends in flight
        stop(first, signal.SIGKILL, timeout=10)
        second = jobhost("notifier", cwd=tmp_path, env=env)

        async def all_delivered() -> bool:
            rows = await deliveries(services, sub["id"])
            return len(rows) == RUNS and all(r["state"] == "succeeded" for r in rows)

        await wait_until(all_delivered, timeout_s=30)
    finally:
        release.set()
        if second is not None:
            stop(second)
        if first.returncode is None:
            stop(first, signal.SIGKILL, timeout=10)
    received = Counter(h.headers["webhook-id"] for h in receiver.at("/hook"))
    rows = await deliveries(services, sub["id"])
    assert set(received) == {r["event_id"] for r in rows}  # none missing
    assert {r["body"]["data"]["run"]["id"] for r in rows} == {r.id for r in runs}
    duplicates = sum(received.values()) - len(received)
    assert duplicates >= 1  # the held one was sent again, with the same webhook-id
    print(f"\nSIGKILL mid-send: {len(received)} events, {duplicates} duplicate deliveries")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", "--json", *args], cwd=ROOT, capture_output=True,
        text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=60,
    )  # fmt: skip


async def test_config_subscriptions_sync_and_the_cli(
    services: Services, receiver: Receiver, worker_env: dict[str, str], tmp_path: Path
) -> None:
    import os

    env = {**os.environ, **notifier_env(worker_env)}
    _add_subscription(Path(worker_env["JOBHOST_PLUGINS_FILE"]), receiver.url("/ops"))
    notifier = jobhost("notifier", cwd=tmp_path, env=env)
    try:

        async def synced() -> bool:
            return bool(await store.list_subscriptions(services.pool, "default"))

        await wait_until(synced)
        async with running_worker(services):
            run = await Client(services).enqueue("noop", {})
            await Client(services).wait(run.id, 20)
            await wait_until(lambda: _hit(receiver, "/ops"))
    finally:
        stop(notifier)
    listed = cli(env, "subscriptions", "list")
    assert listed.returncode == 0, listed.stderr
    (ops,) = json.loads(listed.stdout)["subscriptions"]
    assert ops["name"] == "ops" and ops["source"] == "config"
    assert ops["counts"]["succeeded"] == 1
    job = await JobDefinitions(services).create("nightly", "noop", {})
    made = cli(env, "subscriptions", "create", "cli-hook", "--url", receiver.url("/cli"),
               "--event", "run.dead", "--job", "nightly")  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["secret"].startswith("whsec_") and created["events"] == ["run.dead"]
    assert created["job_ids"] == [job.id]  # a job's own notifications: filtered to it
    refused = cli({**env, "JOBHOST_NOTIFY_ALLOW_CIDRS": ""}, "subscriptions", "create", "x",
                  "--url", "http://127.0.0.1:9/")  # fmt: skip
    assert refused.returncode == 1 and "/destination/url" in refused.stderr
    off = cli(env, "subscriptions", "disable", created["id"])
    assert json.loads(off.stdout)["enabled"] is False
    log = cli(env, "subscriptions", "deliveries", ops["id"])
    (delivery,) = json.loads(log.stdout)["deliveries"]
    assert delivery["attempt_log"][0]["status"] == "200"
    again = cli(env, "subscriptions", "redeliver", delivery["id"])
    assert again.returncode == 0 and json.loads(again.stdout)["state"] == "pending"
    gone = cli(env, "subscriptions", "delete", created["id"])
    assert gone.returncode == 0
    missing = cli(env, "subscriptions", "show", created["id"])
    assert missing.returncode == 1 and "not found" in missing.stderr


def _add_subscription(plugins: Path, url: str) -> None:
    """A [[subscriptions]] table in plugins.toml."""
    plugins.write_text(
        plugins.read_text() + '\n[[subscriptions]]\nname = "ops"\nchannel = "webhook"\n'
        f'events = ["run.succeeded"]\ndestination = {{ url = "{url}" }}\n'
    )


async def _hit(receiver: Receiver, path: str) -> bool:
    return bool(receiver.at(path))
