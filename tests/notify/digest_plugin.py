"""A third-party notification channel for the tests, registered through the same hook as the
bundled ones: groups failures of one job type into a digest and records what it sends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from host import hookimpl
from host.config import Settings
from webhooks.outbound.channel import Channel, Delivery, SendResult


class RecordingChannel:
    name = "test.chat"
    destination_schema: Mapping[str, Any] = {
        "type": "object", "required": ["room"], "additionalProperties": False,
        "properties": {"room": {"type": "string", "pattern": "^#"}},
    }  # fmt: skip

    def __init__(self) -> None:
        self.sent: list[list[Delivery]] = []

    def check_destination(self, destination: Mapping[str, Any]) -> None:
        pass

    def digest_key(self, delivery: Delivery) -> str | None:
        if delivery.event_type != "run.failed":
            return None
        return f"failures of {delivery.body['data']['run']['type']}"

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.sent.append(list(deliveries))
        return SendResult(ok=True, status="posted")

    async def aclose(self) -> None:
        pass


CHANNEL = RecordingChannel()


@hookimpl
def jobhost_notification_channels(settings: Settings) -> list[Channel]:
    return [CHANNEL]
