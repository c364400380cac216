"""The `jobhost` command: roles (dev, worker, scheduler, api, notifier), administration (migrate,
plugins, keys, subscriptions) and a client (enqueue, runs). Every command prints JSON with
--json, and text for people otherwise."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from host import limits
from host.api.app import serve
from host.api.validation import BodyValidator, load_api_schemas
from host.client import Client
from host.config import Settings, load_plugins_config
from host.definitions import JobDefinitions
from host.errors import ConfigError, JobhostError, NotFound, ValidationFailed
from host.logs import configure_logging
from host.notify import cli as notify_cli
from host.notify.notifier import Notifier
from host.output import emit
from host.policy import policy_as_dict
from host.registry import load_registry
from host.scheduler.scheduler import Scheduler
from host.services import Services, apply_migrations, open_services, resolve_urls
from host.store import apikeys
from host.store.jobs import JobDef
from host.triggers import Triggers, represent
from host.worker.worker import Worker

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        settings = Settings.from_env(
            database_url=args.database_url,
            redis_url=args.redis_url,
            namespace=args.namespace,
            tenant=args.tenant,
            plugins_file=args.plugins,
            state_dir=args.state_dir,
        )
        if args.command == "dev":
            return _dev(args, settings)
        command: Command = args.run
        return asyncio.run(command(args, settings))
    except ValidationFailed as exc:
        _fail(args, exc, details=[{"path": e.path, "message": e.message} for e in exc.errors])
        return 1
    except ConfigError as exc:
        _fail(args, exc)
        return 2
    except JobhostError as exc:
        _fail(args, exc)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobhost", description=__doc__)
    parser.add_argument("--database-url", help="PostgreSQL URL (env JOBHOST_DATABASE_URL)")
    parser.add_argument("--redis-url", help="Redis URL (env JOBHOST_REDIS_URL)")
    parser.add_argument("--namespace", help="Redis key namespace (env JOBHOST_NAMESPACE)")
    parser.add_argument("--tenant", help="tenant for enqueue and lookups (env JOBHOST_TENANT)")
    parser.add_argument("--plugins", type=Path, help="plugins.toml (env JOBHOST_PLUGINS_FILE)")
    parser.add_argument("--state-dir", type=Path, help="embedded servers' folder (.jobhost)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=["json", "text"], help="default: text on a tty")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run every role in one process (embedded servers default)")
    dev.add_argument("--pg-port", type=int, default=None, help="embedded PostgreSQL port")
    dev.add_argument("--redis-port", type=int, default=None, help="embedded Redis port")
    dev.add_argument("--api-port", type=int, default=8080, help="API port (busy: a free one)")
    _worker_options(dev)

    api = sub.add_parser("api", help="serve the REST API")
    api.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--rate-per-key", type=float, help="requests/s per API key (429 above)")
    api.set_defaults(run=cmd_api)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    key_create = keys.add_parser("create", help="create a key (printed once)")
    key_create.add_argument("--tenant", dest="key_tenant", required=True)
    key_create.add_argument(
        "--scope", action="append", dest="scopes", required=True, choices=list(apikeys.SCOPES),
        help="read, write or admin (repeatable; admin implies write implies read)",
    )  # fmt: skip
    key_create.add_argument("--name", default="", help="what the key is for")
    key_create.set_defaults(run=cmd_keys_create)
    key_list = keys.add_parser("list", help="keys (never their secret)")
    key_list.add_argument("--tenant", dest="key_tenant")
    key_list.set_defaults(run=cmd_keys_list)
    key_revoke = keys.add_parser("revoke", help="revoke a key by id")
    key_revoke.add_argument("id")
    key_revoke.set_defaults(run=cmd_keys_revoke)

    worker = sub.add_parser("worker", help="claim and run jobs")
    _worker_options(worker)
    worker.set_defaults(run=cmd_worker)

    sub.add_parser(
        "scheduler", help="cron, reconciliation, promotion (one leader acts)"
    ).set_defaults(run=cmd_scheduler)
    sub.add_parser(
        "notifier", help="deliver run events to subscriptions (webhooks, email...)"
    ).set_defaults(run=cmd_notifier)
    notify_cli.add_parsers(sub)

    jobs = sub.add_parser("jobs", help="job definitions and schedules").add_subparsers(
        dest="jobs", required=True
    )
    create = jobs.add_parser("create", help="define a job, optionally on a cron schedule")
    create.add_argument("name")
    create.add_argument("--type", required=True, dest="job_type")
    create.add_argument("--payload", default="{}", help="the payload as JSON (default {})")
    create.add_argument("--cron", help="5 fields, or 6 with seconds last (croniter)")
    create.add_argument("--timezone", default="UTC", help="IANA zone of the cron (default UTC)")
    create.add_argument("--misfire", choices=["skip", "once", "catch_up"], default="skip")
    create.add_argument("--catch-up-limit", type=int, default=10)
    create.add_argument(
        "--overlap", choices=["allow", "skip", "queue_one", "cancel_previous"], default="allow"
    )
    create.add_argument("--jitter", type=float, default=0.0, help="spread fires by up to S s")
    create.add_argument(
        "--backfill-on-resume", action="store_true",
        help="on resume, treat paused ticks as missed (the misfire policy decides)",
    )  # fmt: skip
    create.add_argument("--priority", type=int)
    create.set_defaults(run=cmd_jobs_create)
    jobs.add_parser("list", help="definitions with their next fire time").set_defaults(
        run=cmd_jobs_list
    )
    for name, help_text in (
        ("pause", "stop firing a schedule"),
        ("resume", "fire again from the next tick"),
        ("delete", "delete a definition (its runs stay)"),
        ("trigger", "run a definition now"),
        ("show", "one definition"),
    ):
        action = jobs.add_parser(name, help=help_text)
        action.add_argument("name")
        action.set_defaults(run=cmd_jobs_action, action=name)
    upcoming = jobs.add_parser("next", help="the next fire times of a schedule")
    upcoming.add_argument("name")
    upcoming.add_argument("--count", type=int, default=5)
    upcoming.set_defaults(run=cmd_jobs_next)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=cmd_migrate)
    sub.add_parser("plugins", help="list job types and policies").set_defaults(run=cmd_plugins)
    sub.add_parser("queues", help="queue depths per job type").set_defaults(run=cmd_queues)
    sub.add_parser("workers", help="live workers").set_defaults(run=cmd_workers)

    lim = sub.add_parser("limits", help="rate and concurrency limits per type")
    lim_sub = lim.add_subparsers(dest="limits", required=True)
    lim_sub.add_parser("show", help="limits in force, tokens, in flight").set_defaults(
        run=cmd_limits_show
    )
    lim_set = lim_sub.add_parser("set", help="change a type's limits now, without restarts")
    lim_set.add_argument("type")
    lim_set.add_argument("--rate", help='e.g. "10/s", "600/min", "100/hour"')
    lim_set.add_argument("--burst", type=int, help="token bucket capacity")
    lim_set.add_argument("--concurrency", type=int, help="most runs in flight at once")
    lim_set.add_argument("--lane-rate", help="the rate for each lane (tenant or payload key)")
    lim_set.add_argument("--lane-burst", type=int, help="each lane's bucket capacity")
    lim_set.add_argument("--lane-concurrency", type=int, help="most in flight per lane")
    lim_set.add_argument(
        "--unlimited", action="append", default=[], choices=list(limits.LIFTABLE),
        help="lift a limit (repeatable)",
    )  # fmt: skip
    lim_set.set_defaults(run=cmd_limits_set)
    lim_reset = lim_sub.add_parser("reset", help="back to the policy's limits")
    lim_reset.add_argument("type")
    lim_reset.set_defaults(run=cmd_limits_reset)

    enqueue = sub.add_parser("enqueue", help="enqueue one run")
    enqueue.add_argument("type")
    enqueue.add_argument("--payload", default="{}", help="the payload as JSON (default {})")
    enqueue.add_argument("--priority", type=int)
    enqueue.add_argument("--delay", type=float, dest="delay_s", help="seconds before it may run")
    enqueue.add_argument("--idempotency-key")
    enqueue.add_argument("--max-attempts", type=int)
    enqueue.add_argument("--timeout", type=float, dest="timeout_s", help="seconds per attempt")
    enqueue.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the result")
    enqueue.set_defaults(run=cmd_enqueue)

    runs = sub.add_parser("runs", help="look at runs").add_subparsers(dest="runs", required=True)
    show = runs.add_parser("show", help="one run with its attempts")
    show.add_argument("id")
    show.set_defaults(run=cmd_runs_show)
    listing = runs.add_parser("list", help="recent runs, newest first")
    listing.add_argument("--state")
    listing.add_argument("--type", dest="job_type")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(run=cmd_runs_list)
    _trigger_commands(sub)
    return parser


def _trigger_commands(sub: Any) -> None:
    """`jobhost triggers create|list|show|update|delete|deliveries`."""
    trig = sub.add_parser("triggers", help="inbound webhook triggers (POST /hooks/...)")
    tsub = trig.add_subparsers(dest="triggers", required=True)
    create = tsub.add_parser("create", help="create a trigger; prints its /hooks/ path")
    create.add_argument("name")
    create.add_argument("--scheme", required=True, choices=["standard", "github", "stripe", "hmac"])
    create.add_argument("--secret", action="append", required=True, dest="secrets",
                        help="a signing secret (repeatable; never shown again)")  # fmt: skip
    _trigger_options(create)
    create.set_defaults(run=cmd_triggers_create)
    update = tsub.add_parser("update", help="change a trigger; rotate its secrets")
    update.add_argument("name")
    update.add_argument("--add-secret", action="append", default=[], dest="add_secrets")
    update.add_argument("--remove-secret", action="append", default=[], dest="remove_secrets",
                        metavar="SECRET_ID")  # fmt: skip
    _trigger_options(update)
    update.add_argument("--enable", action="store_true", default=None, dest="enabled")
    update.set_defaults(run=cmd_triggers_update)
    tsub.add_parser("list", help="the tenant's triggers").set_defaults(run=cmd_triggers_list)
    for name, help_text in (("show", "one trigger"), ("delete", "delete a trigger")):
        action = tsub.add_parser(name, help=help_text)
        action.add_argument("name")
        action.set_defaults(run=cmd_triggers_action, action=name)
    log = tsub.add_parser("deliveries", help="deliveries received, newest first")
    log.add_argument("name")
    log.add_argument("--limit", type=int, default=20)
    log.add_argument("--cursor", type=int, help="next_cursor of the previous page")
    log.set_defaults(run=cmd_triggers_deliveries)


def _trigger_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--type", dest="job_type", help="the job type to run")
    target.add_argument("--job", help="or the job definition (by name) to run")
    parser.add_argument("--tolerance", type=int, dest="tolerance_s", help="timestamp skew, s")
    parser.add_argument("--mapping", help='payload template as JSON, e.g. {"ref": "{{/ref}}"}')
    parser.add_argument("--max-body", type=int, dest="max_body_bytes", help="bytes")
    parser.add_argument("--rate", type=float, help="deliveries per second (token bucket)")
    parser.add_argument("--burst", type=int, help="the bucket's size")
    for option in ("header", "encoding", "prefix", "timestamp-header", "id-header"):
        parser.add_argument(f"--hmac-{option}", help=f"hmac scheme: {option.replace('-', ' ')}")
    parser.add_argument("--disable", action="store_false", default=None, dest="enabled")


def _worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=10, help="handlers running at once")
    parser.add_argument("--types", help="comma-separated job types to serve (default: all)")
    parser.add_argument(
        "--prefetch",
        type=int,
        help="runs claimed ahead of the runners (default: adaptive, about 50 ms of work at"
        " the recent finishing rate, from the concurrency up to the claim batch)",
    )
    parser.add_argument("--claim-batch", type=int, default=200, help="most runs per claim")


# -- roles --------------------------------------------------------------------------------------


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    """Start embedded servers unless URLs are configured, then run every role in one process."""
    if settings.database_url and settings.redis_url:
        return asyncio.run(_serve_dev(args, settings))
    from host.embedded import DEFAULT_PG_PORT, DEFAULT_REDIS_PORT, EmbeddedServers

    embedded = EmbeddedServers(
        settings.state_dir,
        pg_port=args.pg_port or DEFAULT_PG_PORT,
        redis_port=args.redis_port or DEFAULT_REDIS_PORT,
    )
    with embedded as urls:
        settings = settings.with_urls(
            settings.database_url or urls.database_url, settings.redis_url or urls.redis_url
        )
        return asyncio.run(_serve_dev(args, settings))


async def _serve_dev(args: argparse.Namespace, settings: Settings) -> int:
    applied = await apply_migrations(resolve_urls(settings).database_url or "")
    async with open_services(settings) as services:
        worker = _worker(args, services)
        scheduler = Scheduler(services)
        notifier = Notifier(services)
        # A fresh admin key per start: printed once, like `jobhost keys create`.
        key, _ = await apikeys.create_key(services.pool, "default", ["admin"], "jobhost dev")

        def banner(url: str) -> None:
            print(
                f"jobhost dev\n  PostgreSQL  {settings.database_url}\n"
                f"  Redis       {settings.redis_url}\n"
                f"  migrations  {', '.join(applied) or 'up to date'}\n"
                "  roles       worker, scheduler, notifier, api\n"
                f"  API         {url}/api/v1  (OpenAPI: {url}/api/v1/openapi.json)\n"
                f"  admin key   {key}  (tenant default; a new one each start)\n"
                "Try, in another terminal from this folder:  "
                "jobhost enqueue noop --payload '{}' --wait 5\n"
                f"  or: curl -H 'Authorization: Bearer {key}' {url}/api/v1/runs\n"
                "Stop with Ctrl-C.",
                flush=True,
            )

        async def roles(stop: asyncio.Event) -> None:
            await asyncio.gather(
                worker.run(stop),
                scheduler.run(stop),
                notifier.run(stop),
                serve(services, stop, port=args.api_port, fallback_port=True, started=banner),
            )

        await _run_until_signalled(roles)
    return 0


async def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:

        def started(url: str) -> None:
            print(f"jobhost api listening on {url}/api/v1", flush=True)

        async def api(stop: asyncio.Event) -> None:
            await serve(
                services, stop, host=args.host, port=args.port, started=started,
                rate_per_key=args.rate_per_key,
            )  # fmt: skip

        await _run_until_signalled(api)
    return 0


async def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        await _run_until_signalled(Scheduler(services).run)
    return 0


async def cmd_notifier(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        await _run_until_signalled(Notifier(services).run)
    return 0


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        await _run_until_signalled(_worker(args, services).run)
    return 0


def _worker(args: argparse.Namespace, services: Services) -> Worker:
    """A worker configured by the worker options (shared by `worker` and `dev`)."""
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    return Worker(
        services,
        concurrency=args.concurrency,
        types=types,
        prefetch=args.prefetch,
        claim_batch=args.claim_batch,
    )


async def _run_until_signalled(role: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a role until SIGTERM or SIGINT asks it to stop (gracefully); a second signal stops
    it at once."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(role(stop))
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            task.cancel()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# -- administration -----------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = await apply_migrations(resolve_urls(settings).database_url or "")
    emit(args, {"applied": applied}, "applied: " + (", ".join(applied) or "nothing (up to date)"))
    return 0


async def cmd_plugins(args: argparse.Namespace, settings: Settings) -> int:
    registry = load_registry(load_plugins_config(settings.plugins_file))
    types: list[dict[str, Any]] = [
        {
            "name": t.name,
            "plugin": t.plugin,
            "source": t.source,
            "description": t.description,
            "handler": "async" if t.is_async else "sync (thread)",
            "policy": policy_as_dict(t.policy),
            "schema": t.schema,
        }
        for t in sorted(registry.types.values(), key=lambda t: t.name)
    ]
    lines = []
    for t in types:
        p = t["policy"]
        limits = ", ".join(f"{k} {p[k]}" for k in ("rate", "burst", "concurrency") if p[k])
        lines.append(
            f"{t['name']:<20} plugin {t['plugin']}  priority {p['priority']}, "
            f"max_attempts {p['max_attempts']}, timeout {p['timeout_s']:g}s"
            + (f", {limits}" if limits else "")
            + f"\n{'':<20} schema {t['source']}"
        )
    emit(args, {"types": types}, "\n".join(lines) or "no job types")
    return 0


async def cmd_queues(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        types = sorted(set(services.registry.types) | set(await services.queue.known_types()))
        depths = await services.queue.depths(types)
        totals = await services.queue.totals()
    data = {"types": {t: {"ready": n} for t, n in depths.items()}, **totals}
    text = "\n".join(f"{t:<20} ready {n}" for t, n in depths.items())
    text += f"\ndelayed {totals['delayed']}, in flight {totals['in_flight']}"
    emit(args, data, text)
    return 0


async def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        raw = await services.redis.hgetall(services.queue.keys.workers)
    workers = [orjson.loads(v) for v in raw.values()]
    text = "\n".join(
        f"{w['id']}  pid {w['pid']}  concurrency {w['concurrency']}  running {len(w['running'])}"
        for w in workers
    )
    emit(args, {"workers": workers}, text or "no live workers")
    return 0


async def cmd_limits_show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        types = sorted(services.registry.types)
        status = await services.queue.limit_status(types)
    lines = []
    for name, st in status.items():
        rate = f"{st['rate_per_s']:g}/s burst {st['burst']}" if st["rate_per_s"] else "unlimited"
        conc = f"{st['in_flight']}/{st['concurrency']}" if st["concurrency"] else st["in_flight"]
        tokens = f"{st['tokens']:g}" if st["tokens"] is not None else "-"
        lines.append(
            f"{name:<20} rate {rate:<22} tokens {tokens:<8} in flight {conc:<8} "
            f"throttled {st['throttled_claims']}"
        )
    emit(args, {"types": status}, "\n".join(lines))
    return 0


async def cmd_limits_set(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        result = await limits.set_override(
            services.pool, services.registry, args.type, unlimited=tuple(args.unlimited),
            **{f: getattr(args, f) for f in limits.LIMIT_FIELDS},
        )  # fmt: skip
        await limits.publish(services.queue, {args.type: result})
    emit(args, {"type": args.type, **result.as_dict()}, f"{args.type}: {_limits_text(result)}")
    return 0


async def cmd_limits_reset(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        result = await limits.reset_override(services.pool, services.registry, args.type)
        await limits.publish(services.queue, {args.type: result})
    emit(args, {"type": args.type, **result.as_dict()}, f"{args.type}: {_limits_text(result)}")
    return 0


def _limits_text(lim: limits.Limits) -> str:
    parts = []
    for prefix in ("", "lane_"):
        rate, burst = getattr(lim, prefix + "rate"), getattr(lim, prefix + "burst")
        concurrency = getattr(lim, prefix + "concurrency")
        parts.append(
            f"{prefix}rate {rate} burst {burst or 'default'}" if rate else f"{prefix}rate unlimited"
        )
        parts.append(f"{prefix}concurrency {concurrency or 'unlimited'}")
    return ", ".join(parts) + " (in force now)"


# -- API keys -----------------------------------------------------------------------------------


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        key, record = await apikeys.create_key(
            services.pool, args.key_tenant, args.scopes, args.name
        )
    text = (
        f"{key}\n  id {record.id}, tenant {record.tenant_id}, scopes {', '.join(record.scopes)}"
        "\n  shown once: only its hash is stored"
    )
    emit(args, {"key": key, **record.as_dict()}, text)
    return 0


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        keys = await apikeys.list_keys(services.pool, args.key_tenant)
    lines = [
        f"{k.id}  {k.prefix}...  {k.tenant_id:<12} {','.join(k.scopes):<16} "
        f"{'revoked' if k.revoked_at else 'active':<8} last used "
        f"{k.last_used_at.isoformat() if k.last_used_at else 'never'}  {k.name}"
        for k in keys
    ]
    emit(args, {"keys": [k.as_dict() for k in keys]}, "\n".join(lines) or "no keys")
    return 0


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        record = await apikeys.revoke(services.pool, args.id)
    if record is None:
        raise NotFound(f"API key {args.id} not found")
    emit(args, record.as_dict(), f"revoked key {record.id} ({record.prefix}...)")
    return 0


# -- client -------------------------------------------------------------------------------------


async def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--payload is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ConfigError("--payload must be a JSON object")
    async with open_services(settings, run_migrations=False) as services:
        client = Client(services)
        enqueued = await client.enqueue(
            args.type,
            payload,
            priority=args.priority,
            delay_s=args.delay_s,
            idempotency_key=args.idempotency_key,
            max_attempts=args.max_attempts,
            timeout_s=args.timeout_s,
        )
        data: dict[str, Any] = {"id": enqueued.id, "type": enqueued.type}
        data |= {"state": enqueued.state, "created": enqueued.created}
        verb = "enqueued" if enqueued.created else "already enqueued (idempotency key)"
        text = f"{verb} run {enqueued.id} ({enqueued.type}, {enqueued.state})"
        if args.wait:
            run = await client.wait(enqueued.id, args.wait)
            data = run
            text += f"\n{_run_text(run)}"
    emit(args, data, text)
    return 0


async def cmd_runs_show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        run = await Client(services).get(args.id)
    emit(args, run, _run_text(run))
    return 0


async def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        runs = await Client(services).list(
            state=args.state, job_type=args.job_type, limit=args.limit
        )
    text = "\n".join(
        f"{r['id']}  {r['type']:<16} {r['state']:<10} attempt {r['attempt']}/{r['max_attempts']}"
        f"  {r['created_at']}"
        for r in runs
    )
    emit(args, {"runs": runs}, text or "no runs")
    return 0


# -- job definitions ----------------------------------------------------------------------------


async def cmd_jobs_create(args: argparse.Namespace, settings: Settings) -> int:
    payload = _payload(args.payload)
    schedule = None
    if args.cron:
        schedule = {
            "cron": args.cron, "timezone": args.timezone, "misfire": args.misfire,
            "catch_up_limit": args.catch_up_limit, "overlap": args.overlap,
            "jitter_s": args.jitter, "backfill_on_resume": args.backfill_on_resume,
        }  # fmt: skip
    async with open_services(settings, run_migrations=False) as services:
        job = await JobDefinitions(services).create(
            args.name, args.job_type, payload, schedule=schedule, priority=args.priority
        )
    emit(args, job.as_dict(), f"created job {job.name} ({job.type})\n{_job_text(job)}")
    return 0


async def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        jobs = await JobDefinitions(services).list()
    text = "\n".join(_job_text(j) for j in jobs) or "no jobs"
    emit(args, {"jobs": [j.as_dict() for j in jobs]}, text)
    return 0


async def cmd_jobs_action(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        defs = JobDefinitions(services)
        if args.action == "trigger":
            run = await defs.trigger(args.name)
            data = {"id": run.id, "type": run.type, "state": run.state, "job": args.name}
            emit(args, data, f"triggered job {args.name}: run {run.id} ({run.state})")
            return 0
        if args.action == "delete":
            await defs.delete(args.name)
            emit(args, {"deleted": args.name}, f"deleted job {args.name}")
            return 0
        action = {"pause": defs.pause, "resume": defs.resume, "show": defs.get}[args.action]
        job = await action(args.name)
    emit(args, job.as_dict(), _job_text(job))
    return 0


async def cmd_jobs_next(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        job = await JobDefinitions(services).get(args.name)
    times = [t.isoformat() for t in JobDefinitions.next_times(job, args.count)]
    emit(args, {"job": job.name, "next": times}, "\n".join(times) or "not scheduled")
    return 0


def _job_text(job: JobDef) -> str:
    if job.schedule:
        s = job.schedule
        when = f"cron '{s.cron}' {s.timezone}, misfire {s.misfire.value}, overlap {s.overlap.value}"
        upcoming = JobDefinitions.next_times(job, 1)
        nxt = upcoming[0].isoformat() if job.enabled and upcoming else "-"
    else:
        when, nxt = "on demand", "-"
    state = "enabled" if job.enabled else "paused"
    return f"{job.name:<24} {job.type:<16} {state:<8} {when}  next {nxt}"


def _payload(raw: str) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--payload is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ConfigError("--payload must be a JSON object")
    return payload


def _run_text(run: dict[str, Any]) -> str:
    lines = [
        f"run {run['id']}  {run['type']}  {run['state']}  "
        f"attempt {run['attempt']}/{run['max_attempts']}  priority {run['priority']}",
        f"  payload  {orjson.dumps(run['payload']).decode()}",
        f"  created  {run['created_at']}   finished {run['finished_at'] or '-'}",
    ]
    if run.get("result") is not None:
        lines.append(f"  result   {orjson.dumps(run['result']).decode()}")
    if run.get("error"):
        lines.append(f"  error    {run['error']}")
    for a in run.get("attempts", []):
        lines.append(
            f"  attempt {a['attempt']}: {a['outcome']} on {a['worker']} at {a['finished_at']}"
            + (f" - {a['error']}" if a.get("error") else "")
        )
    return "\n".join(lines)


# -- triggers -----------------------------------------------------------------------------------


def _trigger_body(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The API request body the options describe (only those given)."""
    data = {n: getattr(args, n) for n in names if getattr(args, n, None) not in (None, [])}
    if args.job_type is not None:
        data["type"] = args.job_type
    if args.job is not None:
        data["job"] = args.job
    if args.mapping is not None:
        try:
            data["mapping"] = orjson.loads(args.mapping)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"--mapping is not valid JSON: {exc}") from exc
    hmac = {
        key: getattr(args, f"hmac_{key}")
        for key in ("header", "encoding", "prefix", "timestamp_header", "id_header")
        if getattr(args, f"hmac_{key}") is not None
    }
    if hmac:
        data["hmac"] = hmac
    return data


