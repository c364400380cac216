"""`jobhost keys` and `jobhost api` as processes, and `jobhost dev` serving the API with a
ready admin key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from host.embedded import free_port
from tests.helpers import ROOT, jobhost, stop


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=60,
    )  # fmt: skip


def get(url: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout_s: float = 60) -> str:
    """Read stdout until a line matches; returns everything read."""
    seen = ""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if re.search(pattern, seen):
            return seen
    raise AssertionError(
        f"no {pattern!r} in output:\n{seen}\n{proc.stderr.read() if proc.stderr else ''}"
    )


@pytest.mark.slow
def test_keys_and_the_api_role(worker_env: dict[str, str]) -> None:
    created = cli("--json", "keys", "create", "--tenant", "acme", "--scope", "read",
                  "--name", "ci", env=worker_env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    key = record["key"]
    assert key.startswith("jh_") and record["scopes"] == ["read"] and record["tenant"] == "acme"
    listed = cli("keys", "list", env=worker_env)
    assert record["id"] in listed.stdout and key not in listed.stdout

    port = free_port()
    api = jobhost("api", "--port", str(port), cwd=ROOT, env=worker_env)
    try:
        wait_for_line(api, "listening on")
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/healthz") == (200, {"status": "ok"})
        assert get(f"{base}/api/v1/runs", key)[0] == 200
        revoked = cli("--json", "keys", "revoke", record["id"], env=worker_env)
        assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
        status, body = get(f"{base}/api/v1/runs", key)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    finally:
        stop(api)
    assert api.returncode == 0
    missing = cli("--json", "keys", "revoke", "nope", env=worker_env)
    assert missing.returncode == 1 and "not found" in missing.stderr


@pytest.mark.slow
def test_dev_serves_the_api_and_prints_an_admin_key(tmp_path: Path) -> None:
    (tmp_path / "plugins.toml").write_text((ROOT / "plugins.toml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBHOST_")}
    port = free_port()
    dev = subprocess.Popen(
        [sys.executable, "-m", "host", "dev", "--pg-port", str(free_port()), "--redis-port",
         str(free_port()), "--api-port", str(port), "--concurrency", "2"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out = wait_for_line(dev, r"admin key\s+jh_\S+")
        key = re.search(r"admin key\s+(jh_\S+)", out)
        assert key is not None and f"http://127.0.0.1:{port}/api/v1" in out
        status, types = get(f"http://127.0.0.1:{port}/api/v1/types", key.group(1))
        assert status == 200 and any(t["name"] == "noop" for t in types["types"])
    finally:
        stop(dev)
    assert dev.returncode == 0
