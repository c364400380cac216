"""The webhook channel: one signed HTTP POST per event, per Standard Webhooks.

Headers `webhook-id` (the event id, stable across retries: receivers dedupe on it),
`webhook-timestamp` (seconds, per attempt) and `webhook-signature` ("v1,<base64 HMAC-SHA256 of
id.timestamp.body>" keyed by the subscription's `whsec_` secret), so receivers verify with the
published libraries. Answers, as Svix does: only 2xx succeeds; 410 Gone disables the
subscription; 429 and 503 wait at least their Retry-After; every other answer, a redirect (never
followed) or a connection error or timeout is retried on the schedule. A destination refused by
the SSRF guard is failed at once (no retry: only the allow-list or a new URL can change that).

Registered through `jobhost_notification_channels`, exactly as a third-party channel would be.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver

from host import hookimpl
from host.config import Settings
from host.errors import FieldError, ValidationFailed
from webhooks.inbound.schemes import standard_key
from webhooks.outbound.channel import Channel, Delivery, SendResult
from webhooks.outbound.ssrf import Guard, Refused, parse_allow_list

#: Bytes of the receiver's answer kept in the attempt log.
EXCERPT_BYTES = 512
SECRET_PREFIX = "whsec_"
USER_AGENT = "jobhost-webhooks/1"
#: Longest Retry-After honoured (a receiver cannot park a delivery for weeks).
MAX_RETRY_AFTER_S = 86400.0

#: Header names a subscription may not set (case-insensitive): they frame the request or carry
#: our signature. A `webhook-` prefix is ours too.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type"}
)
RESERVED_PREFIX = "webhook-"

DESTINATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "minLength": 1, "maxLength": 2048},
        "headers": {
            "type": "object",
            "maxProperties": 20,
            # RFC 7230 token names; values without CR, LF or other control characters
            "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"},
            "additionalProperties": {
                "type": "string",
                "maxLength": 1024,
                "pattern": "^[^\\r\\n\\x00-\\x1f\\x7f]*$",
            },
        },
    },
}


def new_secret() -> str:
    """A signing secret: whsec_ and 32 random bytes in base64 (Standard Webhooks' format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value for one message."""
    key = standard_key(secret)  # the verifier's own rule (webhooks.inbound.schemes)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class WebhookChannel:
    """POSTs events with aiohttp; one session per process, opened on first use."""

    name = "webhook"
    destination_schema: Mapping[str, Any] = DESTINATION_SCHEMA

    def __init__(self, settings: Settings, *, resolver: AbstractResolver | None = None) -> None:
        self.timeout_s = settings.notify_timeout_s
        self.guard = Guard(parse_allow_list(settings.notify_allow_cidrs), settings.allow_ports())
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def check_destination(self, destination: Mapping[str, Any]) -> None:
        """The SSRF guard on the URL and on what its name resolves to now (blocking: the API
        calls this in a thread)."""
        check_headers(destination.get("headers") or {})
        self.guard.check_destination_url(str(destination["url"]))

    def digest_key(self, delivery: Delivery) -> str | None:
        return None  # receivers want each event

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        result = SendResult(ok=True)
        for delivery in deliveries:  # one at a time; never more than one without a digest key
            result = await self._send_one(delivery)
            if not result.ok:
                return result
        return result

    async def _send_one(self, delivery: Delivery) -> SendResult:
        url = str(delivery.destination["url"])
        body = orjson.dumps(delivery.body)
        started = time.monotonic()
        try:
            await self._check_resolution(url)
            session = self._open()
            headers = self._headers(delivery, body)
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                excerpt = (await resp.content.read(EXCERPT_BYTES)).decode(errors="replace")
                return self._judge(resp, excerpt, _ms(started))
        except Refused as exc:
            return _refused(exc, started)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, Refused) or "SSRF guard" in str(exc):
                return _refused(exc.os_error, started)
            return SendResult(ok=False, status="connect_error", error=str(exc),
                              latency_ms=_ms(started))  # fmt: skip
        except TimeoutError:
            return SendResult(
                ok=False, status="timeout", latency_ms=_ms(started),
                error=f"no answer within {self.timeout_s:g}s",
            )  # fmt: skip
        except aiohttp.ClientError as exc:
            return SendResult(ok=False, status="error", error=f"{type(exc).__name__}: {exc}",
                              latency_ms=_ms(started))  # fmt: skip
        except ValueError as exc:  # a request aiohttp cannot write (a header saved before checks)
            return SendResult(ok=False, retry=False, status="error", latency_ms=_ms(started),
                              error=f"cannot send: {type(exc).__name__}: {exc}")  # fmt: skip
        except Exception as exc:  # one bad send is a failed attempt, not a traceback per retry
            return SendResult(ok=False, status="error", error=f"{type(exc).__name__}: {exc}",
                              latency_ms=_ms(started))  # fmt: skip

    async def _check_resolution(self, url: str) -> None:
        """Refused before any connection when the URL or a resolved address is refused."""
        parts = self.guard.check_url(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            return  # a literal address: checked by check_url, and again at connect
        except ValueError:
            pass
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if self._resolver is not None:
            answers = await self._resolver.resolve(host, port)
            self.guard.check_addresses(host, [a["host"] for a in answers])
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return  # aiohttp reports the resolution failure as a connection error
        self.guard.check_addresses(host, [str(i[4][0]) for i in infos])

    def _headers(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        extra = delivery.destination.get("headers") or {}
        now = int(time.time())
        headers = {str(k): str(v) for k, v in extra.items() if not _reserved(str(k))}
        headers.update({  # ours last, so they win whatever a subscription saved
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(now),
        })  # fmt: skip
        if delivery.secret:
            headers["webhook-signature"] = sign(delivery.secret, delivery.event_id, now, body)
        return headers

    def _judge(self, resp: aiohttp.ClientResponse, excerpt: str, latency: float) -> SendResult:
        status = resp.status
        common: dict[str, Any] = {"status": str(status), "response_excerpt": excerpt,
                                  "latency_ms": latency}  # fmt: skip
        if 200 <= status < 300:
            return SendResult(ok=True, **common)
        if status == 410:
            return SendResult(
                ok=False,
                retry=False,
                disable=True,
                error="410 Gone: the receiver removed this endpoint",
                **common,
            )
        wait = retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
        where = f" to {resp.headers.get('Location')}" if 300 <= status < 400 else ""
        return SendResult(
            ok=False,
            retry_after_s=wait,
            error=f"HTTP {status}{where} (only 2xx is success)",
            **common,
        )

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=100, resolver=self._resolver, socket_factory=self.guard.socket_factory,
                use_dns_cache=False,
            )  # fmt: skip
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                trust_env=False,  # no proxy from the environment around the guard
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _reserved(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIX)


def check_headers(headers: Mapping[str, Any]) -> None:
    """ValidationFailed (422) naming each custom header that would reframe the request or
    forge our signature headers."""
    errors = []
    for name, value in headers.items():
        where = f"/destination/headers/{name}"
        if _reserved(str(name)):
            errors.append(FieldError(where, f"header {name!r} is reserved and set by jobhost"))
        elif not _TOKEN.fullmatch(str(name)) or _CONTROL.search(str(value)):
            # the schema's patterns, again: a JSON Schema `$` also matches before a final \n
            errors.append(FieldError(where, f"header {name!r}: a token name and a value "
                                            "without control characters (CR, LF...)"))  # fmt: skip
    if errors:
        raise ValidationFailed("destination headers", errors)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _refused(exc: BaseException | None, started: float) -> SendResult:
    return SendResult(ok=False, retry=False, status="refused", latency_ms=_ms(started),
                      error=f"refused by the SSRF guard: {exc}")  # fmt: skip


@hookimpl
def jobhost_notification_channels(settings: Settings) -> list[Channel]:
    return [WebhookChannel(settings)]
