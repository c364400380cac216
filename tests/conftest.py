"""Real servers for the suite: PostgreSQL and Redis, embedded (started once per session on free
ports) unless JOBHOST_TEST_DATABASE_URL and JOBHOST_TEST_REDIS_URL name servers to use instead.

Isolation: every test gets its own database cloned from a migrated template (milliseconds) and
its own Redis key namespace, deleted afterwards. Nothing outside what the suite created is ever
touched, so the suite can run against shared servers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from host.config import Settings, load_plugins_config
from host.embedded import EmbeddedServers, ServerURLs
from host.registry import Registry, load_registry
from host.services import Services, open_services
from host.store.db import migrate
from tests import plugin_fixtures

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerURLs]:
    db = os.environ.get("JOBHOST_TEST_DATABASE_URL")
    redis = os.environ.get("JOBHOST_TEST_REDIS_URL")
    if db and redis:
        yield ServerURLs(db, redis)
        return
    root = tmp_path_factory.mktemp("servers")
    embedded = EmbeddedServers(root, pg_port=None, redis_port=None, write_state=False, fast=True)
    with embedded as urls:
        yield urls


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def template_db(servers: ServerURLs) -> Iterator[str]:
    """A migrated template database, created once per session (name unique to this run)."""
    import asyncio

    name = f"jobhost_tpl_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(servers.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(_with_database(servers.database_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(servers.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def database_url(servers: ServerURLs, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    name = f"jobhost_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield _with_database(servers.database_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def namespace(servers: ServerURLs) -> Iterator[str]:
    """A fresh Redis key namespace; every key in it is deleted afterwards, whoever wrote it (the
    test, or a CLI or server subprocess it started), so a shared Redis keeps nothing."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    client = SyncRedis.from_url(servers.redis_url)
    try:
        for key in client.scan_iter(match=f"jh:\\{{{name}\\}}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


class PrivateRedis:
    """A Redis server of one test's own (no persistence), so the test may FLUSHALL it or restart
    it empty; stopped by its own PID afterwards."""

    def __init__(self, directory: Path) -> None:
        from host.embedded import free_port

        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis as sync_redis

        from host.embedded import _redis_exe

        self.proc = subprocess.Popen(
            [_redis_exe(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = sync_redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except sync_redis.ConnectionError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "no redis"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart_empty(self) -> None:
        """Crash and come back with nothing: a restart without persistence."""
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis_url(private_redis: PrivateRedis) -> str:
    return private_redis.url


@pytest.fixture
async def redis(servers: ServerURLs, namespace: str) -> AsyncIterator[Redis]:
    """A Redis client (the `namespace` fixture deletes the test's keys afterwards)."""
    client = Redis.from_url(servers.redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
def settings(servers: ServerURLs, database_url: str, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=servers.redis_url,
        namespace=namespace,
        plugins_file=ROOT / "plugins.toml",
        state_dir=tmp_path / "state",
        lease_s=5.0,
        reap_interval_s=0.5,
        shutdown_grace_s=5.0,
    )


@pytest.fixture
def registry() -> Registry:
    """The bundled plugins plus the test job types of tests/plugin_fixtures.py."""
    return load_registry(load_plugins_config(ROOT / "plugins.toml"), extra=[plugin_fixtures])


@pytest.fixture
async def services(settings: Settings, registry: Registry, redis: Redis) -> AsyncIterator[Services]:
    async with open_services(settings, registry) as svc:
        yield svc


@pytest.fixture
def worker_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    plugins = tmp_path / "plugins.toml"
    plugins.write_text('[plugins]\nmodules = ["plugins.noop", "tests.plugin_fixtures"]\n')
    return {
        "JOBHOST_DATABASE_URL": settings.database_url or "",
        "JOBHOST_REDIS_URL": settings.redis_url or "",
        "JOBHOST_NAMESPACE": settings.namespace,
        "JOBHOST_PLUGINS_FILE": str(plugins),
        "JOBHOST_LEASE_S": "3",
        "JOBHOST_REAP_INTERVAL_S": "0.5",
        "JOBHOST_SHUTDOWN_GRACE_S": "2",
        "ROOT": str(ROOT),
    }


# -- a real SMTP server's handler (aiosmtpd), shared by the email tests -----------------------


@dataclass
class FaultHandler:
    """aiosmtpd handler: records each message; `mode` picks how the next conversation fails."""

    slow_s: ClassVar[float] = 1.0  #: how long the "slow" mode holds the answer to DATA
    mode: str = "accept"  #: accept, tempfail421, tempfail451, permfail, slow, drop
    refuse: set[str] = field(default_factory=set)  #: recipients answered with 550
    received: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.mode == "tempfail421":
            return "421 4.3.2 service shutting down, try later"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.mode == "permfail" or address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mode == "tempfail451":
            return "451 4.3.0 local problem, try later"
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope, parsed))
        if self.mode == "drop":  # the message got in, but the 250 never goes out
            assert server.transport is not None
            server.transport.abort()
        return "250 2.0.0 queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"u", b"pw")
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535
