"""The worker's per-run Python, without servers: the fast paths give exactly what the general
paths give (claim replies to leases, success finishes, result encoding, unstartable envelopes)."""

from __future__ import annotations

import asyncio
import random
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from host.backoff import after_failure
from host.config import Settings
from host.queue.keys import Keys
from host.queue.queue import Lease, Queue
from host.registry import Registry
from host.states import Outcome, RunState
from host.store import runs as run_store
from host.worker.executor import AttemptResult, execute
from host.worker.worker import Worker


def _worker(registry: Registry) -> Worker:
    services = types.SimpleNamespace(settings=Settings(), queue=None, registry=registry)
    return Worker(services, worker_id="w-1")  # type: ignore[arg-type]


def _queue() -> Queue:
    queue = Queue.__new__(Queue)
    queue.keys = Keys("paths")
    return queue


def test_claim_replies_become_leases_with_their_tokens() -> None:
    reply: list[Any] = [1700, -1, b"id-1", 1, b'{"a":1}', "id-2", b"3", b"{}"]
    claimed = _queue()._claimed("w-1", reply)
    assert claimed.now_ms == 1700 and claimed.next_due_ms == -1
    assert claimed.leases == [
        Lease("id-1", 1, b'{"a":1}', "w-1:1"),
        Lease("id-2", 3, b"{}", "w-1:3"),
    ]
    assert _queue()._claimed("w-1", [5, 250]).leases == []


def _reference_decide(worker: Worker, results: list[AttemptResult]) -> list[run_store.Finish]:
    """The general decision, one path for every outcome (what `_decide` did for all runs
    before successes got their own path)."""
    finishes = []
    for r in results:
        state, delay = RunState.SUCCEEDED, 0.0
        outcome = r.outcome
        if outcome != Outcome.SUCCEEDED:
            types_ = worker.registry.types
            backoff = types_[r.job_type].policy.backoff if r.job_type in types_ else None
            next_in = None if backoff is None else after_failure(
                backoff, r.lease.attempt, r.max_attempts,
                permanent=r.permanent, requested_delay=r.requested_delay,
            )  # fmt: skip
            if next_in is None:
                state = RunState.DEAD
                outcome = Outcome.DEAD if outcome == Outcome.FAILED else outcome
            else:
                state, delay = RunState.RETRYING, next_in
        finishes.append(
            run_store.Finish(
                id=r.lease.id, attempt=r.lease.attempt, state=state, outcome=outcome.value,
                worker=worker.id, started_at=r.started_at, finished_at=r.finished_at,
                result_json=r.result_json, error=r.error, traceback=r.traceback,
                retry_in_s=delay,
            )
        )  # fmt: skip
    return finishes


def test_decide_gives_the_general_paths_finishes(registry: Registry) -> None:
    def result(i: int, job_type: str, outcome: Outcome, **kw: Any) -> AttemptResult:
        lease = Lease(f"run-{i}", kw.pop("attempt", 1), b"{}", f"w-1:{i}")
        return AttemptResult(lease, job_type, 3, 10.0 + i, 11.0 + i, outcome, **kw)

    results = [
        result(0, "noop", Outcome.SUCCEEDED, result_json="null"),
        result(1, "test.fail", Outcome.FAILED, error="E: x", traceback="tb"),
        result(2, "test.fail", Outcome.FAILED, attempt=3, error="E: spent"),
        result(3, "test.retry", Outcome.FAILED, requested_delay=7.5),
        result(4, "test.permanent", Outcome.FAILED, permanent=True),
        result(5, "test.hang", Outcome.TIMED_OUT, attempt=2),
        result(6, "?", Outcome.FAILED, permanent=True),
        result(7, "test.record", Outcome.SUCCEEDED, result_json='{"key":1}', attempt=2),
        result(8, "test.flaky", Outcome.FAILED),
    ]
    worker = _worker(registry)
    random.seed(11)
    flush = worker._decide(results)
    random.seed(11)
    assert flush.finishes == _reference_decide(worker, results)
    assert flush.retry_delays == {
        f.id: f.retry_in_s for f in flush.finishes if f.state == RunState.RETRYING
    }
    assert (worker.stats.succeeded, worker.stats.retried, worker.stats.dead) == (2, 4, 3)
    assert [f.outcome for f in flush.finishes][:3] == ["succeeded", "failed", "dead"]


async def _echo(payload: dict[str, Any], ctx: Any) -> Any:
    return payload["value"]


async def test_execute_encodes_results_as_orjson_does(registry: Registry) -> None:
    """None has its own shortcut ("null"); every result is what orjson.dumps gives."""
    echo = types.SimpleNamespace(**{**registry.get("noop").__dict__, "handler": _echo})
    lease = Lease("run-1", 1, b"{}", "w-1:1")
    threads = ThreadPoolExecutor(1)

    async def nothing(*args: Any) -> None:
        return None

    try:
        for value in (None, [], 0, "", False, "null", {"b": [1.5, None]}):
            envelope = {"type": "noop", "payload": {"value": value}}
            result = await execute(lease, envelope, echo, threads, nothing, nothing)  # type: ignore[arg-type]
            assert result.outcome == Outcome.SUCCEEDED
            assert result.result_json == orjson.dumps(value).decode()
    finally:
        threads.shutdown()


async def test_an_unstartable_envelope_fails_permanently(registry: Registry) -> None:
    worker = _worker(registry)
    try:
        for envelope in (b"not json", b'{"type":"no.such.type"}', b"{}"):
            result = await worker._run_one(Lease("run-1", 2, envelope, "w-1:2"))
            assert result.outcome == Outcome.FAILED and result.permanent
            assert result.error is not None and result.error.startswith("cannot start run: ")
            assert (result.job_type, result.max_attempts, result.lease.attempt) == ("?", 1, 2)
    finally:
        worker._threads.shutdown()
    await asyncio.sleep(0)
