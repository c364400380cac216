"""Notification text from run events: safe `{run.id}` templates, defaults per event, digests.

Templates are data from subscriptions (users), so they get no Python at all: a placeholder is a
name from FIELDS, substituted in one pass, with no attribute access, indexing or format spec;
values are never scanned again, so a run's error text cannot expand a placeholder either. Any
channel can use this (the bundled email channel does; a chat plugin could).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from webhooks.outbound.channel import Delivery

SUBJECT_LIMIT = 200  #: characters of a one-line rendering (an email subject)
TEXT_LIMIT = 2000  #: characters of one error or result inside a message


#: Every placeholder a template may use, with what it holds. Nothing else is ever looked up.
FIELDS: dict[str, str] = {
    "event.type": "run.succeeded, run.failed or run.dead",
    "event.id": "stable event id (the same on every retry)",
    "event.time": "when the event happened (ISO 8601)",
    "run.id": "the run's id",
    "run.type": "the run's job type",
    "run.state": "the run's state after the event",
    "run.attempt": "the attempt number",
    "run.max_attempts": "attempts allowed",
    "run.will_retry": "yes or no (run.failed)",
    "run.error": "the attempt's error, if any",
    "run.result": "the result as JSON, if any",
    "run.tenant": "the run's tenant",
    "run.created_at": "when the run was created",
    "run.started_at": "when the attempt started",
    "run.finished_at": "when the attempt finished",
    "job.id": "the job definition's id, if the run came from one",
    "job.name": "the job definition's name, if any",
    "job.label": "the job definition's name, else the run's type",
    "subscription.id": "the subscription's id",
}

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def template_problems(text: str) -> list[str]:
    """What is wrong with a template: unknown placeholders and stray braces."""
    problems: list[str] = []
    for match in _TOKEN.finditer(text):
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            continue
        if name is None:
            problems.append("a lone brace: write {{ or }} for a literal one")
        elif name not in FIELDS:
            problems.append(f"unknown placeholder {token}; known: {', '.join(FIELDS)}")
    return problems


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitute `{name}` placeholders in one pass; a value is never scanned again, and an
    unknown placeholder stays as written (check_destination refuses those up front)."""

    def substitute(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        return values.get(name, token) if name is not None else token

    return _TOKEN.sub(substitute, text)


def one_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """`text` as one header-safe line: control and line-separator characters become spaces."""
    cleaned = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    line = " ".join(cleaned.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def template_values(delivery: Delivery) -> dict[str, str]:
    """The placeholder values of one delivery, read from its event body."""
    body = delivery.body
    data = _mapping(body.get("data"))
    run = _mapping(data.get("run"))
    job = _mapping(data.get("job"))
    will_retry = run.get("will_retry", data.get("will_retry"))
    job_name = _text(job.get("name"))
    return {
        "event.type": delivery.event_type,
        "event.id": delivery.event_id,
        "event.time": _text(body.get("timestamp")),
        "run.id": _text(run.get("id")),
        "run.type": _text(run.get("type")),
        "run.state": _text(run.get("state")),
        "run.attempt": _text(run.get("attempt")),
        "run.max_attempts": _text(run.get("max_attempts")),
        "run.will_retry": "" if will_retry is None else ("yes" if will_retry else "no"),
        "run.error": _clip(_text(run.get("error"))),
        "run.result": _clip(_json(run.get("result"))),
        "run.tenant": _text(run.get("tenant_id", run.get("tenant"))),
        "run.created_at": _text(run.get("created_at")),
        "run.started_at": _text(run.get("started_at")),
        "run.finished_at": _text(run.get("finished_at")),
        "job.id": _text(job.get("id", run.get("job_id"))),
        "job.name": job_name,
        "job.label": job_name or _text(run.get("type")),
        "subscription.id": delivery.subscription_id,
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


_FOOTER = (
    "\n\nTenant: {run.tenant}\nCreated: {run.created_at}\nStarted: {run.started_at}\n"
    "Finished: {run.finished_at}\n\nEvent {event.id} ({event.type}) at {event.time}, "
    "subscription {subscription.id}.\n"
)

#: (subject, body) by event; run.failed has two, by whether the run will be retried.
DEFAULT_TEMPLATES: dict[str, tuple[str, str]] = {
    "run.succeeded": (
        "[jobhost] {job.label} succeeded (run {run.id})",
        "Run {run.id} of {job.label} succeeded on attempt {run.attempt}.\n\n"
        "Result: {run.result}" + _FOOTER,
    ),
    "run.failed": (
        "[jobhost] {job.label} failed attempt {run.attempt}, will retry (run {run.id})",
        "Attempt {run.attempt} of {run.max_attempts} of run {run.id} ({job.label}) failed; "
        "it will be retried.\n\nError: {run.error}" + _FOOTER,
    ),
    "run.failed.final": (
        "[jobhost] {job.label} failed attempt {run.attempt} (run {run.id})",
        "Attempt {run.attempt} of run {run.id} ({job.label}) failed and will not be "
        "retried.\n\nError: {run.error}" + _FOOTER,
    ),
    "run.dead": (
        "[jobhost] {job.label} is dead (run {run.id}, attempt {run.attempt})",
        "Run {run.id} ({job.label}) is dead: it failed {run.attempt} attempts or could not "
        "be retried. Replay it from the dead letters once the cause is fixed.\n\n"
        "Error: {run.error}" + _FOOTER,
    ),
}


def defaults(delivery: Delivery, values: Mapping[str, str]) -> tuple[str, str]:
    """The default (subject, body) templates for this event."""
    key = delivery.event_type
    if key == "run.failed" and values["run.will_retry"] == "no":
        key = "run.failed.final"
    return DEFAULT_TEMPLATES.get(key, ("[jobhost] {event.type} (run {run.id})", _FOOTER))


def render_digest(deliveries: Sequence[Delivery]) -> tuple[str, str]:
    """One message listing each failure: count in the subject, one entry per event."""
    items = [template_values(d) for d in deliveries]
    label = items[0]["job.label"]
    dead = sum(1 for d in deliveries if d.event_type == "run.dead")
    subject = f"[jobhost] {len(items)} failures of {label}"
    if dead:
        subject += f" ({dead} dead)"
    lines = [
        f"{len(items)} failure events of {label} (tenant {items[0]['run.tenant']}), "
        "grouped into one message.",
        "",
    ]
    for n, v in enumerate(items, 1):
        retry = {"yes": ", will retry", "no": ", no retry"}.get(v["run.will_retry"], "")
        lines += [
            f"{n}. {v['event.type']} at {v['event.time'] or v['run.finished_at']}: "
            f"run {v['run.id']}, attempt {v['run.attempt']}{retry}",
            "   Error: " + (v["run.error"].replace("\n", "\n   ") or "(none)"),
            f"   Event {v['event.id']}",
            "",
        ]
    lines.append(f"Subscription {items[0]['subscription.id']}.")
    return subject, "\n".join(lines) + "\n"
