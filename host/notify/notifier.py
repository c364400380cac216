"""The notifier role: claims due deliveries from the outbox, sends them through their channel and
records every attempt.

Several notifiers may run: claims take rows FOR UPDATE SKIP LOCKED and lease them for
`notify_lease_s`, and every write after a send is fenced by the claim's token, so two notifiers
never send the same attempt at once and a SIGKILLed notifier's deliveries go out again once its
lease expires (at-least-once: receivers dedupe on the event id). A notifier wakes on the outbox
trigger's NOTIFY, and polls every `notify_poll_s` for retries coming due.

Digests: a channel whose `digest_key(delivery)` is not None has the delivery held with the
others of that key (per subscription) until `notify_digest_window_s` after the first of them was
written; then one `send()` carries the whole group and the attempt is recorded on each member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from host.config import NOTIFY_SEND_GRACE_S
from host.notify import store
from host.notify.channels import close_channels, load_channels
from host.notify.store import Claimed, Disabled, Outcome
from host.notify.subscriptions import sync_config
from host.services import Services
from host.store.db import connect
from webhooks.outbound.channel import Channel, Delivery, SendResult

log = logging.getLogger("jobhost.notifier")


@dataclass
class NotifierStats:
    sent: int = 0  #: send() calls
    succeeded: int = 0  #: deliveries recorded as succeeded
    retried: int = 0
    failed: int = 0
    lost_claims: int = 0  #: results not recorded because another notifier took the claim
    disabled: int = 0  #: subscriptions this notifier disabled (410 Gone or a failure streak)


def next_delay(
    schedule: Sequence[float], attempt: int, jitter: float, retry_after_s: float | None
) -> float | None:
    """Seconds until the retry after failed attempt number `attempt` (1-based within the current
    schedule), or None when the schedule is spent. Jitter spreads retries of an outage."""
    if attempt > len(schedule):
        return None
    delay = schedule[attempt - 1] * random.uniform(1 - jitter, 1 + jitter)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


class Notifier:
    """One notifier process's loop. `channels` defaults to those of the registry's hook."""

    def __init__(self, services: Services, channels: Mapping[str, Channel] | None = None) -> None:
        self.services = services
        self.settings = services.settings
        self.schedule = self.settings.retry_schedule()
        self._own_channels = channels is None
        self.channels = dict(channels) if channels is not None else None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = NotifierStats()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; sends in flight then finish (bounded by their timeout)."""
        channels = self.channels
        if channels is None:
            channels = load_channels(self.services.registry, self.settings)
        self.channels = channels
        await sync_config(self.services, channels)
        listener = await self._listen()
        try:
            await self._loop(stop, channels)
        finally:
            if self._inflight:
                await asyncio.wait(self._inflight)
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()
            if self._own_channels:
                await close_channels(channels)

    async def _listen(self) -> asyncpg.Connection | None:
        """LISTEN for the outbox trigger; without it (a pooler in the way) polling still works."""
        try:
            conn = await connect(self.settings.database_url or "")
            await conn.add_listener("jobhost_deliveries", lambda *_: self._wake.set())
            return conn
        except Exception as exc:
            log.warning("cannot LISTEN for new deliveries (%s); polling only", exc)
            return None

    async def _loop(self, stop: asyncio.Event, channels: Mapping[str, Channel]) -> None:
        errors = 0
        while not stop.is_set():
            self._wake.clear()
            free = self.settings.notify_concurrency - len(self._inflight)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    claimed = await store.claim_due(
                        self.services.pool, free, self.settings.notify_lease_s,
                        self.settings.notify_per_endpoint,
                    )  # fmt: skip
                    errors = 0
                    await self._dispatch(claimed, channels)
                except Exception as exc:
                    errors += 1
                    log.warning("claiming deliveries failed: %s: %s", type(exc).__name__, exc)
                    await _sleep_or(stop, min(self.settings.notify_poll_s * errors, 30.0))
                    continue
            if claimed and len(claimed) >= free:
                await asyncio.sleep(0)  # more may be due: claim again at once
                continue
            await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        if self._inflight and len(self._inflight) >= self.settings.notify_concurrency:
            waits.append(asyncio.ensure_future(asyncio.wait(set(self._inflight))))
        _, pending = await asyncio.wait(
            waits, timeout=self.settings.notify_poll_s, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()

    async def _dispatch(self, claimed: list[Claimed], channels: Mapping[str, Channel]) -> None:
        """Turn claimed rows into sends: alone, held for a digest, or with their digest group."""
        groups: dict[tuple[str, str], list[Claimed]] = {}
        for c in claimed:
            channel = channels.get(c.channel)
            if channel is None:
                self._spawn(self._unsendable(c))
                continue
            key = _digest_key(channel, _delivery(c))
            if key is None:
                self._spawn(self._send(channel, [c]))
            elif c.digest_key is None:
                await store.hold_for_digest(
                    self.services.pool, c, key, self.settings.notify_digest_window_s
                )
            else:
                groups.setdefault((c.subscription_id, c.digest_key), []).append(c)
        for (sub_id, key), members in groups.items():
            members += await store.claim_digest(
                self.services.pool, sub_id, key, self.settings.notify_lease_s
            )
            self._spawn(self._send(channels[members[0].channel], members))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a send slot (and maybe an endpoint's) is free: claim again

    async def _unsendable(self, c: Claimed) -> None:
        result = SendResult(ok=False, status="no_channel",
                            error=f"no channel named {c.channel!r} is loaded")  # fmt: skip
        await self._record([c], result)

    async def _send(self, channel: Channel, members: list[Claimed]) -> None:
        timeout = self.settings.notify_timeout_s + NOTIFY_SEND_GRACE_S
        try:
            result = await asyncio.wait_for(
                channel.send([_delivery(c) for c in members]), timeout=timeout
            )
        except TimeoutError:
            result = SendResult(ok=False, status="timeout", error=f"send took over {timeout:g}s")
        except Exception as exc:  # a channel must not raise; if it does, it is a failed attempt
            log.exception("channel %s raised while sending", channel.name)
            result = SendResult(ok=False, status="error", error=f"{type(exc).__name__}: {exc}")
        self.stats.sent += 1
        await self._record(members, result)

    async def _record(self, members: list[Claimed], result: SendResult) -> None:
        """Record the attempt on each member, each by its own schedule: a digest member whose
        schedule is spent fails, the others are retried (and claimed together again)."""
        for c in members:
            delay = next_delay(
                self.schedule, c.attempts + 1 - c.retry_base, self.settings.notify_jitter,
                result.retry_after_s,
            )  # fmt: skip
            outcome = self._outcome(c, result, delay)
            try:
                async with self.services.pool.acquire() as conn:
                    kept, disabled = await store.record_attempt(
                        conn, c, outcome, notifier=self.id,
                        disable_after=self.settings.notify_disable_after,
                    )  # fmt: skip
            except Exception as exc:
                log.warning("recording delivery %s failed: %s (it is sent again after its "
                            "lease)", c.id, exc)  # fmt: skip
                continue
            if disabled is not None:
                self._disabled(disabled)
            if not kept:
                self.stats.lost_claims += 1
            elif outcome.state == "succeeded":
                self.stats.succeeded += 1
            elif outcome.state == "failed":
                self.stats.failed += 1
            else:
                self.stats.retried += 1

    def _disabled(self, d: Disabled) -> None:
        """The owner notice (fault matrix O2): one WARNING line with who and why, besides the
        subscription's disabled_reason, disabled_at and times_disabled."""
        self.stats.disabled += 1
        log.warning(
            "subscription %s (%s) of tenant %s disabled: %s; re-enable it with `jobhost "
            "subscriptions enable %s` once the destination is fixed",
            d.name, d.subscription_id, d.tenant_id, d.reason, d.subscription_id,
            extra={"subscription_id": d.subscription_id, "subscription": d.name,
                   "tenant": d.tenant_id, "disabled_reason": d.reason,
                   "times_disabled": d.times_disabled},
        )  # fmt: skip

    def _outcome(self, c: Claimed, result: SendResult, delay: float | None) -> Outcome:
        common: dict[str, Any] = {"status": result.status, "excerpt": result.response_excerpt,
                                  "latency_ms": result.latency_ms}  # fmt: skip
        if result.ok:
            return Outcome(ok=True, state="succeeded", next_in_s=0, error=None,
                           disable_reason=None, **common)  # fmt: skip
        error = result.error or f"failed ({result.status})"
        disable = f"the destination asked to stop: {error}" if result.disable else None
        # delay is None: next_delay found the schedule spent
        if result.disable or not result.retry or delay is None:
            if result.retry and delay is None:
                error += f" (gave up after {c.attempts + 1} attempts)"
            return Outcome(ok=False, state="failed", next_in_s=0, error=error,
                           disable_reason=disable, **common)  # fmt: skip
        return Outcome(ok=False, state="pending", next_in_s=delay, error=error,
                       disable_reason=None, **common)  # fmt: skip


def _delivery(c: Claimed) -> Delivery:
    return Delivery(
        id=c.id, event_id=c.event_id, event_type=c.event_type, body=c.body,
        destination=c.destination, secret=c.secret, subscription_id=c.subscription_id,
        attempt=c.attempts + 1,
    )  # fmt: skip


def _digest_key(channel: Channel, delivery: Delivery) -> str | None:
    try:
        return channel.digest_key(delivery)
    except Exception:
        log.exception("channel %s digest_key failed; sending alone", channel.name)
        return None


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
