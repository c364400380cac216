"""Run states, the named sets call sites use, the allowed transitions and event names."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    SCHEDULED = "scheduled"  #: waiting for its time (delayed or run_at in the future)
    QUEUED = "queued"  #: ready, waiting for a worker
    RUNNING = "running"  #: an attempt holds a lease
    RETRYING = "retrying"  #: an attempt failed; backoff pending before the next
    SUCCEEDED = "succeeded"  #: final: the handler returned
    DEAD = "dead"  #: final: attempts spent or a permanent failure (the dead-letter list)
    CANCELLED = "cancelled"  #: final: cancelled before it finished


#: States after which nothing more happens to a run.
TERMINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.DEAD, RunState.CANCELLED})
#: States in which Redis must know the run (reconciliation re-enqueues these).
ACTIVE_STATES = frozenset(
    {RunState.SCHEDULED, RunState.QUEUED, RunState.RUNNING, RunState.RETRYING}
)

#: Which state may follow which. Terminal states have no successors.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.SCHEDULED: frozenset({RunState.QUEUED, RunState.RUNNING, RunState.CANCELLED}),
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.DEAD}),
    RunState.RUNNING: frozenset(
        {
            RunState.RUNNING,
            RunState.SUCCEEDED,
            RunState.RETRYING,
            RunState.DEAD,
            RunState.CANCELLED,
        }
    ),
    RunState.RETRYING: frozenset({RunState.QUEUED, RunState.RUNNING, RunState.CANCELLED}),
    RunState.SUCCEEDED: frozenset(),
    RunState.DEAD: frozenset({RunState.QUEUED}),  # replay of a dead letter
    RunState.CANCELLED: frozenset(),
}


def can_transition(current: RunState, new: RunState) -> bool:
    """Whether a run in `current` may move to `new`."""
    return new in TRANSITIONS[current]


class Outcome(StrEnum):
    """How one attempt ended, as recorded in the attempts table."""

    SUCCEEDED = "succeeded"  #: the handler returned a result
    FAILED = "failed"  #: the handler raised; the run will be retried
    DEAD = "dead"  #: the handler raised and the run is dead (attempts spent or permanent)
    TIMED_OUT = "timed_out"  #: the handler ran past its timeout
    LOST = "lost"  #: the lease expired (the worker died or hung)


class Event(StrEnum):
    """Events that subscriptions can listen to."""

    SUCCEEDED = "run.succeeded"
    FAILED = "run.failed"
    DEAD = "run.dead"
