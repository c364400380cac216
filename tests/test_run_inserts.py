"""Run inserts: a uniform batch (one type, the same policy values, nothing that can conflict)
takes the short statement, and it must write exactly the rows the general statement writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from host.ids import new_run_ids_text
from host.services import Services
from host.store import runs as run_store

#: Every column the insert sets; created_at and run_at are now() plus the delay, compared apart.
_COLUMNS = """tenant_id, type, job_id::text, state, payload, priority, attempt, max_attempts,
    timeout_s, idempotency_key, scheduled_for, worker, result, error, started_at, finished_at,
    extract(epoch FROM run_at - created_at)::float8 AS delay_s"""


def _batch(payloads: list[str | bytes], **shared: Any) -> list[run_store.NewRun]:
    ids = new_run_ids_text(len(payloads))
    options = {"tenant_id": "acme", "type": "noop", "priority": 3, "max_attempts": 4,
               "timeout_s": 12.5, "delay_s": 0.0, **shared}  # fmt: skip
    return [
        run_store.NewRun(id=i, payload_json=p, **options)
        for i, p in zip(ids, payloads, strict=True)
    ]


async def _rows(services: Services, ids: list[str]) -> list[dict[str, Any]]:
    rows = await services.pool.fetch(
        f"SELECT {_COLUMNS} FROM runs WHERE id = ANY($1::uuid[]) ORDER BY id", ids
    )
    return [dict(r) for r in rows]


@pytest.mark.parametrize(
    "shared",
    [{}, {"delay_s": 30.0}, {"job_id": str(uuid.uuid4())}],
    ids=["queued", "delayed", "of-a-job"],
)
async def test_a_uniform_batch_writes_what_the_general_statement_writes(
    services: Services, monkeypatch: pytest.MonkeyPatch, shared: dict[str, Any]
) -> None:
    if "job_id" in shared:
        await services.pool.execute(
            "INSERT INTO jobs (tenant_id, id, name, type) VALUES ('acme', $1, 'j', 'noop')",
            shared["job_id"],
        )
    payloads: list[str | bytes] = [b'{"i": 1}', '{"s": "\\u00e9\\n", "l": [1, {"a": null}]}', b"{}"]
    uniform = _batch(payloads, **shared)
    assert run_store._uniform(uniform)
    general = _batch(payloads, **shared)
    assert await run_store.insert_runs(services.hot_pool, uniform) == {r.id for r in uniform}
    monkeypatch.setattr(run_store, "_uniform", lambda runs: False)
    assert await run_store.insert_runs(services.hot_pool, general) == {r.id for r in general}

    got = await _rows(services, [r.id for r in uniform])
    want = await _rows(services, [r.id for r in general])
    assert len(got) == len(want) == 3
    for a, b in zip(got, want, strict=True):
        assert a.pop("delay_s") == pytest.approx(b.pop("delay_s"), abs=1.0)
        assert a == b
    assert got[0]["state"] == ("scheduled" if shared.get("delay_s") else "queued")


def test_the_uniform_statement_sets_every_shared_column() -> None:
    """A field added to NewRun joins the uniform comparison by itself (it is derived from the
    dataclass); this fails until the uniform statement and this test learn about it too."""
    assert set(run_store._SHARED_FIELDS) == {
        "tenant_id", "type", "job_id", "priority", "max_attempts", "timeout_s", "delay_s",
        "idempotency_key", "scheduled_for",
    }  # fmt: skip


def test_a_batch_that_differs_in_more_than_id_and_payload_is_not_uniform() -> None:
    base = _batch([b"{}", b"{}"])
    assert run_store._uniform(base)
    for field, value in [
        ("tenant_id", "other"), ("type", "sleep"), ("priority", 9), ("max_attempts", 1),
        ("timeout_s", 1.0), ("delay_s", 5.0), ("job_id", str(uuid.uuid4())),
        ("idempotency_key", "k"), ("scheduled_for", datetime(2030, 1, 1, tzinfo=UTC)),
    ]:  # fmt: skip
        runs = _batch([b"{}", b"{}"])
        setattr(runs[1], field, value)
        assert not run_store._uniform(runs), field
    keyed = _batch([b"{}"])
    keyed[0].idempotency_key = "k"
    assert not run_store._uniform(keyed)  # may conflict: the statement that skips conflicts
