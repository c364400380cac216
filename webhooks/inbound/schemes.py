"""Signature schemes: each checks a delivery's signature against every active secret and says
which delivery id the sender gave (for the log) and which replay key the signature covers.

The replay key must be signed, or a captured delivery resent with a new id would start a new
run: the id itself where the scheme signs it (Standard Webhooks' `webhook-id`, the Stripe
event's `id` in the body), else `sha256:` and the hex SHA-256 of the signed content (the body,
or `<timestamp>.<body>` when the scheme signs a timestamp). `X-GitHub-Delivery` and a generic
trigger's `id_header` are not signed, so they name the delivery in the log but are not the key.

Comparisons are constant-time (`hmac.compare_digest`) and every secret is tried, so neither the
answer nor its timing tells which secret or which part failed. A failure raises Rejected with
a reason code (for the delivery log) and a detail (kept there, never sent to the caller).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMES = ("standard", "github", "stripe", "hmac")

#: Header names a generic HMAC trigger may configure: a token of RFC 9110 field-name characters.
HEADER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")


class Rejected(Exception):
    """A delivery that must not run: `reason` is the delivery log's code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Verified:
    """A delivery whose signature holds: the id its sender gave (None when the scheme has
    none; not necessarily signed), the signed timestamp if the scheme signs one, and the replay
    key, which the signature covers."""

    delivery_id: str | None
    timestamp: int | None
    replay_key: str


@dataclass(frozen=True)
class Check:
    """What a scheme needs: the trigger's secrets, tolerance and options, and the clock."""

    secrets: Sequence[str]
    tolerance_s: int
    options: Mapping[str, Any]
    now: float


Verifier = Callable[[Check, Mapping[str, str], bytes], Verified]


def verify(scheme: str, check: Check, headers: Mapping[str, str], body: bytes) -> Verified:
    """Verify a delivery; Rejected (bad_signature, stale_timestamp, malformed) otherwise.
    `headers` is case-insensitive (aiohttp's CIMultiDict)."""
    return _VERIFIERS[scheme](check, headers, body)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _any_match(candidates: Sequence[bytes], expected: Sequence[bytes]) -> bool:
    """True when any candidate equals any expected value; every pair is compared, in constant
    time, so the time taken does not depend on which (if any) matched."""
    found = False
    for got in candidates:
        for want in expected:
            found |= hmac.compare_digest(got, want)
    return found


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value; Rejected when missing or not UTF-8 (aiohttp keeps undecodable bytes as
    surrogates, which would not survive encoding)."""
    value = headers.get(name)
    if not value:
        raise Rejected("bad_signature", f"missing header {name}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Rejected("bad_signature", f"header {name} is not UTF-8") from None
    return value


def content_key(signed: bytes) -> str:
    """The replay key of a delivery whose id is not signed: the signed content's SHA-256."""
    return "sha256:" + hashlib.sha256(signed).hexdigest()


def _fresh(check: Check, raw: str) -> int:
    """The timestamp (Unix seconds) if within the tolerance, past or future."""
    try:
        ts = int(raw)
    except ValueError:
        raise Rejected("bad_signature", f"timestamp {raw[:40]!r} is not Unix seconds") from None
    skew = check.now - ts
    if abs(skew) > check.tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise Rejected("stale_timestamp", f"timestamp {abs(skew):.0f}s {when}, tolerance "
                       f"{check.tolerance_s}s")  # fmt: skip
    return ts


