"""Tests of pgha.core.dynamic: reading the DCS ``config`` value, defaults, errors and the timing rule."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgha.core.dynamic import DynamicConfig, freeze, ignored_keys, parse_bool, parse_int, thaw

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


def test_defaults_are_patronis_but_for_the_fast_failover_timing():
    d = DynamicConfig()
    assert (d.ttl, d.loop_wait, d.retry_timeout) == (4, 1, 1)
    assert d.effective_timing() == (4, 1, 1)  # loop_wait + 2 * retry_timeout <= ttl holds as given
    assert d.maximum_lag_on_failover == 1048576
    assert d.primary_start_timeout == 10 and d.primary_stop_timeout == 0
    assert d.synchronous_mode == "off" and d.synchronous_node_count == 1
    assert d.maximum_lag_on_syncnode == -1
    assert d.use_slots is True and d.use_pg_rewind is False
    assert dict(d.parameters) == {} and d.pg_hba is None


@pytest.mark.parametrize("value", [None, {}])
def test_empty_input_gives_defaults_without_errors(value):
    assert DynamicConfig.from_dict(value) == (DynamicConfig(), [])


def test_full_dict_is_read():
    d, errors = DynamicConfig.from_dict({
        "ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 0,
        "primary_start_timeout": 0, "primary_stop_timeout": 5, "max_timelines_history": 10,
        "check_timeline": True, "synchronous_mode": "quorum", "synchronous_mode_strict": True,
        "synchronous_node_count": 2, "maximum_lag_on_syncnode": 100, "failsafe_mode": True, "pause": True,
        "postgresql": {"use_slots": False, "use_pg_rewind": True, "parameters": {"max_connections": 200},
                       "pg_hba": ["local all all trust"]},
    })
    assert errors == []
    assert (d.ttl, d.loop_wait, d.retry_timeout) == (20, 2, 5)
    assert d.maximum_lag_on_failover == 0 and d.primary_start_timeout == 0 and d.primary_stop_timeout == 5
    assert d.max_timelines_history == 10 and d.check_timeline is True
    assert d.synchronous_mode == "quorum" and d.synchronous_mode_strict is True and d.synchronous_node_count == 2
    assert d.maximum_lag_on_syncnode == 100 and d.failsafe_mode is True and d.pause is True
    assert d.use_slots is False and d.use_pg_rewind is True
    assert dict(d.parameters) == {"max_connections": 200}
    assert d.pg_hba == ("local all all trust",)


def test_values_written_as_strings_are_read_like_patroni():
    d, errors = DynamicConfig.from_dict({"ttl": "25", "loop_wait": "0.5", "pause": "on", "check_timeline": "yes",
                                         "failsafe_mode": 1, "synchronous_mode": "true"})
    assert errors == []
    assert d.ttl == 25 and d.loop_wait == 0.5 and d.pause is True and d.check_timeline is True
    assert d.failsafe_mode is True and d.synchronous_mode == "on"


@pytest.mark.parametrize("value, expected", [
    (True, "on"), (False, "off"), ("on", "on"), ("off", "off"), ("quorum", "quorum"), ("QUORUM", "quorum"),
])
def test_synchronous_mode_forms(value, expected):
    d, errors = DynamicConfig.from_dict({"synchronous_mode": value})
    assert errors == [] and d.synchronous_mode == expected


def test_master_start_timeout_is_the_legacy_name():
    d, _ = DynamicConfig.from_dict({"master_start_timeout": 0, "master_stop_timeout": 7})
    assert d.primary_start_timeout == 0 and d.primary_stop_timeout == 7


def test_primary_start_timeout_wins_over_the_legacy_name():
    d, _ = DynamicConfig.from_dict({"master_start_timeout": 0, "primary_start_timeout": 60})
    assert d.primary_start_timeout == 60


@pytest.mark.parametrize("raw, error", [
    ({"ttl": "abc"}, "ttl: expected an integer >= 2, got 'abc'"),
    ({"ttl": 1}, "ttl: expected an integer >= 2, got 1"),
    ({"ttl": True}, "ttl: expected an integer >= 2, got True"),
    ({"ttl": 2.5}, "ttl: expected an integer >= 2, got 2.5"),
    ({"loop_wait": 0.05}, "loop_wait: expected a number >= 0.1, got 0.05"),
    ({"loop_wait": "fast"}, "loop_wait: expected a number >= 0.1, got 'fast'"),
    ({"retry_timeout": 0.1}, "retry_timeout: expected a number >= 0.5, got 0.1"),
    ({"retry_timeout": float("inf")}, "retry_timeout: expected a number >= 0.5, got inf"),
    ({"maximum_lag_on_failover": -1}, "maximum_lag_on_failover: expected an integer >= 0, got -1"),
    ({"maximum_lag_on_syncnode": -2}, "maximum_lag_on_syncnode: expected an integer >= -1, got -2"),
    ({"master_start_timeout": "x"}, "master_start_timeout: expected an integer >= 0, got 'x'"),
    ({"primary_stop_timeout": -5}, "primary_stop_timeout: expected an integer >= 0, got -5"),
    ({"synchronous_node_count": 0}, "synchronous_node_count: expected an integer >= 1, got 0"),
    ({"synchronous_mode": "maybe"}, "synchronous_mode: expected on, off or quorum, got 'maybe'"),
    ({"pause": "sometimes"}, "pause: expected a boolean (true/false), got 'sometimes'"),
    ({"failsafe_mode": [1]}, "failsafe_mode: expected a boolean (true/false), got [1]"),
    ({"postgresql": "x"}, "postgresql: expected a mapping, got 'x'"),
    ({"postgresql": {"use_slots": "x"}}, "postgresql.use_slots: expected a boolean (true/false), got 'x'"),
    ({"postgresql": {"parameters": [1]}},
     "postgresql.parameters: expected a mapping of setting: value, got [1]"),
    ({"postgresql": {"parameters": {"max_connections": "lots"}}},
     "postgresql.parameters.max_connections: expected an integer in 1..262143, got 'lots'"),
    ({"postgresql": {"parameters": {"max_wal_senders": -1}}},
     "postgresql.parameters.max_wal_senders: expected an integer in 0..262143, got -1"),
    ({"postgresql": {"pg_hba": "host all all 0/0 md5"}},
     "postgresql.pg_hba: expected a list of pg_hba.conf lines (strings), got 'host all all 0/0 md5'"),
    ({"postgresql": {"pg_hba": ["ok", 3]}},
     "postgresql.pg_hba: expected a list of pg_hba.conf lines (strings), got ['ok', 3]"),
])
def test_a_bad_field_keeps_its_default_and_names_the_key(raw, error):
    d, errors = DynamicConfig.from_dict(raw)
    assert errors == [error]
    defaults = DynamicConfig()
    for f in dataclasses.fields(DynamicConfig):
        if f.name not in ("raw", "parameters"):
            assert getattr(d, f.name) == getattr(defaults, f.name), f.name


def test_only_the_bad_fields_are_dropped():
    d, errors = DynamicConfig.from_dict({"ttl": "x", "loop_wait": 3,
                                         "postgresql": {"parameters": {"max_connections": 0, "work_mem": "4MB"}}})
    assert d.ttl == DynamicConfig().ttl and d.loop_wait == 3
    assert dict(d.parameters) == {"work_mem": "4MB"}
    assert len(errors) == 2


def test_not_a_mapping_is_an_error_not_an_exception():
    d, errors = DynamicConfig.from_dict(["ttl", 30])
    assert d == DynamicConfig() and errors == ["config: expected a mapping, got ['ttl', 30]"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["ttl", "loop_wait", "retry_timeout", "pause", "synchronous_mode",
                                        "master_start_timeout", "postgresql", "slots", "x"]), json_values))
def test_from_dict_never_raises(raw):
    d, errors = DynamicConfig.from_dict(raw)
    assert isinstance(d, DynamicConfig) and all(isinstance(e, str) for e in errors)
    assert d.ttl >= 2 and d.loop_wait >= 0.1 and d.retry_timeout >= 0.5


def test_raw_keeps_everything_and_is_frozen():
    source = {"ttl": 30, "slots": {"s1": {"type": "physical"}}, "postgresql": {"pg_hba": ["a"]}}
    d, _ = DynamicConfig.from_dict(source)
    assert d.to_dict() == source
    with pytest.raises(TypeError):
        d.raw["ttl"] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.ttl = 1
    source["ttl"] = 99
    assert d.raw["ttl"] == 30
    json.dumps(d.to_dict())


@pytest.mark.parametrize("ttl, loop_wait, retry_timeout, expected", [
    (30, 10, 10, (30, 10, 10)),           # Patroni's defaults satisfy the rule
    (2, 0.1, 0.5, (2, 0.1, 0.5)),         # pgha's minimums satisfy it too
    (30, 10, 15, (30, 10, 10)),           # retry_timeout is lowered first
    (10, 2, 10, (10, 2, 4)),
    (5, 10, 10, (5, 4, 0.5)),             # then loop_wait
    (2, 10, 10, (2, 1, 0.5)),
    (2, 0.1, 10, (2, 0.1, 0.95)),
])
def test_effective_timing(ttl, loop_wait, retry_timeout, expected):
    d = DynamicConfig(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout)
    assert d.effective_timing() == pytest.approx(expected)


@settings(deadline=None)
@given(st.integers(2, 3600), st.floats(0.1, 3600), st.floats(0.5, 3600))
def test_effective_timing_always_meets_the_rule(ttl, loop_wait, retry_timeout):
    t, lw, rt = DynamicConfig(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout).effective_timing()
    assert t == ttl and lw >= 0.1 and rt >= 0.5
    assert lw + 2 * rt <= ttl + 1e-9
    assert lw <= loop_wait and rt <= retry_timeout


def test_ignored_keys_are_sorted_into_known_and_unknown():
    unsupported, unknown = ignored_keys({
        "ttl": 30, "standby_cluster": {"host": "x"}, "slots": {}, "typo_key": 1,
        "postgresql": {"parameters": {}, "recovery_conf": {}, "data_dir": "/x", "use_slots": True},
    })
    assert unsupported == ["standby_cluster", "slots", "postgresql.recovery_conf"]
    assert unknown == ["typo_key", "postgresql.data_dir"]
    assert ignored_keys("nonsense") == ([], [])


def test_freeze_and_thaw_round_trip():
    value = {"a": [1, {"b": (2, 3)}], "c": {"d": None}}
    frozen = freeze(value)
    assert thaw(frozen) == {"a": [1, {"b": [2, 3]}], "c": {"d": None}}
    with pytest.raises(TypeError):
        frozen["c"]["d"] = 1


@pytest.mark.parametrize("value, expected", [
    (True, True), ("ON", True), ("yes", True), (1, True), ("0", False), ("off", False), ("maybe", None), (2, None),
])
def test_parse_bool(value, expected):
    assert parse_bool(value) is expected


@pytest.mark.parametrize("value, expected", [(5, 5), ("7", 7), (3.0, 3), (3.5, None), (True, None), ("x", None)])
def test_parse_int(value, expected):
    assert parse_int(value) == expected


def test_a_synchronous_mode_without_commits_waiting_for_a_standby_is_named():
    from pgha.core.dynamic import unsafe_commit_warning
    on, _ = DynamicConfig.from_dict({"synchronous_mode": "on", "postgresql": {"parameters": {
        "synchronous_commit": "local"}}})
    assert "synchronous_commit is 'local'" in unsafe_commit_warning(on, {})
    assert unsafe_commit_warning(on, {"synchronous_commit": "remote_write"}) == ""  # the YAML's own wins
    quorum, _ = DynamicConfig.from_dict({"synchronous_mode": "quorum"})
    assert "'off'" in unsafe_commit_warning(quorum, {"synchronous_commit": "off"})
    assert unsafe_commit_warning(quorum, {}) == ""  # the default, on
    off, _ = DynamicConfig.from_dict({"synchronous_mode": "off", "postgresql": {"parameters": {
        "synchronous_commit": "local"}}})
    assert unsafe_commit_warning(off, {}) == ""  # asynchronous: nothing was promised
