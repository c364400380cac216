"""host/cron.py, pure: next fire times in UTC and in IANA zones across DST transitions (exact
instants), misfire decisions and jitter."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from host.cron import (
    Misfire,
    Overlap,
    Schedule,
    due_ticks,
    fire_times,
    jitter_offset,
    next_fire,
    parse_schedule,
)
from host.errors import ValidationFailed


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def hm(instants: list[datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M") for t in instants]


def test_utc_is_the_default_and_fires_strictly_after() -> None:
    every5 = Schedule("*/5 * * * *")
    assert next_fire(every5, utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 5)
    assert next_fire(every5, utc(2026, 1, 1, 10, 2, 30)) == utc(2026, 1, 1, 10, 5)
    assert fire_times(Schedule("* * * * * *"), utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 2), utc(2026, 1, 1, 0, 0, 3),
    ]  # fmt: skip


def test_a_zone_shifts_wall_clock_times_to_utc() -> None:
    nine_tokyo = Schedule("0 9 * * *", "Asia/Tokyo")
    assert next_fire(nine_tokyo, utc(2026, 5, 31, 23)) == utc(2026, 6, 1, 0, 0)
    nine_ny = Schedule("0 9 * * 1-5", "America/New_York")
    assert fire_times(nine_ny, utc(2026, 1, 2), 2) == [utc(2026, 1, 2, 14), utc(2026, 1, 5, 14)]


# -- Europe/Paris: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST -> 02:00
# CET (01:00 UTC) ------------------------------------------------------------------------------


def test_paris_spring_forward_fixed_time_in_the_gap_fires_once_after_the_gap() -> None:
    daily = Schedule("30 2 * * *", "Europe/Paris")
    assert fire_times(daily, utc(2026, 3, 27), 4) == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, the end of the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_paris_spring_forward_interval_schedules_skip_the_missing_hour() -> None:
    hourly = Schedule("30 * * * *", "Europe/Paris")
    assert hm(fire_times(hourly, utc(2026, 3, 28, 23, 0), 4)) == [
        "03-28 23:30", "03-29 00:30", "03-29 01:30", "03-29 02:30",
    ]  # fmt: skip  # 01:30 CET, then 03:30 CEST: one hour of real time apart
    every_minute = Schedule("* * * * *", "Europe/Paris")
    ticks = fire_times(every_minute, utc(2026, 3, 29, 0, 58), 4)
    assert ticks == [utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 1),
                     utc(2026, 3, 29, 1, 2)]  # fmt: skip


def test_paris_fall_back_fixed_time_fires_once_at_its_first_occurrence() -> None:
    daily = Schedule("30 2 * * *", "Europe/Paris")
    assert fire_times(daily, utc(2026, 10, 24), 3) == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, first of the two 02:30s; not again at 01:30 UTC
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    early_hours = Schedule("30 0-5 * * *", "Europe/Paris")
    assert hm(fire_times(early_hours, utc(2026, 10, 24, 23, 0), 3)) == [
        "10-24 23:30", "10-25 00:30", "10-25 02:30",
    ]  # fmt: skip


def test_paris_fall_back_interval_schedules_fire_through_the_repeated_hour() -> None:
    hourly = Schedule("30 * * * *", "Europe/Paris")
    assert fire_times(hourly, utc(2026, 10, 24, 23, 0), 4) == [
        utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 30),  # 01:30, 02:30 CEST
        utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 30),  # 02:30, 03:30 CET
    ]  # fmt: skip
    every_15 = Schedule("*/15 * * * *", "Europe/Paris")
    ticks = fire_times(every_15, utc(2026, 10, 25, 0, 0), 8)
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(ticks))


def test_new_york_transitions() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC)
    daily = Schedule("15 2 * * *", "America/New_York")
    assert next_fire(daily, utc(2026, 3, 8)) == utc(2026, 3, 8, 7, 0)
    assert next_fire(daily, utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 9, 6, 15)
    one_thirty = Schedule("30 1 * * *", "America/New_York")
    assert fire_times(one_thirty, utc(2026, 11, 1), 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, first occurrence
        utc(2026, 11, 2, 6, 30),  # 01:30 EST next day
    ]


def test_ticks_strictly_increase_through_a_whole_dst_day() -> None:
    for cron in ("*/7 * * * *", "0,30 1-3 * * *", "* * * * *"):
        ticks = fire_times(Schedule(cron, "Europe/Paris"), utc(2026, 10, 24, 22), 300)
        assert ticks == sorted(set(ticks)), cron


# -- validation -------------------------------------------------------------------------------


def test_parse_schedule_defaults_and_errors() -> None:
    s = parse_schedule({"cron": "0 * * * *"})
    assert s == Schedule("0 * * * *", "UTC", Misfire.SKIP, 10, Overlap.ALLOW, 0.0)
    bad = {"cron": "61 * * * *", "timezone": "Mars/Olympus", "misfire": "x", "overlap": "y",
           "catch_up_limit": 0, "jitter_s": -1, "what": 1}  # fmt: skip
    with pytest.raises(ValidationFailed) as info:
        parse_schedule(bad)
    paths = [e.path.removeprefix("/schedule/") for e in info.value.errors]
    assert paths == ["what", "cron", "timezone", "misfire", "overlap", "catch_up_limit",
                     "jitter_s"]  # fmt: skip
    with pytest.raises(ValidationFailed, match="never fires"):
        parse_schedule({"cron": "0 0 30 2 *"})
    with pytest.raises(ValidationFailed):
        parse_schedule({"cron": "* * * * * * *"})  # seven fields


# -- misfires -----------------------------------------------------------------------------------

GRACE = timedelta(seconds=60)


def test_on_time_ticks_fire_whatever_the_policy() -> None:
    every10 = Schedule("* * * * * */10")  # the sixth field is seconds
    due = due_ticks(every10, utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 35), GRACE)
    assert due.fire == [utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 20),
                        utc(2026, 1, 1, 0, 0, 30)]  # fmt: skip
    assert due.missed == 0 and due.next_at == utc(2026, 1, 1, 0, 0, 40)
    assert due_ticks(every10, utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 0, 35), GRACE).fire == []


@pytest.mark.parametrize(
    ("misfire", "limit", "fired", "missed"),
    [
        (Misfire.SKIP, 10, [], 10),
        (Misfire.ONCE, 10, ["10:09"], 9),
        (Misfire.CATCH_UP, 3, ["10:07", "10:08", "10:09"], 7),
        (Misfire.CATCH_UP, 100, [f"10:0{i}" for i in range(10)], 0),
    ],
)
def test_missed_ticks_follow_the_policy(misfire, limit, fired, missed) -> None:
    minutely = Schedule("* * * * *", misfire=misfire, catch_up_limit=limit)
    # Down from 10:00 to 10:10:30: 10:00-10:09 are late (beyond the 60 s grace), 10:10 on time.
    due = due_ticks(minutely, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 10, 30), GRACE)
    assert [t.strftime("%H:%M") for t in due.fire] == [*fired, "10:10"]
    assert due.missed == missed and due.next_at == utc(2026, 1, 1, 10, 11)


def test_a_long_outage_of_a_dense_schedule_stays_cheap() -> None:
    every_second = Schedule("* * * * * *", misfire=Misfire.CATCH_UP, catch_up_limit=3)
    due = due_ticks(every_second, utc(2026, 1, 1), utc(2026, 1, 8), timedelta(seconds=5))
    assert len(due.fire) == 3 + 6 and due.fire[-1] == utc(2026, 1, 8)
    assert due.missed > 600_000


def test_jitter_is_bounded_and_the_same_everywhere() -> None:
    tick = utc(2026, 1, 1, 10)
    offsets = {jitter_offset(f"job-{i}", tick, 30.0) for i in range(200)}
    assert all(0 <= x < 30 for x in offsets) and len(offsets) == 200
    assert jitter_offset("job-1", tick, 30.0) == jitter_offset("job-1", tick, 30.0)
    assert jitter_offset("job-1", tick, 0) == 0.0
