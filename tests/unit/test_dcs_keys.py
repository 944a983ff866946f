"""parse_cluster and the key layout, on plain values (no DCS)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pgha.dcs.keys import KeyLayout, cluster_prefix, parse_cluster


def test_prefix_collapses_slashes() -> None:
    assert cluster_prefix("/service", "demo") == "/service/demo/"
    assert cluster_prefix("service/", "demo") == "/service/demo/"
    assert cluster_prefix("//ns//", "/demo/") == "/ns/demo/"
    keys = KeyLayout.of("/service/", "demo")
    assert (keys.leader, keys.member("pg1"), keys.initialize) == \
        ("/service/demo/leader", "/service/demo/members/pg1", "/service/demo/initialize")
    assert (keys.config, keys.history, keys.status, keys.sync, keys.failover) == (
        "/service/demo/config", "/service/demo/history", "/service/demo/status", "/service/demo/sync",
        "/service/demo/failover")


def test_empty_prefix_is_an_empty_view() -> None:
    view, warnings = parse_cluster({})
    assert (view.leader, view.members, view.initialize, view.config, view.history, view.status_optime) == \
        (None, (), None, None, (), None)
    assert warnings == []


def test_full_cluster() -> None:
    member = {"conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
              "state": "running", "role": "primary", "version": "4.1.4", "xlog_location": 100, "timeline": 3,
              "tags": {"failover_priority": 0}}
    kvs = {"leader": "pg1", "members/pg1": json.dumps(member), "initialize": "7300000000000000001",
           "config": '{"ttl":30}', "history": '[[1,50,"no recovery target specified","2026-01-01T00:00:00Z"]]',
           "status": '{"optime":200,"slots":{}}', "sync": '{"leader":"pg1"}', "failover": "{}"}
    view, warnings = parse_cluster(kvs)
    assert warnings == []
    assert view.leader == "pg1" and view.initialize == "7300000000000000001"
    assert view.config == {"ttl": 30}
    assert view.history == ((1, 50, "no recovery target specified", "2026-01-01T00:00:00Z"),)
    assert view.status_optime == 200
    m = view.member("pg1")
    assert m is not None and m.role == "primary" and m.xlog_location == 100 and m.timeline == 3
    assert m.nofailover and m.data == member


def test_full_paths_with_prefix() -> None:
    view, _ = parse_cluster({"/service/demo/leader": "pg2", "/service/demo/members/pg2": '{"role":"replica"}'},
                            prefix="/service/demo/")
    assert view.leader == "pg2" and view.member("pg2").role == "replica"


def test_unreadable_member_is_skipped_with_a_warning_naming_the_key() -> None:
    view, warnings = parse_cluster({"members/bad": "{oops", "members/list": "[1,2]", "members/ok": "{}"},
                                   prefix="/service/demo/")
    assert [m.name for m in view.members] == ["ok"]
    assert len(warnings) == 2 and "/service/demo/members/bad" in warnings[0] + warnings[1]


def test_wrong_field_types_are_ignored_with_warnings() -> None:
    view, warnings = parse_cluster({"members/pg1": '{"xlog_location":"abc","timeline":"4","tags":[1],"role":7}'})
    m = view.member("pg1")
    assert (m.xlog_location, m.timeline, m.tags, m.role) == (None, 4, {}, "")
    assert len(warnings) == 2


def test_legacy_member_format() -> None:
    legacy = "postgres://u:p@10.0.0.9:5432/postgres?application_name=http://10.0.0.9:8008/patroni"
    view, _ = parse_cluster({"members/old": legacy})
    m = view.member("old")
    assert m.conn_url == "postgres://u:p@10.0.0.9:5432/postgres" and m.api_url == "http://10.0.0.9:8008/patroni"


def test_unreadable_config_history_status() -> None:
    view, warnings = parse_cluster({"config": "nope", "history": '{"a":1}', "status": "[", "initialize": ""})
    assert view.config == {} and view.history == () and view.status_optime is None and view.initialize == ""
    assert len(warnings) == 3


def test_status_fallbacks() -> None:
    assert parse_cluster({"status": "12345"})[0].status_optime == 12345
    assert parse_cluster({"optime/leader": "777"})[0].status_optime == 777
    assert parse_cluster({"status": '{"slots":{}}', "optime/leader": "9"})[0].status_optime == 9


def test_history_keeps_only_lists() -> None:
    view, warnings = parse_cluster({"history": '[[1,2,"r"],"junk",[2,3]]'})
    assert view.history == ((1, 2, "r"), (2, 3)) and len(warnings) == 1


keys = st.one_of(st.sampled_from(["leader", "initialize", "config", "history", "status", "optime/leader",
                                  "sync", "failover"]), st.text(max_size=8).map(lambda s: "members/" + s))
values = st.one_of(st.text(max_size=40), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10).map(json.dumps))


@given(st.dictionaries(keys, values, max_size=8))
def test_parse_cluster_never_raises_on_anything_someone_wrote(kvs: dict[str, str]) -> None:
    view, warnings = parse_cluster(kvs)
    assert all(m.name and isinstance(m.data, dict) for m in view.members)
    assert view.status_optime is None or isinstance(view.status_optime, int)
    assert all(isinstance(w, str) for w in warnings)


def test_numbers_with_non_ascii_digits_are_not_numbers() -> None:
    """Found by the property test above: '²'.isdigit() is true, yet int('²') raises."""
    view, _ = parse_cluster({"optime/leader": "²", "members/a": '{"xlog_location": "1²", "timeline": "٣"}'})
    assert view.status_optime is None
    assert view.members[0].xlog_location is None and view.members[0].timeline is None
