"""The bundled email channel: run events as plain-text emails through an SMTP relay (aiosmtplib).

The notifier owns retries and the attempt log (webhooks/outbound/channel.py); this module turns
deliveries into one message and says how the SMTP conversation went. Failures of one job are
grouped by `digest_key`, so a job failing every minute sends one digest per window, not a storm.

Safety: destinations are checked when a subscription is saved (bare addresses only, known
template placeholders only; templates: webhooks/outbound/templates.py), and the rendered subject
is made one line, so neither a template nor a run's error text can add a header or a recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from typing import Any, cast

import aiosmtplib

from host import hookimpl
from host.config import Settings
from host.errors import FieldError, ValidationFailed
from host.schemas import compile_validator, payload_errors
from webhooks.outbound.channel import Channel, Delivery, SendResult
from webhooks.outbound.templates import (
    defaults,
    one_line,
    render,
    render_digest,
    template_problems,
    template_values,
)

FAILURES = frozenset({"run.failed", "run.dead"})  #: the events a digest groups
MAX_RECIPIENTS = 50  #: to + cc, per subscription
_DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
#: RFC 5322's hard line limit: the stdlib folds some 78+ character subjects right after
#: "Subject:", which readers show as a leading space; subjects are capped at SUBJECT_LIMIT anyway.
_POLICY = SMTP_POLICY.clone(max_line_length=998)

# ---------------------------------------------------------------------------------------------
# Destination
# ---------------------------------------------------------------------------------------------

_ADDRESS_LIST = {
    "type": "array",
    "items": {"type": "string", "minLength": 3, "maxLength": 254},
    "maxItems": MAX_RECIPIENTS,
}

DESTINATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to"],
    "additionalProperties": False,
    "properties": {
        "to": {**_ADDRESS_LIST, "minItems": 1, "description": "recipients (bare addresses)"},
        "cc": {**_ADDRESS_LIST, "description": "copied recipients"},
        "subject": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "subject template, e.g. '{job.label} {event.type}'",
        },
        "body": {"type": "string", "minLength": 1, "maxLength": 20000},
    },
}

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")


def address_problem(address: str) -> str | None:
    """Why `address` is not a bare ASCII mailbox (user@example.com), or None if it is one.

    Display names, comments, lists and non-ASCII are refused: an address goes into the To/Cc
    headers and the RCPT command as it is, so anything looser could smuggle in a header.
    """
    if not _ADDRESS.fullmatch(address):
        return f"{address!r} is not an email address like user@example.com"
    if len(address.partition("@")[0]) > 64:
        return f"{address!r} has a local part longer than 64 characters"
    return None


# ---------------------------------------------------------------------------------------------
# The channel
# ---------------------------------------------------------------------------------------------


class EmailChannel:
    """Email notifications through one SMTP relay; a new connection per message."""

    name = "email"
    destination_schema: Mapping[str, Any] = DESTINATION_SCHEMA

    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        """`tls_context` replaces the system trust store (a private CA, or a test's)."""
        self.settings = settings
        self._tls_context = tls_context
        self._validator = compile_validator(DESTINATION_SCHEMA, plugin="email", file=__file__)
        self._sender = parseaddr(settings.smtp_from)[1]
        self._domain = self._sender.rpartition("@")[2]
        self._local_hostname = socket.gethostname() or "localhost"

    # -- subscriptions ------------------------------------------------------------------------

    def check_destination(self, destination: Mapping[str, Any]) -> None:
        """Refuse a destination naming each bad field: schema, addresses, templates."""
        errors = [
            FieldError("/destination" + e.path, e.message)
            for e in payload_errors(self._validator, destination)
        ]
        if not errors:
            errors = _destination_problems(destination)
        if errors:
            raise ValidationFailed("email destination", errors)

    def digest_key(self, delivery: Delivery) -> str | None:
        """Failures of one job (definition, else type) for one subscription share a digest."""
        if delivery.event_type not in FAILURES:
            return None
        values = template_values(delivery)
        job = f"job:{values['job.id']}" if values["job.id"] else f"type:{values['run.type']}"
        return f"{delivery.subscription_id}:{job}"

    # -- sending ------------------------------------------------------------------------------

    def compose(self, deliveries: Sequence[Delivery]) -> EmailMessage:
        """The one message for `deliveries`: the event's own, or a digest when there are more."""
        destination = deliveries[0].destination
        if len(deliveries) == 1:
            subject, text = self._render_single(deliveries[0])
        else:
            subject, text = render_digest(deliveries)
        message = EmailMessage(policy=_POLICY)
        message["From"] = self.settings.smtp_from
        message["To"] = ", ".join(destination["to"])
        if destination.get("cc"):
            message["Cc"] = ", ".join(destination["cc"])
        message["Subject"] = one_line(subject)
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = self._message_id(deliveries)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        message["X-Jobhost-Event-Id"] = ", ".join(_safe_id(d.event_id) for d in deliveries)
        message["X-Jobhost-Event-Type"] = ", ".join(sorted({d.event_type for d in deliveries}))
        message["X-Jobhost-Subscription-Id"] = _safe_id(deliveries[0].subscription_id)
        if len(deliveries) > 1:
            message["X-Jobhost-Digest-Count"] = str(len(deliveries))
        message.set_content(text)
        return message

    def _render_single(self, delivery: Delivery) -> tuple[str, str]:
        values = template_values(delivery)
        subject, body = defaults(delivery, values)
        return (
            render(delivery.destination.get("subject") or subject, values),
            render(delivery.destination.get("body") or body, values),
        )

    def _message_id(self, deliveries: Sequence[Delivery]) -> str:
        """From the event id(s), so a retried message has the same id and clients dedupe it."""
        if len(deliveries) == 1:
            left = _safe_id(deliveries[0].event_id)
        else:
            ids = "\n".join(sorted(d.event_id for d in deliveries)).encode()
            left = "digest." + hashlib.sha256(ids).hexdigest()[:32]
        return f"<{left}@{self._domain}>"

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        """Send one message; every failure comes back as a SendResult, never as an exception."""
        started = time.perf_counter()
        try:
            result = await self._send(deliveries)
        except Exception as exc:  # a bug or an unforeseen library error: record, retry later
            result = SendResult(ok=False, status="error", error=f"{type(exc).__name__}: {exc}")
        return replace(result, latency_ms=(time.perf_counter() - started) * 1e3)

    async def _send(self, deliveries: Sequence[Delivery]) -> SendResult:
        if not deliveries:
            return SendResult(ok=True, status="empty")
        try:
            self.check_destination(deliveries[0].destination)
        except ValidationFailed as exc:  # changed behind the API's back: retrying cannot help
            return SendResult(ok=False, retry=False, status="invalid", error=exc.message)
        if not self.settings.smtp_host:
            return SendResult(ok=False, status="unconfigured", error="JOBHOST_SMTP_HOST is not set")
        destination = deliveries[0].destination
        recipients = list(dict.fromkeys([*destination["to"], *destination.get("cc", [])]))
        return await self._converse(self.compose(deliveries).as_bytes(), recipients)

    async def _converse(self, data: bytes, recipients: list[str]) -> SendResult:
        """One SMTP conversation, tracking the phase so a failure is classified by where."""
        s = self.settings
        smtp = self._client()
        phase = "connect"
        try:
            await smtp.connect()
            if s.smtp_security == "starttls":  # done here, not by connect(), so that a
                phase = "STARTTLS"  # failure leaves the transport to _drop
                await smtp.starttls()
            if s.smtp_username is not None and s.smtp_password is not None:
                phase = "login"
                await smtp.login(s.smtp_username, s.smtp_password)
            phase = "MAIL FROM"
            await smtp.mail(self._sender)
            phase = "RCPT TO"
            refused = await _rcpt_all(smtp, recipients)
            if len(refused) == len(recipients):
                return _all_refused(refused)
            phase = "DATA"
            response = await smtp.data(data)
            with contextlib.suppress(Exception):  # the message is committed at the 250 already
                await smtp.execute_command(b"QUIT")
        except Exception as exc:
            return classify(exc, phase)
        finally:
            await _drop(smtp)
        return SendResult(
            ok=True,
            status=str(response.code),
            response_excerpt=response.message[:200],
            error=_refusals(refused) if refused else None,  # partly delivered: not retried
        )

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port or _DEFAULT_PORTS[s.smtp_security],
            use_tls=s.smtp_security == "tls",
            start_tls=False,
            timeout=s.smtp_timeout_s,
            tls_context=self._tls_context,
            local_hostname=self._local_hostname,
        )

    async def aclose(self) -> None:
        """Nothing pooled: each message opens and closes its own connection."""


