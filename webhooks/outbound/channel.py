"""The contract between the notifier and a notification channel (webhook, email, a plugin's own).

The notifier owns everything durable: it claims due deliveries from the outbox, calls a channel's
`send`, records the attempt and schedules the retry. A channel only turns deliveries into one
message at its destination and says how that went, so a third-party channel (a chat service, say)
gets retries, the attempt log, endpoint disabling and digests without writing any of them.

Channels come from the `jobhost_notification_channels` hook; the bundled ones are registered
through that same hook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Delivery:
    """One event to one subscription, as the notifier hands it to a channel."""

    id: str  #: the outbox row's id
    event_id: str  #: stable across retries (webhook-id); receivers dedupe on it
    event_type: str  #: "run.succeeded", "run.failed" or "run.dead"
    body: Mapping[str, Any]  #: the event: type, id, timestamp, data.run, data.job
    destination: Mapping[str, Any]  #: the subscription's destination, valid per the channel
    secret: str | None  #: the subscription's signing secret, if the channel signs
    subscription_id: str
    attempt: int  #: 1 for the first try


@dataclass(frozen=True)
class SendResult:
    """How one send went. `ok` is final success; otherwise `retry` says whether to try again."""

    ok: bool
    retry: bool = True  #: False: a permanent failure (SMTP 5xx, HTTP 4xx but 429/408/410)
    retry_after_s: float | None = None  #: the destination asked for this wait (Retry-After)
    disable: bool = False  #: the destination is gone for good (HTTP 410): disable it
    status: str | None = None  #: "200", "550", "refused"... for the attempt log
    error: str | None = None  #: what went wrong, for the attempt log and the dashboard
    response_excerpt: str | None = None  #: the first bytes of the answer
    latency_ms: float | None = None


@runtime_checkable
class Channel(Protocol):
    """A way to deliver notifications. One instance per process, shared by concurrent sends."""

    #: The `channel` value of subscriptions it serves, e.g. "webhook", "email".
    name: str
    #: JSON Schema of a subscription's `destination` for this channel; checked when the
    #: subscription is created or changed, so a bad address is a 422 then, not a failed send later.
    destination_schema: Mapping[str, Any]

    def check_destination(self, destination: Mapping[str, Any]) -> None:
        """Reject a destination the schema cannot judge (an SSRF target, a bad address).

        Raises `host.errors.ValidationFailed` (the API's 422) with a FieldError per problem,
        each path under `/destination`.
        """

    def digest_key(self, delivery: Delivery) -> str | None:
        """Deliveries with the same key within the digest window go out as one message.

        None: send this one alone. Email groups failures of one job so a failing job does not
        cause an alert storm; webhooks return None (receivers want each event).
        """

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        """Deliver one message for `deliveries` (more than one only for a digest).

        Must not raise for a delivery failure: return SendResult(ok=False, ...) instead. The
        notifier bounds the whole call by its own timeout as well.
        """

    async def aclose(self) -> None:
        """Release connections; called once when the notifier stops."""
