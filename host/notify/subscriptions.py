"""Subscriptions as users change them (API, CLI, plugins.toml): checked against their channel
before they are saved, with a signing secret generated when none is given.

The secret is shown once, in the answer to the create (or to a change that sets it); listings
never carry it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Mapping
from typing import Any

import jsonschema

from host.config import load_plugins_config
from host.errors import ConfigError, FieldError, JobhostError, ValidationFailed
from host.notify import store
from host.notify.outbox import EVENTS
from host.schemas import payload_errors
from host.services import Services
from webhooks.outbound.channel import Channel
from webhooks.outbound.webhook import SECRET_PREFIX, new_secret

log = logging.getLogger("jobhost.notify")


def check_secret(secret: str) -> None:
    """A Standard Webhooks secret: whsec_ and 24 to 64 bytes in base64."""
    try:
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not secret.startswith(SECRET_PREFIX) or not 24 <= len(raw) <= 64:
        raise ValidationFailed(
            "secret", [FieldError("/secret", "expected whsec_ and base64 of 24 to 64 bytes")]
        )


async def check_fields(
    fields: Mapping[str, Any], channels: Mapping[str, Channel], *, channel_name: str
) -> None:
    """The channel exists and accepts the destination (schema, then its own check in a thread:
    the webhook channel resolves the URL's name)."""
    channel = channels.get(channel_name)
    if channel is None:
        loaded = ", ".join(sorted(channels)) or "none"
        raise ValidationFailed(
            "channel", [FieldError("/channel", f"no channel {channel_name!r} (loaded: {loaded})")]
        )
    if "events" in fields:
        unknown = set(fields["events"]) - set(EVENTS)
        if unknown:
            raise ValidationFailed(
                "events", [FieldError("/events", f"unknown {sorted(unknown)}; known: {EVENTS}")]
            )
    if "secret" in fields and fields["secret"] is not None:
        check_secret(fields["secret"])
    if "destination" in fields:
        validator = jsonschema.Draft202012Validator(channel.destination_schema)
        errors = payload_errors(validator, fields["destination"])
        if errors:
            raise ValidationFailed(
                f"destination for channel {channel_name!r}",
                [FieldError("/destination" + e.path, e.message) for e in errors],
            )
        await asyncio.to_thread(channel.check_destination, fields["destination"])


async def create(
    services: Services, channels: Mapping[str, Channel], tenant_id: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """Check and save a subscription; the answer carries its secret (the only time)."""
    await check_fields(fields, channels, channel_name=fields["channel"])
    fields = {**fields, "secret": fields.get("secret") or new_secret()}
    sub = await store.create_subscription(services.pool, tenant_id, fields)
    sub["secret"] = fields["secret"]
    return sub


async def update(
    services: Services,
    channels: Mapping[str, Channel],
    tenant_id: str,
    sub_id: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    current = await store.get_subscription(services.pool, tenant_id, sub_id)
    await check_fields(changes, channels, channel_name=current["channel"])
    sub = await store.update_subscription(services.pool, tenant_id, sub_id, changes)
    if changes.get("secret"):
        sub["secret"] = changes["secret"]
    return sub


def config_subscriptions(services: Services) -> list[dict[str, Any]]:
    """The `[[subscriptions]]` of plugins.toml, each with tenant (default: the settings'),
    name, channel, destination, events and optional job_types, enabled, and the signing secret
    from `secret` or the environment variable named by `secret_env`."""
    config = load_plugins_config(services.settings.plugins_file)
    out = []
    for i, raw in enumerate(config.subscriptions):
        where = f"{config.source} [[subscriptions]] #{i + 1}"
        unknown = set(raw) - {"tenant", "name", "channel", "destination", "events", "job_types",
                              "enabled", "secret", "secret_env"}  # fmt: skip
        missing = {"name", "channel", "destination"} - set(raw)
        if unknown or missing:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        secret = raw.get("secret")
        if raw.get("secret_env"):
            secret = os.environ.get(str(raw["secret_env"]))
            if not secret:
                raise ConfigError(f"{where}: environment variable {raw['secret_env']} is not set")
        out.append({
            "tenant": raw.get("tenant", services.settings.tenant), "name": raw["name"],
            "channel": raw["channel"], "destination": raw["destination"],
            "events": raw.get("events", list(EVENTS)), "job_types": raw.get("job_types", []),
            "enabled": raw.get("enabled", True), "given_secret": secret,
            "secret": secret or new_secret(), "where": where,
        })  # fmt: skip
    return out


async def sync_config(services: Services, channels: Mapping[str, Channel]) -> int:
    """Make the database's configured subscriptions match plugins.toml (at notifier start)."""
    subs = config_subscriptions(services)
    for sub in subs:
        try:
            await check_fields(sub, channels, channel_name=sub["channel"])
        except JobhostError as exc:
            raise ConfigError(f"{sub['where']}: {exc.message}") from exc
    async with services.pool.acquire() as conn:
        count = await store.sync_config_subscriptions(conn, subs)
    if count:
        log.info("%d subscriptions from %s", count, services.settings.plugins_file)
    return count