_TRIGGER_FIELDS = ("tolerance_s", "max_body_bytes", "rate", "burst", "enabled")


async def cmd_triggers_create(args: argparse.Namespace, settings: Settings) -> int:
    data = _trigger_body(args, "name", "scheme", "secrets", *_TRIGGER_FIELDS)
    BodyValidator(load_api_schemas()).check("trigger", data)
    async with open_services(settings, run_migrations=False) as services:
        trigger = await Triggers(services).create(data)
    shown = represent(trigger)
    emit(args, shown, f"created trigger {trigger.name}\n{_trigger_text(shown)}")
    return 0


async def cmd_triggers_update(args: argparse.Namespace, settings: Settings) -> int:
    data = _trigger_body(args, "add_secrets", "remove_secrets", *_TRIGGER_FIELDS)
    BodyValidator(load_api_schemas()).check("trigger_patch", data)
    async with open_services(settings, run_migrations=False) as services:
        shown = represent(await Triggers(services).update(args.name, data))
    emit(args, shown, _trigger_text(shown))
    return 0


async def cmd_triggers_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        shown = [represent(t) for t in await Triggers(services).list()]
    text = "\n".join(_trigger_text(t) for t in shown) or "no triggers"
    emit(args, {"triggers": shown}, text)
    return 0


