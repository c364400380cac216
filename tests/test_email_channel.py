"""The email channel against a real SMTP server (aiosmtpd on loopback) with fault modes
(tests/conftest.py FaultHandler).

One module-scoped server per flavour (plain, STARTTLS with login, implicit TLS); each test sets
the plain server's fault mode. TLS certificates come from a throwaway CA made by trustme.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from host.config import Settings
from host.embedded import free_port
from host.errors import ConfigError, ValidationFailed
from host.registry import build_plugin_manager
from tests.conftest import FaultHandler
from webhooks.outbound import email as email_module
from webhooks.outbound.channel import Channel, Delivery
from webhooks.outbound.email import EmailChannel

SHORT_TIMEOUT_S = 0.3  #: the client timeout of the slow test, well under FaultHandler.slow_s


@dataclass
class Servers:
    plain: FaultHandler
    plain_port: int
    starttls: FaultHandler
    starttls_port: int
    tls: FaultHandler
    tls_port: int
    client_tls: ssl.SSLContext  #: trusts the test CA


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    handlers = [FaultHandler(), FaultHandler(), FaultHandler()]
    ports = [free_port() for _ in handlers]
    common = {"hostname": "127.0.0.1", "server_hostname": "localhost"}
    controllers = [
        Controller(handlers[0], port=ports[0], **common),
        Controller(
            handlers[1],
            port=ports[1],
            tls_context=server_tls,
            require_starttls=True,
            authenticator=handlers[1].authenticate,
            **common,
        ),
        Controller(handlers[2], port=ports[2], ssl_context=server_tls, **common),
    ]
    for c in controllers:
        c.start()
    try:
        yield Servers(
            handlers[0], ports[0], handlers[1], ports[1], handlers[2], ports[2], client_tls
        )
    finally:
        for c in controllers:
            c.stop()


@pytest.fixture
def smtp(servers: Servers) -> Servers:
    """The servers with the plain one reset to accept everything."""
    for h in (servers.plain, servers.starttls, servers.tls):
        h.mode, h.refuse = "accept", set()
        h.received.clear()
        h.logins.clear()
    return servers


def channel(port: int | None, **settings: Any) -> EmailChannel:
    tls_context = settings.pop("tls_context", None)
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1" if port else None,
        "smtp_port": port or 0,
        "smtp_from": "Jobhost <jobhost@example.org>",
        "smtp_timeout_s": 5.0,
        **settings,
    }
    return EmailChannel(Settings(**values), tls_context=tls_context)


DEST = {"to": ["ops@example.com", "dev@example.com"], "cc": ["lead@example.com"]}


def delivery(
    event_type: str = "run.succeeded",
    *,
    n: int = 1,
    error: str | None = None,
    will_retry: bool | None = None,
    job: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
) -> Delivery:
    run = {
        "id": f"0190aaaa-0000-7000-8000-00000000000{n}",
        "type": "report.build",
        "state": {"run.succeeded": "succeeded", "run.dead": "dead"}.get(event_type, "retrying"),
        "attempt": n,
        "max_attempts": 5,
        "tenant_id": "acme",
        "created_at": "2026-11-30T12:00:00Z",
        "started_at": "2026-11-30T12:00:01Z",
        "finished_at": f"2026-11-30T12:00:0{n + 1}Z",
        "result": {"rows": 42} if event_type == "run.succeeded" else None,
        "error": error,
        "will_retry": will_retry,
    }
    return Delivery(
        id=f"dlv-{n}",
        event_id=f"evt_{event_type.replace('.', '_')}_{n}",
        event_type=event_type,
        body={
            "type": event_type,
            "id": f"evt_{n}",
            "timestamp": f"2026-11-30T12:00:0{n + 1}Z",
            "data": {"run": run, "job": job},
        },
        destination=DEST if destination is None else destination,
        secret=None,
        subscription_id="sub-1",
        attempt=1,
    )


# ---------------------------------------------------------------------------------------------
# Settings, destination validation, the hook
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"JOBHOST_SMTP_SECURITY": "ssl"}, "JOBHOST_SMTP_SECURITY"),
        ({"JOBHOST_SMTP_PORT": "smtp"}, "JOBHOST_SMTP_PORT"),
        ({"JOBHOST_SMTP_PORT": "70000"}, "JOBHOST_SMTP_PORT"),
        ({"JOBHOST_SMTP_TIMEOUT_S": "0"}, "JOBHOST_SMTP_TIMEOUT_S"),
        ({"JOBHOST_SMTP_FROM": "not-an-address"}, "JOBHOST_SMTP_FROM"),
        ({"JOBHOST_SMTP_USERNAME": "u"}, "JOBHOST_SMTP_PASSWORD"),
        ({"JOBHOST_SMTP_USERNAME": "u", "JOBHOST_SMTP_PASSWORD": "p"}, "JOBHOST_SMTP_SECURITY"),
    ],
)
def test_bad_smtp_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_smtp_settings_from_env_keep_the_password_out_of_repr() -> None:
    s = Settings.from_env(
        {
            "JOBHOST_SMTP_HOST": "mail.example.com",
            "JOBHOST_SMTP_PORT": "2525",
            "JOBHOST_SMTP_SECURITY": "starttls",
            "JOBHOST_SMTP_USERNAME": "u",
            "JOBHOST_SMTP_PASSWORD": "s3cret",
        }
    )
    assert (s.smtp_host, s.smtp_port, s.smtp_security) == ("mail.example.com", 2525, "starttls")
    assert s.smtp_password == "s3cret" and "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("destination", "path", "words"),
    [
        ({}, "/destination", "'to' is a required property"),
        ({"to": []}, "/destination/to", "should be non-empty"),
        ({"to": ["ok@example.com", "not an address"]}, "/destination/to/1", "not an email"),
        ({"to": ["a@example.com\r\nBcc: evil@example.com"]}, "/destination/to/0", "not an email"),
        ({"to": ["a@x.com"], "cc": ["Boss <b@x.com>"]}, "/destination/cc/0", "not an email"),
        ({"to": ["a@x.com"], "subject": "hi\r\nBcc: e@x.com"}, "/destination/subject", "one line"),
        ({"to": ["a@x.com"], "subject": "{run.__class__}"}, "/destination/subject", "unknown"),
        ({"to": ["a@x.com"], "body": "{run.id.__init__}"}, "/destination/body", "unknown"),
        ({"to": ["a@x.com"], "body": "{run.id!r} {run.id:>99}"}, "/destination/body", "unknown"),
        ({"to": ["a@x.com"], "body": "{0}"}, "/destination/body", "unknown placeholder {0}"),
        ({"to": ["a@x.com"], "subject": "a { b"}, "/destination/subject", "lone brace"),
        ({"to": ["a@x.com"], "bcc": ["b@x.com"]}, "/destination", "bcc"),
    ],
)
def test_bad_destinations_are_refused_naming_the_field(
    destination: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        channel(None).check_destination(destination)
    assert any(e.path == path and words in e.message for e in caught.value.errors), caught.value


def test_good_destination_passes() -> None:
    channel(None).check_destination(
        {"to": ["o.p+s@mail.example.com"], "subject": "{{x}} {job.label} {run.state}"}
    )


def test_the_hook_provides_the_channel_through_pluggy() -> None:
    pm = build_plugin_manager()
    pm.register(email_module, name="webhooks.outbound.email")
    pm.check_pending()
    settings = Settings(smtp_host="127.0.0.1")
    [channels] = pm.hook.jobhost_notification_channels(settings=settings)
    [ch] = channels
    assert isinstance(ch, Channel) and ch.name == "email" and ch.settings is settings


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------


async def test_an_email_arrives_with_recipients_subject_and_body(smtp: Servers) -> None:
    d = delivery(job={"id": "job-7", "name": "nightly-report"})
    result = await channel(smtp.plain_port).send([d])
    assert result.ok and result.status == "250" and result.latency_ms is not None
    [(envelope, msg)] = smtp.plain.received
    assert envelope.mail_from == "jobhost@example.org"
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com", "lead@example.com"]
    assert msg["To"] == "ops@example.com, dev@example.com" and msg["Cc"] == "lead@example.com"
    assert "Bcc" not in msg
    assert (
        msg["Subject"] == f"[jobhost] nightly-report succeeded (run {d.body['data']['run']['id']})"
    )
    assert msg["Message-ID"] == "<evt_run_succeeded_1@example.org>"
    assert msg["X-Jobhost-Event-Id"] == d.event_id
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_content()
    assert d.body["data"]["run"]["id"] in text and '{"rows": 42}' in text and "acme" in text


@pytest.mark.parametrize(
    ("event_type", "will_retry", "subject"),
    [
        ("run.failed", True, "[jobhost] report.build failed attempt 1, will retry"),
        ("run.failed", False, "[jobhost] report.build failed attempt 1 (run"),
        (
            "run.dead",
            None,
            "[jobhost] report.build is dead (run 0190aaaa-0000-7000-8000-000000000001, attempt 1)",
        ),
    ],
)
async def test_default_subjects_per_event(
    smtp: Servers, event_type: str, will_retry: bool | None, subject: str
) -> None:
    d = delivery(event_type, error="ValueError: boom", will_retry=will_retry)
    assert (await channel(smtp.plain_port).send([d])).ok
    [(_, msg)] = smtp.plain.received
    assert msg["Subject"].startswith(subject)
    assert "ValueError: boom" in msg.get_content()


async def test_templates_render_fields_and_injection_is_neutralised(smtp: Servers) -> None:
    evil = "oops\r\nBcc: evil@example.com\r\nX-Evil: 1\n{event.id} ${run.id} {0.__class__}"
    dest = {
        "to": ["ops@example.com"],
        "subject": "{job.label}: {run.state} {{braces}} {run.error}",
        "body": "Run {run.id} error={run.error} attempt={run.attempt}/{run.max_attempts}",
    }
    d = delivery("run.failed", error=evil, will_retry=True, destination=dest)
    assert (await channel(smtp.plain_port).send([d])).ok
    [(envelope, msg)] = smtp.plain.received
    assert envelope.rcpt_tos == ["ops@example.com"]
    assert "Bcc" not in msg and "X-Evil" not in msg
    subject = msg["Subject"]
    assert subject.startswith("report.build: retrying {braces} oops Bcc: evil@example.com")
    assert "\n" not in subject and "\r" not in subject
    body = msg.get_content()
    # The error's own placeholders are text, never substituted a second time.
    assert "{event.id} ${run.id} {0.__class__}" in body and d.event_id not in body
    assert "attempt=1/5" in body


async def test_subjects_are_encoded_and_capped(smtp: Servers) -> None:
    dest = {"to": ["ops@example.com"], "subject": "Échec {{{run.id}}} {run.error}"}
    d = delivery("run.dead", error="ü" * 500, destination=dest)
    assert (await channel(smtp.plain_port).send([d])).ok
    [(_, msg)] = smtp.plain.received
    run_id = d.body["data"]["run"]["id"]
    assert msg["Subject"].startswith(f"Échec {{{run_id}}} üüü") and len(msg["Subject"]) == 200


async def test_failures_of_one_job_go_out_as_one_digest(smtp: Servers) -> None:
    ch = channel(smtp.plain_port)
    job = {"id": "job-7", "name": "nightly-report"}
    failures = [
        delivery("run.failed", n=i, error=f"Timeout #{i}", will_retry=True, job=job)
        for i in range(1, 5)
    ] + [delivery("run.dead", n=5, error="Timeout #5", job=job)]
    keys = {ch.digest_key(d) for d in failures}
    assert keys == {"sub-1:job:job-7"}
    assert ch.digest_key(delivery("run.succeeded", job=job)) is None
    assert ch.digest_key(delivery("run.failed")) == "sub-1:type:report.build"

    result = await ch.send(failures)
    assert result.ok
    [(envelope, msg)] = smtp.plain.received
    assert len(envelope.rcpt_tos) == 3
    assert msg["Subject"] == "[jobhost] 5 failures of nightly-report (1 dead)"
    assert msg["X-Jobhost-Digest-Count"] == "5"
    text = msg.get_content()
    for d in failures:
        run = d.body["data"]["run"]
        assert run["id"] in text and run["error"] in text and d.event_id in text
        assert d.body["timestamp"] in text
    # A retried digest keeps its Message-ID, so mail clients can drop the duplicate.
    assert ch.compose(list(reversed(failures)))["Message-ID"] == msg["Message-ID"]


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "retry", "status"),
    [
        ("tempfail421", True, "421"),
        ("tempfail451", True, "451"),
        ("permfail", False, "550"),
        ("drop", True, "disconnected"),
    ],
)
async def test_smtp_answers_are_classified(
    smtp: Servers, mode: str, retry: bool, status: str
) -> None:
    smtp.plain.mode = mode
    result = await channel(smtp.plain_port).send([delivery("run.dead", error="x")])
    assert (result.ok, result.retry, result.status) == (False, retry, status), result
    assert result.error and result.latency_ms is not None
    if mode == "drop":  # the server did get it: the retry will be a duplicate
        assert len(smtp.plain.received) == 1 and "duplicate" in result.error


async def test_a_slow_server_times_out_and_is_retried(smtp: Servers) -> None:
    smtp.plain.mode = "slow"
    ch = channel(smtp.plain_port, smtp_timeout_s=SHORT_TIMEOUT_S)
    result = await ch.send([delivery()])
    assert (result.ok, result.retry, result.status) == (False, True, "timeout"), result


async def test_a_server_not_listening_is_retried() -> None:
    result = await channel(free_port()).send([delivery()])
    assert (result.ok, result.retry, result.status) == (False, True, "refused"), result


async def test_no_smtp_host_waits_for_configuration() -> None:
    result = await channel(None).send([delivery()])
    assert (result.ok, result.retry, result.status) == (False, True, "unconfigured")
    assert "JOBHOST_SMTP_HOST" in (result.error or "")


async def test_a_refused_recipient_does_not_stop_the_others(smtp: Servers) -> None:
    smtp.plain.refuse = {"dev@example.com"}
    result = await channel(smtp.plain_port).send([delivery()])
    assert result.ok and "dev@example.com (550" in (result.error or "")
    [(envelope, _)] = smtp.plain.received
    assert envelope.rcpt_tos == ["ops@example.com", "lead@example.com"]


async def test_a_destination_changed_to_an_invalid_one_fails_permanently(smtp: Servers) -> None:
    d = delivery(destination={"to": ["x@example.com\nBcc: e@example.com"]})
    result = await channel(smtp.plain_port).send([d])
    assert (result.ok, result.retry, result.status) == (False, False, "invalid")
    assert smtp.plain.received == []


# ---------------------------------------------------------------------------------------------
# TLS and login
# ---------------------------------------------------------------------------------------------


async def test_starttls_with_login_delivers(smtp: Servers) -> None:
    ch = channel(
        smtp.starttls_port,
        smtp_security="starttls",
        smtp_username="u",
        smtp_password="pw",
        tls_context=smtp.client_tls,
    )
    result = await ch.send([delivery()])
    assert result.ok, result
    assert smtp.starttls.logins == ["u"] and len(smtp.starttls.received) == 1


async def test_starttls_login_refused_is_retried_and_says_what_to_check(smtp: Servers) -> None:
    ch = channel(
        smtp.starttls_port,
        smtp_security="starttls",
        smtp_username="u",
        smtp_password="wrong",
        tls_context=smtp.client_tls,
    )
    result = await ch.send([delivery()])
    assert (result.ok, result.retry, result.status) == (False, True, "535"), result
    assert "JOBHOST_SMTP_PASSWORD" in (result.error or "") and smtp.starttls.received == []


async def test_a_server_requiring_starttls_is_a_configuration_fault_and_retried(
    smtp: Servers,
) -> None:
    result = await channel(smtp.starttls_port).send([delivery()])  # security "none"
    assert (result.ok, result.retry, result.status) == (False, True, "530"), result
    assert "JOBHOST_SMTP_SECURITY" in (result.error or "")


async def test_an_untrusted_certificate_is_refused_and_retried(smtp: Servers) -> None:
    ch = channel(smtp.starttls_port, smtp_security="starttls")  # system CAs only
    result = await ch.send([delivery()])
    assert (result.ok, result.retry, result.status) == (False, True, "tls"), result
    assert smtp.starttls.received == []


async def test_implicit_tls_delivers(smtp: Servers) -> None:
    ch = channel(smtp.tls_port, smtp_security="tls", tls_context=smtp.client_tls)
    result = await ch.send([delivery()])
    assert result.ok, result
    assert len(smtp.tls.received) == 1
