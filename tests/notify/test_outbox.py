"""The outbox write shares the run's finish statement: a fenced finish invents no event, a
rolled-back one loses it along with the state change, and filters pick the subscriptions."""

from __future__ import annotations

import time
import uuid

from host.client import Client
from host.notify import store
from host.services import Services
from host.states import Outcome, RunState
from host.store import runs as run_store
from tests.notify.conftest import deliveries, subscribe
from webhooks.outbound.channel import Channel


def _finish(run_id: str, attempt: int, state: RunState, outcome: Outcome) -> run_store.Finish:
    now = time.time()
    return run_store.Finish(
        id=run_id,
        attempt=attempt,
        state=state,
        outcome=outcome.value,
        worker="w",
        started_at=now,
        finished_at=now,
        result_json="{}",
    )


async def test_outbox_rows_follow_the_state_change_exactly(
    services: Services, channels: dict[str, Channel]
) -> None:
    url = "http://127.0.0.1:9/"
    every = await subscribe(services, channels, destination={"url": url})
    typed = await subscribe(services, channels, destination={"url": url}, job_types=["other"])
    other_tenant = await subscribe(services, channels, tenant="globex", destination={"url": url})
    run = await Client(services).enqueue("noop", {})
    ok = _finish(run.id, 1, RunState.SUCCEEDED, Outcome.SUCCEEDED)
    async with services.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        assert await run_store.finish_attempts(conn, [ok]) == {run.id}
        await tx.rollback()  # the state change is undone, and so is its event
    assert await deliveries(services, every["id"]) == []
    assert await run_store.finish_attempts(services.pool, [ok]) == {run.id}
    assert await run_store.finish_attempts(services.pool, [ok]) == set()  # fenced: no event
    late = _finish(run.id, 2, RunState.DEAD, Outcome.LOST)
    assert await run_store.finish_attempts(services.pool, [late]) == set()  # final stays final
    (row,) = await deliveries(services, every["id"])
    assert row["event_type"] == "run.succeeded" and row["run_id"] == run.id
    assert row["body"]["data"]["run"]["result"] == {}
    assert await deliveries(services, typed["id"]) == []
    assert await deliveries(services, other_tenant["id"], tenant="globex") == []
    await services.pool.execute(
        "UPDATE deliveries SET state = 'succeeded', finished_at = now() - interval '31 days'"
    )
    assert await store.prune_deliveries(services.pool, 30 * 86400, 100) == 1  # retention
    assert await deliveries(services, every["id"]) == []
    # The reaper's path: a lease lost on the last attempt dead-letters the run.
    lost = await Client(services).enqueue("noop", {})
    reaped = _finish(lost.id, 1, RunState.DEAD, Outcome.LOST)
    assert await run_store.finish_attempts(services.pool, [reaped]) == {lost.id}
    events = {
        r["event_type"]: r["body"]["data"]["run"] for r in await deliveries(services, every["id"])
    }
    assert set(events) == {"run.failed", "run.dead"}
    assert events["run.failed"]["outcome"] == "lost" and not events["run.failed"]["will_retry"]
    assert events["run.dead"]["state"] == "dead"
    missing = str(uuid.uuid4())
    assert (
        await run_store.finish_attempts(
            services.pool, [_finish(missing, 1, RunState.DEAD, Outcome.DEAD)]
        )
        == set()
    )
