"""Limits with several worker processes: a rate never exceeded in any window, a concurrency cap
reached and never passed, unlimited types unaffected, and changes taking effect without restart.
Figures are printed (run pytest with -s to see them); bounds come from the token bucket's
definition, never from wall-clock expectations."""

from __future__ import annotations

import itertools
import subprocess

import pytest

from host import limits
from host.client import Client, RunRequest
from host.services import Services
from tests.helpers import executions, jobhost, recorded, running_worker, stop, wait_until

pytestmark = pytest.mark.slow


def spans(records: list[dict]) -> list[tuple[float, float]]:
    """(start, end) per run from the span handler's records."""
    starts = {r["run_id"]: r["at"] for r in records if r["event"] == "start"}
    ends = {r["run_id"]: r["at"] for r in records if r["event"] == "end"}
    return [(starts[k], ends[k]) for k in starts if k in ends]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def worst_window_excess(starts: list[float], rate: float, burst: int) -> float:
    """Largest (starts in [t_i, t_j]) - (burst + rate * (t_j - t_i)) over every window."""
    starts = sorted(starts)
    worst = float("-inf")
    for i, j in itertools.combinations_with_replacement(range(len(starts)), 2):
        worst = max(worst, (j - i + 1) - (burst + rate * (starts[j] - starts[i])))
    return worst


async def test_rate_limit_holds_across_four_worker_processes(
    services: Services, worker_env: dict[str, str]
) -> None:
    rate, burst, n = 25.0, 5, 150
    async with services.pool.acquire() as conn:
        lim = await limits.set_override(
            conn, services.registry, "test.span", rate=f"{rate:g}/s", burst=burst
        )
    await limits.publish(services.queue, {"test.span": lim})
    client = Client(services)
    limited = [RunRequest("test.span", {"key": "L", **recorded(services)}) for _ in range(n)]
    free = [RunRequest("test.record", {"key": "F", **recorded(services)}) for _ in range(300)]
    await client.enqueue_many(limited)
    await client.enqueue_many(free)
    workers: list[subprocess.Popen] = [
        jobhost("worker", "--concurrency", "50", cwd=worker_env["ROOT"], env=worker_env)
        for _ in range(4)
    ]
    try:
        free_done_with_limited_left = None

        async def unlimited_done() -> bool:
            return sum(1 for r in await executions(services) if r["key"] == "F") >= 300

        await wait_until(unlimited_done, 60)
        started = sum(1 for r in await executions(services) if r["event"] == "start")
        free_done_with_limited_left = n - started

        async def limited_done() -> bool:
            return len(spans(await executions(services))) >= n

        await wait_until(limited_done, 60)
    finally:
        for w in workers:
            stop(w)
    records = await executions(services)
    starts = sorted(s for s, _ in spans(records))
    excess = worst_window_excess(starts, rate, burst)
    long_run = (len(starts) - burst) / (starts[-1] - starts[0])
    free_times = sorted(r["at"] for r in records if r["key"] == "F")
    free_rate = len(free_times) / max(free_times[-1] - free_times[0], 1e-3)
    print(
        f"\nrate limit {rate}/s burst {burst}, 4 workers: long-run {long_run:.2f}/s, "
        f"worst window excess {excess:.2f} runs; unlimited type {free_rate:.0f}/s, "
        f"done with {free_done_with_limited_left} limited runs still waiting"
    )
    # Slack for the clock the test reads: handler start times are taken in each process after
    # the claim, so a loaded machine bunches them (3 runs is 0.12 s of scheduling delay at
    # 25/s; 2.03 was seen at load 6). Without the bucket the 150 runs would start within a
    # fraction of a second (excess ~145).
    assert excess <= 3.0
    # Never above the limit; below it only by what a loaded machine costs the throttled
    # claimer's sleeps (21.1/s was seen at load 6): the bucket must not starve the type.
    assert 0.75 * rate <= long_run <= 1.05 * rate
    assert free_done_with_limited_left > n / 3  # the limited type held up nothing
    assert len(set(r["run_id"] for r in records if r["event"] == "start")) == n


async def test_concurrency_limit_is_reached_and_never_exceeded_across_processes(
    services: Services, worker_env: dict[str, str]
) -> None:
    async with services.pool.acquire() as conn:
        lim = await limits.set_override(conn, services.registry, "test.span", concurrency=4)
    await limits.publish(services.queue, {"test.span": lim})
    await Client(services).enqueue_many(
        [RunRequest("test.span", {"sleep_s": 0.2, **recorded(services)}) for _ in range(40)]
    )
    workers = [
        jobhost("worker", "--concurrency", "20", cwd=worker_env["ROOT"], env=worker_env)
        for _ in range(2)
    ]
    peak_sampled = 0
    try:

        async def done() -> bool:
            nonlocal peak_sampled
            status = await services.queue.limit_status(["test.span"])
            peak_sampled = max(peak_sampled, status["test.span"]["in_flight"])
            return len(spans(await executions(services))) >= 40

        await wait_until(done, 60, interval_s=0.02)
    finally:
        for w in workers:
            stop(w)
    observed = max_overlap(spans(await executions(services)))
    print(f"\nconcurrency limit 4, 2 workers x 20: handler overlap {observed}, "
          f"in flight sampled {peak_sampled}")  # fmt: skip
    assert observed == 4
    assert peak_sampled <= 4


async def test_limits_change_while_workers_run(services: Services) -> None:
    async def set_concurrency(n: int) -> None:
        async with services.pool.acquire() as conn:
            lim = await limits.set_override(conn, services.registry, "test.span", concurrency=n)
        await limits.publish(services.queue, {"test.span": lim})

    await set_concurrency(2)
    client = Client(services)
    first = [
        r.id
        for r in await client.enqueue_many(
            [RunRequest("test.span", {"sleep_s": 0.2, "key": "1", **recorded(services)})] * 12
        )
    ]
    async with running_worker(services, concurrency=20):
        for run_id in first:
            await client.wait(run_id, 30)
        await set_concurrency(6)
        second = [
            r.id
            for r in await client.enqueue_many(
                [RunRequest("test.span", {"sleep_s": 0.2, "key": "2", **recorded(services)})] * 24
            )
        ]
        for run_id in second:
            await client.wait(run_id, 30)
    records = await executions(services)
    before = max_overlap(spans([r for r in records if r["key"] == "1"]))
    after = max_overlap(spans([r for r in records if r["key"] == "2"]))
    assert (before, after) == (2, 6)
    async with services.pool.acquire() as conn:
        lifted = await limits.set_override(
            conn, services.registry, "test.span", unlimited=("concurrency",)
        )
        assert lifted.concurrency is None
        reset = await limits.reset_override(conn, services.registry, "test.span")
        assert reset == limits.Limits()
