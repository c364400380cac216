"""The producer's batch preparation, without servers: the short path for plain requests gives
exactly what `_prepare` gives (rows, Redis entries, envelopes, errors), and batch ids are the
same UUIDv7 sequence as single ones."""

from __future__ import annotations

import types
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from host.client import Client, RunRequest
from host.errors import UnknownJobType, ValidationFailed
from host.ids import new_run_id_text, new_run_ids_text
from host.registry import Registry


def _client(registry: Registry, tenant: str = "acme") -> Client:
    services = types.SimpleNamespace(registry=registry, settings=types.SimpleNamespace())
    return Client(services, tenant=tenant)  # type: ignore[arg-type]


def _requests() -> list[RunRequest]:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    return [
        RunRequest("noop", {}),
        RunRequest("noop", {"i": 1, "s": "é\n\"'", "n": None, "f": 1.5, "l": [1, {"a": []}]}),
        RunRequest("sleep", {"seconds": 0}),
        RunRequest("test.keyed", {"customer": "c-1"}),
        RunRequest("test.keyed", {"customer": 42}),
        RunRequest("test.keyed", {}),
        RunRequest("http.request", {"url": "https://example.com"}),
        RunRequest("noop", {}, priority=5),
        RunRequest("noop", {}, max_attempts=1, timeout_s=2),
        RunRequest("noop", {}, delay_s=3.5),
        RunRequest("noop", {}, run_at=at),
        RunRequest("noop", {}, idempotency_key="k-1"),
        RunRequest("noop", {}, job_id=str(uuid.uuid4()), scheduled_for=at),
        RunRequest("test.hang", {"a": 1}),
        RunRequest("noop", {"i": 2}),
    ]


def test_plain_requests_get_what_prepare_gives(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(registry)
    requests = _requests()
    general: list[int] = []
    prepare = client._prepare
    monkeypatch.setattr(client, "_prepare", lambda i, *a: general.append(i) or prepare(i, *a))
    batch = client._prepare_all(requests)
    assert general == [7, 8, 9, 10, 11, 12]  # the requests with options; the rest: short path
    monkeypatch.undo()
    assert len(batch) == len(requests)
    for index, (req, (row, queued)) in enumerate(zip(requests, batch, strict=True)):
        ref_row, ref_queued = client._prepare(index, req, len(requests), row.id)
        if req.run_at is not None:  # the delay counts down from now: equal to the ms
            assert abs(row.delay_s - ref_row.delay_s) < 0.5
            row.delay_s = ref_row.delay_s
            queued.delay_ms = ref_queued.delay_ms
        assert row == ref_row
        assert queued == ref_queued
        assert queued.envelope == ref_queued.envelope
    ids = [row.id for row, _ in batch]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_single_and_plain_requests_make_the_same_envelope(registry: Registry) -> None:
    client = _client(registry, tenant="default")
    [(row, queued), _] = client._prepare_all([RunRequest("noop", {"x": [1]})] * 2)
    assert (row, queued) == client._prepare(0, RunRequest("noop", {"x": [1]}), 1, row.id)
    [(single, _)] = client._prepare_all([RunRequest("noop", {"x": [1]})])
    assert single.id > row.id
    assert queued.envelope == (
        b'{"id":"' + row.id.encode() + b'","type":"noop","tenant":"default","max_attempts":3,'
        b'"timeout_s":300.0,"job_id":null,"payload":{"x":[1]}}'
    )


@pytest.mark.parametrize(
    "bad",
    [
        RunRequest("sleep", {"seconds": "x"}),
        RunRequest("noop", []),  # type: ignore[arg-type]
        RunRequest("noop", {}, priority=5000),
        RunRequest("no.such.type", {}),
    ],
)
@pytest.mark.parametrize("position", [0, 2])
def test_errors_are_those_of_prepare(registry: Registry, bad: RunRequest, position: int) -> None:
    client = _client(registry)
    requests = [RunRequest("noop", {}), RunRequest("sleep", {"seconds": 1})]
    requests.insert(position, bad)
    errors: list[Any] = []
    for call in (
        lambda: client._prepare_all(requests),
        lambda: client._prepare(position, bad, len(requests)),
    ):
        with pytest.raises((ValidationFailed, UnknownJobType)) as caught:
            call()
        exc = caught.value
        errors.append((type(exc), str(exc), getattr(exc, "errors", None)))
    assert errors[0] == errors[1]
    if len(requests) > 1 and isinstance(bad.payload, dict) and bad.type == "sleep":
        assert f"/{position}/payload" in str(errors[0][2])


def test_batch_ids_continue_the_single_id_sequence() -> None:
    ids = [new_run_id_text(), *new_run_ids_text(5000), new_run_id_text(), *new_run_ids_text(1)]
    assert new_run_ids_text(0) == []
    assert all(str(uuid.UUID(t)) == t and uuid.UUID(t).version == 7 for t in ids)
    assert ids == sorted(ids)  # 5,000 in one millisecond: the counter borrows the next one
    assert len(set(ids)) == len(ids)
