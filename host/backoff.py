"""Retry decisions: how long to wait before the next attempt. Pure: the caller supplies chance."""

from __future__ import annotations

import random

from host.policy import Backoff


def retry_delay(backoff: Backoff, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first).

    Jitter spreads retries of runs that failed together (a dependency outage) so they do not
    all come back at the same instant; it only ever shortens the delay, so the ceiling holds.
    """
    raw = min(backoff.max_s, backoff.base_s * backoff.factor ** max(0, attempt - 1))
    if backoff.jitter <= 0:
        return raw
    draw = (rng or random).random()
    return raw * (1 - backoff.jitter * draw)


def attempts_left(attempt: int, max_attempts: int) -> bool:
    """Whether a run whose attempt number `attempt` just failed may try again."""
    return attempt < max_attempts


def after_failure(
    backoff: Backoff,
    attempt: int,
    max_attempts: int,
    *,
    permanent: bool = False,
    requested_delay: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after attempt `attempt` failed, or None: the run is dead.

    A permanent failure is dead at once. A handler's `Retry(delay=...)` sets the delay but still
    spends an attempt, so a handler that always asks for a retry cannot loop forever.
    """
    if permanent or not attempts_left(attempt, max_attempts):
        return None
    if requested_delay is not None:
        return max(0.0, requested_delay)
    return retry_delay(backoff, attempt, rng)