# -- Standard Webhooks ------------------------------------------------------------------------


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after the `whsec_` prefix."""
    try:
        raw = secret.removeprefix("whsec_")
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from exc


def _standard(check: Check, headers: Mapping[str, str], body: bytes) -> Verified:
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    ts = _fresh(check, raw_ts)
    signed = f"{msg_id}.{raw_ts}.".encode() + body
    expected = [base64.b64encode(_hmac(standard_key(s), signed)) for s in check.secrets]
    given = [
        sig.encode() for version, _, sig in (p.partition(",") for p in signatures.split())
        if version == "v1"
    ]  # fmt: skip
    if not _any_match(given, expected):
        raise Rejected("bad_signature", f"no v1 signature matched any of {len(expected)} secrets")
    return Verified(msg_id, ts, msg_id)


# -- GitHub -----------------------------------------------------------------------------------


def _github(check: Check, headers: Mapping[str, str], body: bytes) -> Verified:
    signature = _header(headers, "X-Hub-Signature-256")
    delivery = _header(headers, "X-GitHub-Delivery")
    expected = [b"sha256=" + _hmac(s.encode(), body).hex().encode() for s in check.secrets]
    if not _any_match([signature.encode()], expected):
        raise Rejected("bad_signature", f"X-Hub-Signature-256 matched none of {len(expected)} "
                       "secrets")  # fmt: skip
    return Verified(delivery, None, content_key(body))


# -- Stripe -----------------------------------------------------------------------------------


def _stripe(check: Check, headers: Mapping[str, str], body: bytes) -> Verified:
    header = _header(headers, "Stripe-Signature")
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    if len(stamps) != 1:
        raise Rejected("bad_signature", "Stripe-Signature carries no single t=")
    ts = _fresh(check, stamps[0])
    signed = stamps[0].encode() + b"." + body
    expected = [_hmac(s.encode(), signed).hex().encode() for s in check.secrets]
    given = [v.strip().encode() for k, _, v in parts if k.strip() == "v1"]
    if not _any_match(given, expected):
        raise Rejected("bad_signature", f"no v1 signature matched any of {len(expected)} secrets")
    event_id = _stripe_event_id(body)
    return Verified(event_id, ts, event_id or content_key(body))


def _stripe_event_id(body: bytes) -> str | None:
    """The event's id (`evt_...`), Stripe's delivery id; None if the body has none."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    event_id = event.get("id") if isinstance(event, dict) else None
    ok = isinstance(event_id, str) and 0 < len(event_id) <= 200 and "\x00" not in event_id
    return event_id if ok else None


# -- generic HMAC-SHA256 ----------------------------------------------------------------------

#: Options of a generic HMAC trigger, with their defaults.
HMAC_DEFAULTS: dict[str, Any] = {
    "header": "X-Signature",  #: where the signature is
    "encoding": "hex",  #: hex or base64
    "prefix": "",  #: e.g. "sha256=" before the digest
    "timestamp_header": None,  #: if set: signed content is "<timestamp>.<body>", checked fresh
    "id_header": None,  #: the delivery id's header (for the log); default: the replay key
}


def _generic(check: Check, headers: Mapping[str, str], body: bytes) -> Verified:
    opts = {**HMAC_DEFAULTS, **check.options}
    signature = _header(headers, opts["header"])
    ts = None
    signed = body
    if opts["timestamp_header"]:
        raw_ts = _header(headers, opts["timestamp_header"])
        ts = _fresh(check, raw_ts)
        signed = raw_ts.encode() + b"." + body
    prefix = opts["prefix"].encode()
    digests = [_hmac(s.encode(), signed) for s in check.secrets]
    if opts["encoding"] == "base64":
        expected = [prefix + base64.b64encode(d) for d in digests]
    else:
        expected = [prefix + d.hex().encode() for d in digests]
    if not _any_match([signature.strip().encode()], expected):
        raise Rejected("bad_signature", f"{opts['header']} matched none of {len(expected)} "
                       "secrets")  # fmt: skip
    key = content_key(signed)
    delivery = _header(headers, opts["id_header"]) if opts["id_header"] else key
    return Verified(delivery, ts, key)


_VERIFIERS: dict[str, Verifier] = {
    "standard": _standard, "github": _github, "stripe": _stripe, "hmac": _generic,
}  # fmt: skip


def check_secret(scheme: str, secret: str) -> str | None:
    """Why `secret` cannot serve `scheme`, or None when it can."""
    if scheme == "standard":
        try:
            key = standard_key(secret)
        except ValueError as exc:
            return str(exc)
        return None if len(key) >= 16 else "a Standard Webhooks key must be 16-64 bytes"
    return None if len(secret) >= 8 else "must be at least 8 characters"