async def _drop(smtp: aiosmtplib.SMTP) -> None:
    """Close at once: a TLS close would wait for the server's close_notify, keeping the
    socket open past the caller (the conversation is over, nothing is left to flush)."""
    if smtp.transport is not None:
        cast(asyncio.Transport, smtp.transport).abort()
    smtp.close()
    await asyncio.sleep(0)  # the transport closes its socket on the next loop iteration


async def _rcpt_all(
    smtp: aiosmtplib.SMTP, recipients: list[str]
) -> dict[str, aiosmtplib.SMTPRecipientRefused]:
    refused: dict[str, aiosmtplib.SMTPRecipientRefused] = {}
    for recipient in recipients:
        try:
            await smtp.rcpt(recipient)
        except aiosmtplib.SMTPRecipientRefused as exc:
            refused[recipient] = exc
    return refused


def _all_refused(refused: Mapping[str, aiosmtplib.SMTPRecipientRefused]) -> SendResult:
    """No recipient accepted: retry if any refusal was temporary (4xx), else give up."""
    codes = [exc.code for exc in refused.values()]
    temporary = any(400 <= code < 500 for code in codes)
    return SendResult(ok=False, retry=temporary, status=str(codes[0]), error=_refusals(refused))


def _refusals(refused: Mapping[str, aiosmtplib.SMTPRecipientRefused]) -> str:
    return "RCPT TO refused: " + "; ".join(
        f"{rcpt} ({exc.code} {exc.message})" for rcpt, exc in refused.items()
    )


