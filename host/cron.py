"""Cron decisions, without I/O: when a schedule fires, what to do with ticks missed while no
scheduler ran (misfire policy), and how far to spread a fire (jitter).

Expressions are croniter's: five fields (minute hour day month weekday) or six, the sixth being
seconds. They are matched against the wall clock of the schedule's IANA time zone (UTC by
default). Daylight-saving policy (docs/scheduler.md):

- Schedules whose hour field is `*` are interval-like and follow real time: a wall time in the
  spring-forward gap does not exist and does not fire; the repeated hour of the fall-back overlap
  fires twice, so `*/5 * * * *` keeps one fire every 5 minutes of real time.
- Other schedules name wall-clock hours and fire once per matching wall time: a time in the gap
  fires at the first instant after the gap (gap times collapsing onto it fire once); a time that
  happens twice fires at its first occurrence only.

All instants returned are aware UTC datetimes, strictly increasing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from host.errors import FieldError, ValidationFailed

#: Larger than any UTC offset change at a transition, so every candidate near one is seen.
_MARGIN = timedelta(hours=3)
#: Most ticks `due_ticks` looks at in one call; older ones count as missed without being listed.
MAX_TICKS_PER_CALL = 2_000


class Misfire(StrEnum):
    """What to do with ticks missed by more than the grace period (all schedulers were down)."""

    SKIP = "skip"  #: drop them; fire again from the next on-time tick
    ONCE = "once"  #: fire the latest missed tick once (coalesce)
    CATCH_UP = "catch_up"  #: fire every missed tick, up to catch_up_limit (the latest ones)


class Overlap(StrEnum):
    """What a cron fire does when earlier runs of the same job are still active."""

    ALLOW = "allow"  #: fire anyway
    SKIP = "skip"  #: do not fire while any run of the job is active
    QUEUE_ONE = "queue_one"  #: fire unless a run of the job is already waiting to start
    CANCEL_PREVIOUS = "cancel_previous"  #: cancel the active runs, then fire


@dataclass(frozen=True, slots=True)
class Schedule:
    """A job definition's schedule, as stored in jobs.schedule (JSON)."""

    cron: str
    timezone: str = "UTC"
    misfire: Misfire = Misfire.SKIP
    catch_up_limit: int = 10  #: most missed ticks fired by catch_up
    overlap: Overlap = Overlap.ALLOW
    jitter_s: float = 0.0  #: each fire is delayed by up to this many seconds
    #: On resume after a pause: False (default) restarts from the next tick, nothing owed;
    #: True treats the paused ticks as missed, so the misfire policy decides (once, catch_up).
    backfill_on_resume: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def as_dict(self) -> dict[str, object]:
        return {
            "cron": self.cron,
            "timezone": self.timezone,
            "misfire": self.misfire.value,
            "catch_up_limit": self.catch_up_limit,
            "overlap": self.overlap.value,
            "jitter_s": self.jitter_s,
            "backfill_on_resume": self.backfill_on_resume,
        }


