"""Settings from the environment and the command line, and plugins.toml; validated once at start.

Settings are frozen and passed in; nothing here is a module-level singleton, so tests can build as
many independent hosts as they need.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from host.errors import ConfigError
from host.queue.keys import Keys

_ENV_PREFIX = "JOBHOST_"
#: Extra seconds the notifier allows a channel's send beyond notify_timeout_s.
NOTIFY_SEND_GRACE_S = 5.0
#: notify_lease_s must outlast the longest send (timeout plus grace) by at least this much, so
#: a send still running never has its claim taken over.
NOTIFY_LEASE_MARGIN_S = 1.0


@dataclass(frozen=True)
class Settings:
    """Everything a role needs to know to start. Each field has a JOBHOST_<NAME> variable."""

    database_url: str | None = None  #: PostgreSQL; None: the embedded server of `jobhost dev`
    redis_url: str | None = None  #: Redis 6.2+ or Valkey; None: the embedded server
    namespace: str = "default"  #: Redis key namespace (all keys share its hash tag)
    tenant: str = "default"  #: tenant of runs enqueued by the CLI and client
    plugins_file: Path = Path("plugins.toml")  #: which plugins load, and policy overrides
    state_dir: Path = Path(".jobhost")  #: embedded servers' data and their state file
    leader_lease_s: float = 10.0  #: scheduler leader lease; renewed every third of it
    scheduler_tick_s: float = 0.5  #: longest a leader sleeps between looks at due schedules
    misfire_grace_s: float = 60.0  #: a tick later than this was missed (see the misfire policy)
    sweep_interval_s: float = 10.0  #: how often the leader heals PostgreSQL/Redis drift
    sweep_age_s: float = 5.0  #: a run must be this old before the sweep re-enqueues it
    retention_days: float = 30.0  #: finished runs older than this are pruned; 0 keeps them
    dead_retention_days: float = 90.0  #: the same for dead runs (the dead letters); 0 keeps
    #: replay rows of inbound triggers whose scheme signs no timestamp (GitHub, plain HMAC)
    #: older than this are pruned; 0 keeps them (a captured delivery could otherwise run again)
    replay_retention_days: float = 0.0
    lease_s: float = 30.0  #: visibility timeout; workers extend it every lease_s / 3
    reap_interval_s: float = 2.0  #: how often a worker recovers expired leases
    shutdown_grace_s: float = 30.0  #: how long a stopping worker lets running handlers finish
    pool_size: int = 10  #: PostgreSQL connections per process and pool
    # Email notifications (webhooks/outbound/email.py); credentials come only from here.
    smtp_host: str | None = None  #: SMTP relay; None: email notifications wait (are retried)
    smtp_port: int = 0  #: 0: the usual port for smtp_security (25, 587 or 465)
    smtp_security: str = "none"  #: none, starttls (upgrade after connect) or tls (implicit TLS)
    smtp_username: str | None = None  #: log in with these (needs starttls or tls)
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "jobhost@localhost"  #: the From address of notification emails
    smtp_timeout_s: float = 10.0  #: per SMTP command and for connecting
    #: Starvation protection: seconds of waiting worth one priority level, so a steady stream of
    #: higher-priority runs delays lower ones by at most (difference x this); 0: strict priority.
    priority_ageing_s: float = 0.0
    # Outbound notifications (the notifier role, the webhook channel): docs/operations.md.
    #: Retry delays in seconds after each failed attempt (comma-separated); after the last one
    #: the delivery is failed. About a day by default, as Standard Webhooks senders do.
    notify_schedule: str = "5,300,1800,7200,18000,36000,36000"
    notify_jitter: float = 0.2  #: each delay is scaled by a random factor in [1-j, 1+j]
    notify_timeout_s: float = 15.0  #: one send: connect, request and answer
    notify_lease_s: float = 60.0  #: a notifier's claim; a killed one's sends restart after it
    notify_poll_s: float = 1.0  #: longest wait between looks at due deliveries (NOTIFY: sooner)
    notify_concurrency: int = 20  #: sends in flight per notifier
    #: sends in flight per subscription (about; across notifiers), so a slow receiver cannot
    #: take every send; 0: unbounded
    notify_per_endpoint: int = 5
    notify_disable_after: int = 5  #: deliveries failed in a row that disable a subscription (0: no)
    notify_digest_window_s: float = 300.0  #: a channel's digest holds events this long
    #: SSRF allow-list: comma-separated CIDRs a destination may resolve to despite the guard
    #: (loopback, private, link-local... are refused otherwise), e.g. "10.0.0.0/8,127.0.0.1/32".
    notify_allow_cidrs: str = ""
    #: Ports a webhook URL may use, comma-separated; "*": any (for tests and trusted set-ups).
    #: Applies to allow-listed CIDRs too: add an internal receiver's port here as well.
    notify_allow_ports: str = "80,443,8080,8443"

    def __post_init__(self) -> None:
        Keys(self.namespace)  # validates the namespace
        _check_smtp(self)
        if self.lease_s < 1:
            raise ConfigError("lease_s must be at least 1 second")
        if self.priority_ageing_s < 0:
            raise ConfigError("priority_ageing_s must be >= 0 (0: strict priority)")
        if self.pool_size < 2:
            raise ConfigError("pool_size must be at least 2")
        if self.leader_lease_s < 1:
            raise ConfigError("leader_lease_s must be at least 1 second")
        if not 0.05 <= self.scheduler_tick_s <= self.leader_lease_s / 2:
            raise ConfigError("scheduler_tick_s must be in [0.05, leader_lease_s / 2]")
        if min(self.misfire_grace_s, self.sweep_age_s, self.retention_days) < 0 or (
            min(self.dead_retention_days, self.replay_retention_days) < 0
        ):
            raise ConfigError("misfire_grace_s, sweep_age_s and the retention days must be >= 0")
        if self.sweep_interval_s <= 0:
            raise ConfigError("sweep_interval_s must be positive")
        self._check_notify()

    def _check_notify(self) -> None:
        self.retry_schedule()  # parses
        self.allow_ports()
        if not 0 <= self.notify_jitter < 1:
            raise ConfigError("notify_jitter must be in [0, 1)")
        if self.notify_timeout_s <= 0 or self.notify_poll_s <= 0:
            raise ConfigError("notify_timeout_s and notify_poll_s must be positive")
        longest = self.notify_timeout_s + NOTIFY_SEND_GRACE_S + NOTIFY_LEASE_MARGIN_S
        if self.notify_lease_s <= longest:
            raise ConfigError(
                f"notify_lease_s (JOBHOST_NOTIFY_LEASE_S={self.notify_lease_s:g}) must exceed "
                f"notify_timeout_s (JOBHOST_NOTIFY_TIMEOUT_S={self.notify_timeout_s:g}) + "
                f"{NOTIFY_SEND_GRACE_S:g}s send grace + {NOTIFY_LEASE_MARGIN_S:g}s margin = "
                f"{longest:g}s, or a send still running loses its claim"
            )
        if (
            self.notify_concurrency < 1
            or min(self.notify_disable_after, self.notify_per_endpoint) < 0
        ):
            raise ConfigError(
                "notify_concurrency must be >= 1, notify_disable_after and notify_per_endpoint >= 0"
            )
        if self.notify_digest_window_s < 0:
            raise ConfigError("notify_digest_window_s must be >= 0")

    def allow_ports(self) -> frozenset[int] | None:
        """The ports of notify_allow_ports; None: any ("*")."""
        items = [x.strip() for x in self.notify_allow_ports.split(",") if x.strip()]
        if items == ["*"]:
            return None
        if not all(x.isdigit() and 0 < int(x) < 65536 for x in items):
            raise ConfigError(
                f"notify_allow_ports (JOBHOST_NOTIFY_ALLOW_PORTS={self.notify_allow_ports!r}) "
                "must be comma-separated ports in 1-65535, or *"
            )
        return frozenset(int(x) for x in items)

    def retry_schedule(self) -> tuple[float, ...]:
        """The delays of notify_schedule, in seconds."""
        try:
            delays = tuple(float(x) for x in self.notify_schedule.split(",") if x.strip())
        except ValueError as exc:
            raise ConfigError(
                f"notify_schedule {self.notify_schedule!r} must be comma-separated seconds"
            ) from exc
        if any(d < 0 for d in delays):
            raise ConfigError("notify_schedule delays must be >= 0")
        return delays

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from JOBHOST_* variables, then `overrides` (None values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, cls)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_urls(self, database_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, redis_url=redis_url)


def _convert(name: str, raw: str, cls: type[Settings]) -> Any:
    default = next(f.default for f in fields(cls) if f.name == name)
    try:
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, int):
            return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a number") from exc
    return raw


SMTP_SECURITY = ("none", "starttls", "tls")


def _check_smtp(s: Settings) -> None:
    """SMTP settings fail at start-up, naming the variable, not at the first email."""
    if s.smtp_security not in SMTP_SECURITY:
        raise ConfigError(
            f"JOBHOST_SMTP_SECURITY must be none, starttls or tls, not {s.smtp_security!r}"
        )
    if not 0 <= s.smtp_port <= 65535:
        raise ConfigError(f"JOBHOST_SMTP_PORT must be 1-65535 (0: by security), not {s.smtp_port}")
    if not s.smtp_timeout_s > 0:
        raise ConfigError("JOBHOST_SMTP_TIMEOUT_S must be positive")
    for name in ("smtp_host", "smtp_username", "smtp_password", "smtp_from"):
        value = getattr(s, name)
        if value is not None and any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{_ENV_PREFIX}{name.upper()} must not contain CR, LF or NUL")
    address = parseaddr(s.smtp_from)[1]  # "Jobhost <jobhost@example.com>" is allowed
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address):
        raise ConfigError(f"JOBHOST_SMTP_FROM={s.smtp_from!r} is not an email address")
    if (s.smtp_username is None) != (s.smtp_password is None):
        raise ConfigError("JOBHOST_SMTP_USERNAME and JOBHOST_SMTP_PASSWORD go together")
    if s.smtp_username is not None and s.smtp_security == "none":
        raise ConfigError(
            "JOBHOST_SMTP_USERNAME needs JOBHOST_SMTP_SECURITY=starttls or tls: "
            "credentials are never sent in clear"
        )


@dataclass(frozen=True)
class PluginsConfig:
    """plugins.toml: plugin modules to load, entry-point switches and per-type policy."""

    modules: tuple[str, ...] = ()  #: importable module names, e.g. "plugins.noop"
    entry_points: bool = True  #: also load installed packages' `jobhost.plugins` entry points
    disabled: frozenset[str] = frozenset()  #: entry-point names not to load
    types: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  #: policy overrides
    #: [[subscriptions]]: notification subscriptions synced at notifier start (host.notify)
    subscriptions: tuple[Mapping[str, Any], ...] = ()
    source: str = "(defaults)"  #: the file it came from, for messages


def load_plugins_config(path: Path) -> PluginsConfig:
    """Parse plugins.toml; a missing file means no modules and entry points only."""
    if not path.exists():
        return PluginsConfig(source=str(path))
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = set(data) - {"plugins", "types", "subscriptions"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    plugins = data.get("plugins", {})
    types = data.get("types", {})
    if not isinstance(plugins, dict) or not isinstance(types, dict):
        raise ConfigError(f"{path}: [plugins] and [types] must be tables")
    unknown = set(plugins) - {"modules", "entry_points", "disable"}
    if unknown:
        raise ConfigError(f"{path}: [plugins] has unknown key(s) {', '.join(sorted(unknown))}")
    modules = plugins.get("modules", [])
    disable = plugins.get("disable", [])
    if not _str_list(modules) or not _str_list(disable):
        raise ConfigError(f"{path}: [plugins] modules and disable must be lists of strings")
    entry_points = plugins.get("entry_points", True)
    if not isinstance(entry_points, bool):
        raise ConfigError(f"{path}: [plugins] entry_points must be true or false")
    if not all(isinstance(v, dict) for v in types.values()):
        raise ConfigError(f"{path}: each [types.NAME] must be a table of policy fields")
    subscriptions = data.get("subscriptions", [])
    if not isinstance(subscriptions, list) or not all(isinstance(v, dict) for v in subscriptions):
        raise ConfigError(f"{path}: [[subscriptions]] must be an array of tables")
    return PluginsConfig(
        subscriptions=tuple(subscriptions),
        modules=tuple(modules),
        entry_points=entry_points,
        disabled=frozenset(disable),
        types=types,
        source=str(path),
    )


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)