#: 5xx answers about this host's TLS or login, not the message (RFC 3207, RFC 4954).
_CONFIG_CODES = frozenset({530, 534, 535, 538})
_MAY_DUPLICATE = " (the server may have accepted the message: the retry can duplicate it)"


def classify(exc: BaseException, phase: str) -> SendResult:
    """A failed SMTP conversation as a SendResult: 5xx answers are permanent, the rest retry.

    Login refusals and TLS failures retry too: they are this host's configuration, not the
    message, and should not lose notifications while an operator fixes them.
    """
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or (
        isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code in _CONFIG_CODES
    ):
        return SendResult(
            ok=False,
            status=str(exc.code),
            error=f"{phase}: {exc.code} {exc.message} (check JOBHOST_SMTP_SECURITY, "
            "JOBHOST_SMTP_USERNAME and JOBHOST_SMTP_PASSWORD)",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        permanent = 500 <= exc.code < 600
        return SendResult(
            ok=False, retry=not permanent, status=str(exc.code), error=f"{phase}: {exc.message}"
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _all_refused({e.recipient: e for e in exc.recipients})
    after_data = _MAY_DUPLICATE if phase == "DATA" else ""
    if isinstance(exc, TimeoutError):  # SMTPTimeoutError and its connect variant too
        return SendResult(ok=False, status="timeout", error=f"{phase}: timed out{after_data}")
    if (
        phase == "STARTTLS"
        or isinstance(exc, ssl.SSLError)
        or isinstance(exc.__cause__, ssl.SSLError)
    ):
        return SendResult(ok=False, status="tls", error=f"{phase}: TLS failed: {exc}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SendResult(
            ok=False, status="disconnected", error=f"{phase}: connection closed{after_data}"
        )
    if isinstance(exc, ConnectionRefusedError) or isinstance(exc.__cause__, ConnectionRefusedError):
        return SendResult(ok=False, status="refused", error=f"connection refused: {exc}")
    if isinstance(exc, OSError):  # SMTPConnectError, unreachable, reset...
        return SendResult(ok=False, status="connect", error=f"{phase}: {exc}")
    return SendResult(ok=False, status="error", error=f"{phase}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _destination_problems(destination: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    for field in ("to", "cc"):
        for i, address in enumerate(destination.get(field, [])):
            problem = address_problem(address)
            if problem:
                errors.append(FieldError(f"/destination/{field}/{i}", problem))
    if len(destination["to"]) + len(destination.get("cc", [])) > MAX_RECIPIENTS:
        errors.append(FieldError("/destination/cc", f"at most {MAX_RECIPIENTS} recipients"))
    for field in ("subject", "body"):
        for problem in template_problems(destination.get(field, "")):
            errors.append(FieldError(f"/destination/{field}", problem))
    if any(c in destination.get("subject", "") for c in "\r\n"):
        errors.append(FieldError("/destination/subject", "must be one line (no CR or LF)"))
    return errors


def _safe_id(value: str) -> str:
    """An id as a Message-ID left part and header token: dot-atom characters only."""
    cleaned = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "_", value))[:128].strip(".")
    return cleaned or "event"


@hookimpl
def jobhost_notification_channels(settings: Settings) -> list[Channel]:
    """The bundled email channel, registered like a third-party channel would be."""
    return [EmailChannel(settings)]