def parse_schedule(data: dict[str, object], *, path: str = "/schedule") -> Schedule:
    """A Schedule from its JSON form, validated; ValidationFailed names each bad field."""
    errors: list[FieldError] = []
    known = {"cron", "timezone", "misfire", "catch_up_limit", "overlap", "jitter_s"}
    known.add("backfill_on_resume")
    for key in sorted(set(data) - known):
        errors.append(FieldError(f"{path}/{key}", "unknown field"))
    cron = data.get("cron")
    if not isinstance(cron, str) or not _valid_cron(cron):
        errors.append(
            FieldError(
                f"{path}/cron",
                f"{cron!r} is not a 5- or 6-field cron expression or an alias "
                f"({', '.join(sorted(ALIASES))})",
            )
        )
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str) or not _valid_zone(timezone):
        errors.append(FieldError(f"{path}/timezone", f"{timezone!r} is not an IANA time zone"))
    misfire = data.get("misfire", Misfire.SKIP.value)
    if misfire not in {m.value for m in Misfire}:
        errors.append(FieldError(f"{path}/misfire", "must be one of skip, once, catch_up"))
    overlap = data.get("overlap", Overlap.ALLOW.value)
    if overlap not in {o.value for o in Overlap}:
        choices = ", ".join(o.value for o in Overlap)
        errors.append(FieldError(f"{path}/overlap", f"must be one of {choices}"))
    limit = data.get("catch_up_limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        errors.append(FieldError(f"{path}/catch_up_limit", "must be an integer in [1, 1000]"))
    jitter = data.get("jitter_s", 0.0)
    if not isinstance(jitter, int | float) or isinstance(jitter, bool) or not 0 <= jitter <= 3600:
        errors.append(FieldError(f"{path}/jitter_s", "must be a number of seconds in [0, 3600]"))
    backfill = data.get("backfill_on_resume", False)
    if not isinstance(backfill, bool):
        errors.append(FieldError(f"{path}/backfill_on_resume", "must be true or false"))
    if errors:
        raise ValidationFailed("schedule", errors)
    assert isinstance(cron, str) and isinstance(timezone, str)
    assert isinstance(limit, int) and isinstance(jitter, int | float)
    schedule = Schedule(
        cron, timezone, Misfire(str(misfire)), limit, Overlap(str(overlap)), float(jitter),
        bool(backfill),
    )  # fmt: skip
    try:
        next_fire(schedule, datetime.now(UTC))
    except CroniterBadDateError:
        raise ValidationFailed(
            "schedule", [FieldError(f"{path}/cron", f"{cron!r} never fires")]
        ) from None
    return schedule


#: Aliases croniter understands, for the usual schedules.
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def _valid_cron(expr: str) -> bool:
    if expr.strip() in ALIASES:
        return True
    return len(expr.split()) in (5, 6) and bool(croniter.is_valid(expr))


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


# -- next fire times -----------------------------------------------------------------------------


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first instant strictly after `after` (aware) at which the schedule fires, in UTC.
    Raises CroniterBadDateError for an expression that never fires."""
    return _next(schedule.cron, schedule.zone, after.astimezone(UTC))


def fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire instants after `after`."""
    out: list[datetime] = []
    at = after
    for _ in range(count):
        at = next_fire(schedule, at)
        out.append(at)
    return out


def iter_fires(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fire instants in (after, until], oldest first."""
    at = after
    while True:
        at = next_fire(schedule, at)
        if at > until:
            return
        yield at


def _next(expr: str, zone: ZoneInfo, after: datetime) -> datetime:
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    if _steady(zone, after):
        # No offset change near: wall clock and UTC move together, the next wall match is it.
        candidate = croniter(expr, wall).get_next(datetime)
        instant = candidate.replace(tzinfo=zone).astimezone(UTC)
        if instant > after and _steady(zone, instant):
            return instant
    return _next_near_transition(expr, zone, after, wall)


def _steady(zone: ZoneInfo, at: datetime) -> bool:
    offset = (at - _MARGIN).astimezone(zone).utcoffset()
    return offset == (at + _MARGIN).astimezone(zone).utcoffset()


def _next_near_transition(expr: str, zone: ZoneInfo, after: datetime, wall: datetime) -> datetime:
    """Walk wall-clock candidates from a margin before `after` and map each to its instants
    (none, one or two, per the DST policy); the earliest instant after `after` wins. Wall times
    further than the margin past the best found cannot map to an earlier instant."""
    every_hour = croniter(expr).expanded[1] == ["*"]
    it = croniter(expr, wall - _MARGIN)
    best: datetime | None = None
    while True:
        candidate: datetime = it.get_next(datetime)
        if best is not None and candidate > best.astimezone(zone).replace(tzinfo=None) + _MARGIN:
            return best
        for instant in _instants(candidate, zone, every_hour):
            if instant > after and (best is None or instant < best):
                best = instant


def _instants(wall: datetime, zone: ZoneInfo, every_hour: bool) -> list[datetime]:
    """UTC instants at which wall-clock time `wall` happens in `zone`, per the DST policy."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    first_utc, second_utc = first.astimezone(UTC), second.astimezone(UTC)
    if first_utc == second_utc:
        return [first_utc]  # an ordinary time
    if first_utc.astimezone(zone).replace(tzinfo=None) != wall:
        # In the gap. Interval-like schedules follow real time: the slot did not exist. Others
        # fire at the transition instant, the first valid time after the gap, which lies between
        # the two readings of the wall time (with the offset before and after the transition).
        if every_hour:
            return []
        return [_gap_end(zone, min(first_utc, second_utc), max(first_utc, second_utc))]
    return [first_utc, second_utc] if every_hour else [min(first_utc, second_utc)]


def _gap_end(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The transition instant between `low` and `high` (the first instant after the gap), found
    by bisection to the second (zone transitions fall on whole seconds)."""
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid <= low:
            mid = low + timedelta(seconds=1)
        if mid.astimezone(zone).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high


# -- misfires and jitter -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """What to fire for one schedule now, and where its next check starts."""

    fire: list[datetime]  #: ticks to fire, oldest first
    missed: int  #: ticks passed over (late beyond the grace and not fired by the policy)
    next_at: datetime  #: the first tick after now: where the next check starts


def due_ticks(schedule: Schedule, next_at: datetime, now: datetime, grace: timedelta) -> Due:
    """The ticks from `next_at` (the first not yet handled) up to `now`, by misfire policy.

    Ticks no older than `grace` are on time and always fire (a leader failover of a few seconds
    loses nothing). Older ones were missed while no scheduler ran: `skip` drops them, `once`
    fires the latest of them, `catch_up` fires the latest `catch_up_limit` of them. After a very
    long outage of a dense schedule (more than MAX_TICKS_PER_CALL ticks), only the last day of
    missed ticks is looked at; the older ones count as missed.
    """
    if next_at > now:
        return Due([], 0, next_at)
    ticks = [next_at]
    skipped = 0
    for tick in iter_fires(schedule, next_at, now):
        ticks.append(tick)
        if len(ticks) >= MAX_TICKS_PER_CALL:
            # Dense and far behind: jump to a little before the ticks the policy can still fire.
            spacing = (tick - next_at) / (len(ticks) - 1)
            lookback = min(timedelta(days=1), spacing * 2 * (schedule.catch_up_limit + 2))
            restart = max(tick, now - grace - lookback)
            skipped = len(ticks) + _count_quickly(schedule, tick, restart)
            ticks = list(iter_fires(schedule, restart, now))
            break
    late = [t for t in ticks if now - t > grace]
    on_time = [t for t in ticks if now - t <= grace]
    if schedule.misfire == Misfire.SKIP:
        fire_late: list[datetime] = []
    elif schedule.misfire == Misfire.ONCE:
        fire_late = late[-1:]
    else:
        fire_late = late[-schedule.catch_up_limit :]
    missed = skipped + len(late) - len(fire_late)
    return Due(fire_late + on_time, missed, next_fire(schedule, now))


def _count_quickly(schedule: Schedule, start: datetime, end: datetime) -> int:
    """Roughly how many ticks fall in (start, end], from the density of the next thousand."""
    sample = fire_times(schedule, start, 1000)
    span = (sample[-1] - start).total_seconds()
    if span <= 0 or end <= start:
        return 0
    return int((end - start).total_seconds() / span * 1000)


def jitter_offset(job_id: str, tick: datetime, jitter_s: float) -> float:
    """A delay in [0, jitter_s) seconds for one tick of one job, the same in every process (so
    two leaders firing the same tick agree, and tests can predict it)."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{job_id}|{tick.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter_s
