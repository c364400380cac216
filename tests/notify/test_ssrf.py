"""The SSRF guard (fault matrix O1): refused at subscription time and at connect time, recorded
as refused, and a canary listener on loopback gets zero hits from refused deliveries."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from host.client import Client
from host.config import Settings
from host.errors import ConfigError, ValidationFailed
from host.notify import store
from host.notify.channels import close_channels, load_channels
from host.services import Services
from tests.helpers import running_worker, wait_until
from tests.notify.conftest import (
    Hit,
    Receiver,
    deliveries,
    pending_delivery,
    running_notifier,
    subscribe,
)
from webhooks.outbound.channel import Channel
from webhooks.outbound.ssrf import Guard, parse_allow_list
from webhooks.outbound.webhook import WebhookChannel

#: Fault matrix O1's targets; each must be refused without an allow-list.
REFUSED = [
    "http://127.0.0.1/", "http://localhost:8080/", "http://0.0.0.0/", "http://[::1]/",
    "http://127.1/", "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/",
    "http://169.254.169.254/latest/meta-data/", "http://169.254.170.2/v2/credentials",
    "http://metadata.google.internal/computeMetadata/v1/", "http://10.1.2.3/",
    "http://172.16.0.1/", "http://192.168.1.1/", "http://100.64.0.1/", "http://[fc00::1]/",
    "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://[2002:7f00:1::]/",
    "http://[64:ff9b::7f00:1]/", "http://[fd00:ec2::254]/", "http://224.0.0.1/",
    "file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/", "http://:80/",
    "http://[fec0::1]/", "http://[::ffff:10.0.0.1]:443/",  # site-local; mapped private
    "http://93.184.216.34:22/", "http://93.184.216.34:6379/", "https://93.184.216.34:25/",
    "http://93.184.216.34:0/",  # disallowed ports of a public address
]  # fmt: skip


@pytest.mark.parametrize("url", REFUSED)
def test_refused_at_subscription_time(url: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        Guard().check_destination_url(url)
    assert info.value.errors[0].path == "/destination/url"


def test_allow_list_admits_only_its_cidrs() -> None:
    guard = Guard(parse_allow_list("127.0.0.1/32"), ports=None)
    guard.check_destination_url("http://127.0.0.1:9/")
    guard.check_destination_url("http://[::ffff:127.0.0.1]:9/")  # the same address
    assert guard.refusal("127.0.0.2") == "127.0.0.2 is loopback"
    assert guard.refusal("93.184.216.34") is None  # a public address needs no allow-list


def test_port_policy_is_configurable() -> None:
    Guard().check_destination_url("http://93.184.216.34/")  # 80
    Guard().check_destination_url("https://93.184.216.34:8443/")
    with pytest.raises(ValidationFailed, match="port 6379 is not allowed"):
        Guard().check_destination_url("http://93.184.216.34:6379/")
    with pytest.raises(ValidationFailed, match="port 443 is not allowed"):
        Guard(ports={80}).check_destination_url("https://93.184.216.34/")  # the scheme's port
    assert Settings.from_env({}).allow_ports() == {80, 443, 8080, 8443}
    anywhere = Settings.from_env({"JOBHOST_NOTIFY_ALLOW_PORTS": "*"})
    Guard(ports=anywhere.allow_ports()).check_destination_url("http://93.184.216.34:6379/")
    for bad in ("80,http", "0", "70000", "*,80"):
        with pytest.raises(ConfigError, match="JOBHOST_NOTIFY_ALLOW_PORTS"):
            Settings.from_env({"JOBHOST_NOTIFY_ALLOW_PORTS": bad})


async def test_a_saved_url_on_a_disallowed_port_is_refused_at_send(
    services: Services, receiver: Receiver
) -> None:
    # Allow-listed address, but its port is not in notify_allow_ports (as if the setting
    # changed since the subscription was saved): refused, never retried, and no hit.
    only_web = replace(services.settings, notify_allow_ports="80,443")
    channel = WebhookChannel(only_web)
    sub = await store.create_subscription(services.pool, "default", {
        "name": "port", "events": ["run.succeeded"], "channel": "webhook",
        "destination": {"url": receiver.url("/canary")}, "secret": None,
    })  # fmt: skip
    await pending_delivery(services, sub["id"], "msg_port")
    try:
        async with running_notifier(services, {"webhook": channel}):

            async def settled() -> bool:
                (row,) = await deliveries(services, sub["id"])
                return bool(row["state"] != "pending")

            await wait_until(settled, timeout_s=10)
    finally:
        await channel.aclose()
    (row,) = await deliveries(services, sub["id"])
    assert row["state"] == "failed" and [a["status"] for a in row["attempt_log"]] == ["refused"]
    assert "is not allowed (JOBHOST_NOTIFY_ALLOW_PORTS: 80,443)" in row["last_error"]
    assert receiver.hits == []


async def test_api_refuses_and_names_the_field(
    services: Services, channels: dict[str, Channel]
) -> None:
    no_allow = load_channels(services.registry, replace(services.settings, notify_allow_cidrs=""))
    try:
        for url in ("http://localhost:1/", "http://169.254.169.254/"):
            with pytest.raises(ValidationFailed, match="SSRF") as caught:
                await subscribe(services, no_allow, destination={"url": url})
            assert [e.path for e in caught.value.errors] == ["/destination/url"]
    finally:
        await close_channels(no_allow)


class Rebinding(AbstractResolver):
    """A DNS whose rebind.test answers a public address first and 127.0.0.1 afterwards (other
    names resolve as usual)."""

    def __init__(self) -> None:
        self.calls = 0
        self.system = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != "rebind.test":
            return await self.system.resolve(host, port, family)
        self.calls += 1
        address = "93.184.216.34" if self.calls == 1 else "127.0.0.1"
        return [ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]  # fmt: skip

    async def close(self) -> None:
        pass


async def test_refused_at_connect_time_and_canary_gets_nothing(
    services: Services, receiver: Receiver
) -> None:
    canary = receiver  # every hit on it is a guard failure
    guarded = replace(services.settings, notify_allow_cidrs="")
    port = canary.server.port if canary.server else 0

    # Saved directly (as if the allow-list changed since, or DNS did): connect time must refuse.
    targets = {
        "literal": f"http://127.0.0.1:{port}/canary",
        "name": f"http://localhost:{port}/canary",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}/canary",
        "rebind": f"http://rebind.test:{port}/canary",
    }
    subs = {}
    for name, url in targets.items():
        subs[name] = await store.create_subscription(services.pool, "default", {
            "name": name, "events": ["run.succeeded"], "channel": "webhook",
            "destination": {"url": url}, "secret": None,
        })  # fmt: skip
    resolver = Rebinding()
    rebinding = WebhookChannel(guarded, resolver=resolver)
    services.settings = guarded
    try:
        async with running_worker(services), running_notifier(services, {"webhook": rebinding}):
            run = await Client(services).enqueue("noop", {})
            await Client(services).wait(run.id, 20)

            async def settled() -> bool:
                for sub in subs.values():
                    rows = await deliveries(services, sub["id"])
                    if not rows or rows[0]["state"] == "pending":
                        return False
                return True

            await wait_until(settled)
    finally:
        await rebinding.aclose()
    for name, sub in subs.items():
        (row,) = await deliveries(services, sub["id"])
        assert row["state"] == "failed", name
        assert [a["status"] for a in row["attempt_log"]] == ["refused"], name  # no retry
        assert "SSRF guard" in row["last_error"], name
    assert resolver.calls >= 2  # passed the first look, refused at connect:
    (rebound,) = await deliveries(services, subs["rebind"]["id"])
    assert "connection refused by the SSRF guard: 127.0.0.1 is loopback" in rebound["last_error"]
    assert canary.hits == []


async def test_redirects_are_not_followed(
    services: Services, channels: dict[str, Channel], receiver: Receiver
) -> None:
    async def redirect(hit: Hit, n: int) -> web.StreamResponse:
        raise web.HTTPFound(receiver.url("/canary"))  # allowed by the allow-list if followed

    sub = await subscribe(
        services,
        channels,
        events=["run.succeeded"],
        destination={"url": receiver.on("/redirect", redirect)},
    )
    async with running_worker(services), running_notifier(services, channels):
        run = await Client(services).enqueue("noop", {})
        await Client(services).wait(run.id, 20)

        async def tried() -> bool:
            rows = await deliveries(services, sub["id"])
            return bool(rows) and rows[0]["attempts"] >= 1

        await wait_until(tried)
    (row,) = await deliveries(services, sub["id"])
    assert row["attempt_log"][0]["status"] == "302" and not row["attempt_log"][0]["ok"]
    assert "HTTP 302 to " in row["attempt_log"][0]["error"]
    assert receiver.at("/canary") == []
