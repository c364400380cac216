"""`jobhost subscriptions ...`: manage notification subscriptions of the --tenant and look at
their delivery log, straight from PostgreSQL (as `jobhost jobs` does)."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from host.config import Settings
from host.errors import ConfigError, JobNotFound
from host.notify import store
from host.notify import subscriptions as subs
from host.notify.channels import close_channels, load_channels
from host.notify.outbox import DELIVERY_STATES, EVENTS
from host.output import emit
from host.services import Services, open_services
from host.store import jobs as job_store


def add_parsers(sub: Any) -> None:
    """The `subscriptions` command group, added to the top-level subparsers."""
    group = sub.add_parser("subscriptions", help="notification subscriptions and deliveries")
    cmds = group.add_subparsers(dest="subscriptions", required=True)
    create = cmds.add_parser("create", help="subscribe a destination (secret printed once)")
    create.add_argument("name")
    create.add_argument("--channel", default="webhook", help="webhook (default), email...")
    create.add_argument("--url", help="webhook URL (short for --destination '{\"url\": ...}')")
    create.add_argument("--destination", help="the channel's destination as JSON")
    create.add_argument("--event", action="append", dest="events", choices=list(EVENTS),
                        help="repeatable; default: all")  # fmt: skip
    create.add_argument("--job-type", action="append", dest="job_types", default=[],
                        help="only runs of this type (repeatable)")  # fmt: skip
    create.add_argument("--job", action="append", dest="jobs", default=[],
                        help="only runs of this job definition, by name (repeatable)")  # fmt: skip
    create.add_argument("--secret", help="whsec_... (default: generated)")
    create.set_defaults(run=cmd_create)
    cmds.add_parser("list", help="subscriptions with delivery counts").set_defaults(run=cmd_list)
    for name, help_text in (
        ("show", "one subscription"),
        ("enable", "enable (clears the failure streak)"),
        ("disable", "stop delivering (pending deliveries wait)"),
        ("delete", "delete with its delivery log"),
    ):
        action = cmds.add_parser(name, help=help_text)
        action.add_argument("id")
        action.set_defaults(run=cmd_action, action=name)
    deliveries = cmds.add_parser("deliveries", help="a subscription's deliveries and attempts")
    deliveries.add_argument("id")
    deliveries.add_argument("--state", choices=DELIVERY_STATES)
    deliveries.add_argument("--limit", type=int, default=20)
    deliveries.set_defaults(run=cmd_deliveries)
    again = cmds.add_parser("redeliver", help="send a delivery again now (fresh retries)")
    again.add_argument("delivery_id")
    again.set_defaults(run=cmd_redeliver)


async def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.destination:
        try:
            destination = orjson.loads(args.destination)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"--destination is not valid JSON: {exc}") from exc
    elif args.url:
        destination = {"url": args.url}
    else:
        raise ConfigError("give --url or --destination")
    fields: dict[str, Any] = {
        "name": args.name, "channel": args.channel, "destination": destination,
        "events": args.events or list(EVENTS), "job_types": args.job_types,
    }  # fmt: skip
    if args.secret:
        fields["secret"] = args.secret
    async with open_services(settings, run_migrations=False) as services:
        fields["job_ids"] = await _job_ids(services, settings.tenant, args.jobs)
        channels = load_channels(services.registry, settings)
        try:
            sub = await subs.create(services, channels, settings.tenant, fields)
        finally:
            await close_channels(channels)
    text = f"{_line(sub)}\n  secret {sub['secret']}  (shown once)"
    emit(args, sub, text)
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        found = await store.list_subscriptions(services.pool, settings.tenant)
    emit(args, {"subscriptions": found}, "\n".join(map(_line, found)) or "no subscriptions")
    return 0


async def cmd_action(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        pool, tenant = services.pool, settings.tenant
        if args.action == "delete":
            await store.delete_subscription(pool, tenant, args.id)
            emit(args, {"deleted": args.id}, f"deleted subscription {args.id}")
            return 0
        if args.action == "show":
            sub = await store.get_subscription(pool, tenant, args.id)
        else:
            sub = await store.update_subscription(
                pool, tenant, args.id, {"enabled": args.action == "enable"}
            )
    emit(args, sub, _line(sub))
    return 0


async def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        found = await store.list_deliveries(
            services.pool, settings.tenant, args.id, limit=args.limit, state=args.state
        )
    lines = []
    for d in found:
        lines.append(f"{d['id']}  {d['event_type']:<14} {d['state']:<9} attempts {d['attempts']}"
                     f"  run {d['run_id']}  {d['created_at']}")  # fmt: skip
        for a in d["attempt_log"]:
            lines.append(f"    #{a['attempt']} {'ok' if a['ok'] else 'failed'} {a['status'] or ''}"
                         f" {a['latency_ms'] or 0:.0f} ms {a['error'] or ''}".rstrip())  # fmt: skip
    emit(args, {"deliveries": found}, "\n".join(lines) or "no deliveries")
    return 0


async def cmd_redeliver(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, run_migrations=False) as services:
        d = await store.redeliver(services.pool, settings.tenant, args.delivery_id)
    emit(args, d, f"delivery {d['id']} ({d['event_type']}) is due again now")
    return 0


async def _job_ids(services: Services, tenant: str, names: list[str]) -> list[str]:
    """Job definition names to ids (a job's own notifications are a subscription filtered to
    it)."""
    ids = []
    for name in names:
        job = await job_store.get_job(services.pool, tenant, name)
        if job is None:
            raise JobNotFound(name)
        ids.append(job.id)
    return ids


def _line(sub: dict[str, Any]) -> str:
    state = "enabled" if sub["enabled"] else f"DISABLED ({sub['disabled_reason']})"
    if sub.get("times_disabled"):
        state += f"  disabled {sub['times_disabled']}x"
    counts = sub.get("counts") or {}
    return (
        f"{sub['id']}  {sub['name']:<20} {sub['channel']:<8} {','.join(sub['events'])}  {state}"
        f"  pending {counts.get('pending', 0)} ok {counts.get('succeeded', 0)}"
        f" failed {counts.get('failed', 0)}"
    )
