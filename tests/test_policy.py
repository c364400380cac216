"""Pure decisions: backoff, retry-or-dead, policy parsing and merging, states, ids, settings."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from host.backoff import after_failure, retry_delay
from host.config import Settings, load_plugins_config
from host.errors import ConfigError
from host.ids import new_run_id, new_run_id_text
from host.policy import Backoff, Policy, merge_policy, parse_rate, policy_as_dict
from host.states import ACTIVE_STATES, TERMINAL_STATES, RunState, can_transition


def test_backoff_grows_exponentially_up_to_the_ceiling() -> None:
    b = Backoff(base_s=1, factor=2, max_s=10, jitter=0)
    assert [retry_delay(b, n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    b = Backoff(base_s=10, factor=1, max_s=10, jitter=0.3)
    rng = random.Random(7)
    delays = [retry_delay(b, 1, rng) for _ in range(500)]
    assert all(7 <= d <= 10 for d in delays)
    assert max(delays) - min(delays) > 2  # actually spread, not constant


def test_after_failure_retries_until_attempts_are_spent() -> None:
    b = Backoff(base_s=1, factor=3, max_s=100, jitter=0)
    assert after_failure(b, 1, 3) == 1
    assert after_failure(b, 2, 3) == 3
    assert after_failure(b, 3, 3) is None


def test_after_failure_permanent_and_requested_delay() -> None:
    b = Backoff(jitter=0)
    assert after_failure(b, 1, 5, permanent=True) is None
    assert after_failure(b, 1, 5, requested_delay=42) == 42
    assert after_failure(b, 5, 5, requested_delay=42) is None  # Retry still spends an attempt


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/s", 10), ("600/min", 10), ("3600 / hour", 1), ("0.5/sec", 0.5)],
)
def test_rates_parse(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


def test_bad_rate_names_the_expected_form() -> None:
    with pytest.raises(ConfigError, match=r"rate 'fast' is not of the form N/s"):
        parse_rate("fast")


def test_merge_policy_overlays_and_checks_every_field() -> None:
    merged = merge_policy(Policy(), {"max_attempts": 7, "backoff": {"base_s": 5}}, where="T")
    assert merged.max_attempts == 7 and merged.backoff.base_s == 5
    assert merged.backoff.factor == Backoff().factor
    with pytest.raises(ConfigError, match="T: unknown policy field"):
        merge_policy(Policy(), {"retries": 3}, where="T")
    with pytest.raises(ConfigError, match="T: max_attempts must be an integer >= 1"):
        merge_policy(Policy(), {"max_attempts": 0}, where="T")
    with pytest.raises(ConfigError, match="priority must be an integer in"):
        merge_policy(Policy(), {"priority": 5000}, where="T")
    with pytest.raises(ConfigError, match="max_attempts must be an integer"):
        merge_policy(Policy(), {"max_attempts": True}, where="T")
    with pytest.raises(ConfigError, match="rate must be a string"):
        merge_policy(Policy(), {"rate": 10}, where="T")
    with pytest.raises(ConfigError, match="backoff needs base_s >= 0"):
        merge_policy(Policy(), {"backoff": {"base_s": "2"}}, where="T")
    with pytest.raises(ConfigError, match="unknown backoff field"):
        merge_policy(Policy(), {"backoff": {"base": 1}}, where="T")


def test_policy_as_dict_is_plain_data() -> None:
    data = policy_as_dict(Policy(rate="5/s", burst=10))
    assert data["rate"] == "5/s" and data["backoff"]["factor"] == 2.0


def test_states_terminal_and_active_sets_partition_the_states() -> None:
    assert set(RunState) == TERMINAL_STATES | ACTIVE_STATES
    assert not TERMINAL_STATES & ACTIVE_STATES
    assert not can_transition(RunState.SUCCEEDED, RunState.QUEUED)
    assert can_transition(RunState.DEAD, RunState.QUEUED)  # replay
    assert can_transition(RunState.RUNNING, RunState.RETRYING)


def test_run_ids_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_run_id() for _ in range(5000)]
    assert all(i.version == 7 for i in ids)
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert isinstance(ids[0], uuid.UUID)


def test_run_id_text_is_the_canonical_uuid7_in_the_same_sequence() -> None:
    mixed = [new_run_id_text() if i % 2 else str(new_run_id()) for i in range(2000)]
    assert all(str(uuid.UUID(t)) == t and uuid.UUID(t).version == 7 for t in mixed)
    assert mixed == sorted(mixed)
    assert len(set(mixed)) == len(mixed)


def test_settings_from_environment_and_overrides() -> None:
    env = {"JOBHOST_NAMESPACE": "ns1", "JOBHOST_LEASE_S": "12.5", "JOBHOST_POOL_SIZE": "4"}
    s = Settings.from_env(env, tenant="acme", namespace=None)
    assert (s.namespace, s.lease_s, s.pool_size, s.tenant) == ("ns1", 12.5, 4, "acme")
    with pytest.raises(ConfigError, match="JOBHOST_LEASE_S='soon' is not a number"):
        Settings.from_env({"JOBHOST_LEASE_S": "soon"})
    with pytest.raises(ConfigError, match="namespace 'a b'"):
        Settings(namespace="a b")


def test_plugins_toml_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"
    assert load_plugins_config(path).modules == ()  # missing file: entry points only
    path.write_text('[plugins]\nmodules = ["x"]\n[types.x]\nmax_attempts = 2\n')
    config = load_plugins_config(path)
    assert config.modules == ("x",) and config.types == {"x": {"max_attempts": 2}}
    path.write_text("[plugin]\n")
    with pytest.raises(ConfigError, match=r"plugins.toml: unknown section\(s\) plugin"):
        load_plugins_config(path)
    path.write_text("[plugins]\nmodules = 'x'\n")
    with pytest.raises(ConfigError, match="modules and disable must be lists of strings"):
        load_plugins_config(path)