async def cmd_triggers_action(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        if args.action == "delete":
            await Triggers(services).delete(args.name)
            emit(args, {"deleted": args.name}, f"deleted trigger {args.name}")
            return 0
        shown = represent(await Triggers(services).get(args.name))
    emit(args, shown, _trigger_text(shown))
    return 0


async def cmd_triggers_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        found = await Triggers(services).deliveries(args.name, limit=args.limit,
                                                    before=args.cursor)  # fmt: skip
    nxt = str(found[-1]["id"]) if len(found) == args.limit else None
    text = "\n".join(
        f"{d['id']:>8} {d['received_at']}  {d['status']} {d['reason']:<16} "
        f"{d['delivery_id'] or '-'}  {d['run_id'] or d['detail']}"
        for d in found
    )
    emit(args, {"deliveries": found, "next_cursor": nxt}, text or "no deliveries")
    return 0


def _trigger_text(t: dict[str, Any]) -> str:
    target = f"job {t['job']}" if t["job"] else f"type {t['type']}"
    rate = f"{t['rate']:g}/s burst {t['burst'] or 'default'}" if t["rate"] else "no rate limit"
    state = "enabled" if t["enabled"] else "disabled"
    return (
        f"{t['name']:<24} {t['scheme']:<8} {target:<24} {state}  {rate}\n"
        f"{'':<24} POST {t['path']}  secrets {', '.join(s['id'] for s in t['secrets'])}"
    )


# -- output -------------------------------------------------------------------------------------


def _fail(args: argparse.Namespace, exc: JobhostError, details: list[Any] | None = None) -> None:
    if getattr(args, "json", False):
        error = {"code": type(exc).__name__, "message": exc.message, "details": details or []}
        sys.stderr.write(orjson.dumps({"error": error}).decode() + "\n")
    else:
        sys.stderr.write(f"jobhost: error: {exc.message}\n")


__all__ = ["Services", "main"]
