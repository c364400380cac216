"""A subscription's custom headers cannot inject header lines nor reframe the request; one saved
before these checks is a failed attempt at send time, not a traceback on every retry."""

from __future__ import annotations

import pytest

from host.errors import ValidationFailed
from host.notify import store
from host.services import Services
from tests.helpers import wait_until
from tests.notify.conftest import (
    Receiver,
    deliveries,
    pending_delivery,
    running_notifier,
    subscribe,
)
from webhooks.outbound.channel import Channel


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-A": "a\r\nX-B: c"}, "X-A"),
        ({"X-A": "trailing\n"}, "X-A"),
        ({"X-A": "nul\x00"}, "X-A"),
        ({"X-Ok": "fine", "Content-Length": "0"}, "Content-Length"),
        ({"transfer-encoding": "chunked"}, "transfer-encoding"),
        ({"HOST": "internal"}, "HOST"),
        ({"Connection": "close"}, "Connection"),
        ({"Content-Type": "text/plain"}, "Content-Type"),
        ({"Webhook-Id": "forged"}, "Webhook-Id"),
        ({"X A": "space in name"}, "X A"),
    ],
)
async def test_unsafe_custom_headers_are_refused_by_name(
    services: Services, channels: dict[str, Channel], headers: dict[str, str], named: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await subscribe(services, channels,
                        destination={"url": "http://127.0.0.1:9/", "headers": headers})  # fmt: skip
    assert "/destination/headers" in str(caught.value) and named in str(caught.value)


async def test_headers_saved_before_the_checks_cannot_break_a_send(
    services: Services, channels: dict[str, Channel], receiver: Receiver
) -> None:
    def saved(name: str, path: str, headers: dict[str, str]) -> dict[str, object]:
        return {"name": name, "events": ["run.succeeded"], "channel": "webhook",
                "destination": {"url": receiver.url(path), "headers": headers}}  # fmt: skip

    crlf = await store.create_subscription(
        services.pool, "default", saved("crlf", "/crlf", {"X-A": "a\r\nX-B: c"})
    )
    framing = await store.create_subscription(
        services.pool, "default",
        saved("framing", "/framing", {"Content-Length": "0", "webhook-id": "forged",
                                      "X-Team": "a"}),
    )  # fmt: skip
    await pending_delivery(services, crlf["id"], "msg_crlf")
    await pending_delivery(services, framing["id"], "msg_framing")
    async with running_notifier(services, channels):

        async def settled() -> bool:
            rows = [*await deliveries(services, crlf["id"]),
                    *await deliveries(services, framing["id"])]  # fmt: skip
            return all(r["state"] != "pending" for r in rows)

        await wait_until(settled, timeout_s=10)
    (bad,) = await deliveries(services, crlf["id"])
    assert bad["state"] == "failed" and bad["attempts"] == 1  # an attempt with an error
    assert "cannot send" in bad["attempt_log"][0]["error"]
    assert receiver.at("/crlf") == []
    (good,) = await deliveries(services, framing["id"])
    assert good["state"] == "succeeded"
    (hit,) = receiver.at("/framing")
    assert hit.headers["webhook-id"] == "msg_framing"  # ours win
    assert int(hit.headers["Content-Length"]) == len(hit.body) > 0
    assert hit.headers["X-Team"] == "a"
