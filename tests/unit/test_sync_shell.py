"""Synchronous replication, the shell side: synchronous_standby_names in the postgresql.conf pgha writes, the
probe's reading of pg_stat_replication, the agent's settings, and the sync/quorum roles the REST API and
``pgha list`` show (the decisions themselves are core/sync.py's, tested with the core).

No PostgreSQL here: files in a temporary directory, plain values; tests/integration/test_sync.py runs it for real.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pgha.agent.loop import Agent
from pgha.api import build_status
from pgha.api.status import cluster_json, metrics_text
from pgha.cli.listing import role_name, rows, sync_role
from pgha.config import load_config
from pgha.core.model import ClusterView, Member, Standby, SyncState
from pgha.core.sync import PLACEHOLDER, parse, render
from pgha.osuser import Account
from pgha.postgres import conf
from pgha.postgres.node import PostgresNode
from pgha.postgres.probe import standbys


# --- postgresql.conf ---------------------------------------------------------------------------------------------

def _conf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("synchronous_standby_names")]


@pytest.mark.parametrize("value", [
    "node1", '2 (node1,"Node-2")', "ANY 1 (node1,node2)", '"' + PLACEHOLDER + '"', "", "it's", 'a\\b',
])
def test_the_value_is_quoted_for_postgresql_conf_and_read_back(value):
    text = conf.render_postgresql_conf({"synchronous_standby_names": "user's"}, listen_addresses="*", port=5432,
                                       cluster_name="c", standby=None, upstream=None, sync_standby_names=value)
    assert _conf_lines(text) == ["synchronous_standby_names = " + conf.quote_guc(value)]  # ours wins, once
    assert conf.sync_from_conf(text) == value
    # what PostgreSQL's parser gives back from the quoted literal: '' is ', \\ is \
    literal = _conf_lines(text)[0].split(" = ", 1)[1]
    assert literal[0] == literal[-1] == "'"
    assert literal[1:-1].replace("''", "'").replace("\\\\", "\\") == value


def test_without_an_agent_value_the_parameters_decide():
    text = conf.render_postgresql_conf({"synchronous_standby_names": "x"}, listen_addresses="*", port=5432,
                                       cluster_name="c", standby=None, upstream=None)
    assert _conf_lines(text) == ["synchronous_standby_names = 'x'"]
    assert conf.sync_from_conf(text) is None and conf.SYNC_MARKER not in text


def test_the_core_rendering_survives_the_round_trip():
    value = render(("node1", "node2"), 1, True, False)
    text = conf.render_postgresql_conf({}, listen_addresses="*", port=5432, cluster_name="c", standby=None,
                                       upstream=None, sync_standby_names=value)
    assert parse(conf.sync_from_conf(text)) == (("node1", "node2"), 1)


def test_setting_the_value_in_a_rendered_file_keeps_everything_else():
    standby = {"primary_conninfo": "host=h port=1 application_name=node2", "primary_slot_name": "node2"}
    text = conf.render_postgresql_conf({"wal_level": "replica", "synchronous_standby_names": "user"},
                                       listen_addresses="*", port=5432, cluster_name="c", standby=standby,
                                       upstream="node0")
    first = conf.with_sync_standby_names(text, "node1")
    assert _conf_lines(first) == ["synchronous_standby_names = 'node1'"]  # the user's line replaced, not doubled
    assert conf.upstream_from_conf(first) == "node0" and "primary_conninfo = " in first
    assert first.index("synchronous_standby_names") < first.index("recovery_target_timeline")
    second = conf.with_sync_standby_names(first, 'ANY 1 ("a b",c)')
    assert _conf_lines(second) == ["synchronous_standby_names = 'ANY 1 (\"a b\",c)'"]
    assert second.count(conf.SYNC_MARKER) == 1 and conf.sync_from_conf(second) == 'ANY 1 ("a b",c)'
    def others(t: str) -> list[str]:
        return [line for line in t.splitlines()
                if not line.startswith(("synchronous_standby_names", conf.SYNC_MARKER))]
    assert others(second) == others(text)
    primary = conf.render_postgresql_conf({}, listen_addresses="*", port=5432, cluster_name="c", standby=None,
                                          upstream=None)
    assert conf.with_sync_standby_names(primary, "n").endswith("synchronous_standby_names = 'n'\n")


def test_primary_conninfo_names_the_member_for_synchronous_standby_names(tmp_path):
    node = _node(tmp_path)
    settings = node._standby_settings(Member(name="node0", conn_url="postgres://127.0.0.1:5440/postgres"))
    assert "application_name=node1" in settings["primary_conninfo"]


# --- PostgresNode.set_sync_standby_names ---------------------------------------------------------------------------

def _node(tmp_path: Path) -> PostgresNode:
    data = {
        "scope": "batman", "name": "node1",
        "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
        "etcd3": {"hosts": "127.0.0.1:2379"},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432",
                       "data_dir": str(tmp_path / "data"), "bin_dir": str(tmp_path / "no-bin"),
                       "parameters": {"synchronous_standby_names": "from-yaml"},
                       "authentication": {"replication": {"username": "replicator", "password": "x"},
                                          "superuser": {"username": "postgres", "password": "x"}}},
    }
    path = tmp_path / "pgha.yml"
    path.write_text(yaml.safe_dump(data))
    cfg, _ = load_config(str(path), {})
    os.makedirs(cfg.postgresql.data_dir, exist_ok=True)
    me = Account(name="me", uid=os.getuid(), gid=os.getgid(), home=str(tmp_path))
    return PostgresNode(cfg, me)


def _conf(node: PostgresNode) -> str:
    return Path(node.data_dir, "postgresql.conf").read_text()


def test_the_value_is_kept_through_re_renders_restarts_and_a_new_agent(tmp_path):
    node = _node(tmp_path)
    node.set_sync_standby_names("node2")  # no file yet, PostgreSQL not running: remembered for the next render
    assert not Path(node.data_dir, "postgresql.conf").exists()
    upstream = Member(name="node0", conn_url="postgres://127.0.0.1:5440/postgres")
    node.configure(upstream, True, None)  # a replica's file
    assert _conf_lines(_conf(node)) == ["synchronous_standby_names = 'node2'"]
    node.set_sync_standby_names("ANY 1 (node0,node2)")  # edits the file in place; nothing runs, no reload
    text = _conf(node)
    assert _conf_lines(text) == ["synchronous_standby_names = 'ANY 1 (node0,node2)'"]
    assert conf.upstream_from_conf(text) == "node0" and "application_name=node1" in text
    assert oct(os.stat(Path(node.data_dir, "postgresql.conf")).st_mode & 0o777) == "0o600"
    assert not [n for n in os.listdir(node.data_dir) if n.startswith(".pgha-")]  # written atomically
    node.configure(None, False, None, signal=False)  # promotion
    assert _conf_lines(_conf(node)) == ["synchronous_standby_names = 'ANY 1 (node0,node2)'"]
    again = _node(tmp_path)  # the agent restarted: the file's marker says what it had set
    assert again.sync_standby_names == "ANY 1 (node0,node2)"
    again.configure(None, False, None)
    assert _conf_lines(_conf(again)) == ["synchronous_standby_names = 'ANY 1 (node0,node2)'"]
    again.set_sync_standby_names("")
    assert _conf_lines(_conf(again)) == ["synchronous_standby_names = ''"]


def test_without_an_agent_value_the_yaml_parameter_is_rendered(tmp_path):
    node = _node(tmp_path)
    node.configure(None, False, None)
    assert _conf_lines(_conf(node)) == ["synchronous_standby_names = 'from-yaml'"]
    assert node.sync_standby_names is None


def test_a_running_postgresql_is_reloaded(tmp_path, monkeypatch):
    node = _node(tmp_path)
    node.configure(None, False, None)
    calls = []
    monkeypatch.setattr(node.commands, "postmaster_pid", lambda: 4242)
    monkeypatch.setattr(node.commands, "reload", lambda: calls.append(_conf_lines(_conf(node))))
    node.set_sync_standby_names("node2")
    node.set_sync_standby_names("node2")  # the same value: reloaded again (a reload may have failed before)
    assert calls == [["synchronous_standby_names = 'node2'"]] * 2


# --- the probe -----------------------------------------------------------------------------------------------------

def test_pg_stat_replication_rows_become_standbys():
    rows_ = [{"name": "node1", "state": "streaming", "sync_state": "sync", "flush_lsn": 0x3000148},
             {"name": "node2", "state": "catchup", "sync_state": "async", "flush_lsn": None},
             {"name": None, "state": "streaming"}, "junk",
             {"name": "node3", "state": "streaming", "sync_state": "quorum", "flush_lsn": True}]
    assert standbys(rows_) == (Standby("node1", "streaming", "sync", 0x3000148),
                               Standby("node2", "catchup", "async", None),
                               Standby("node3", "streaming", "quorum", None))
    assert standbys(None) == () and standbys("x") == ()


# --- the agent's settings ------------------------------------------------------------------------------------------

class _Dcs:
    def set_ttl(self, ttl: int) -> None:
        self.ttl = ttl


def test_the_agent_reads_the_sync_settings_from_the_dynamic_config(tmp_path):
    cfg = SimpleNamespace(name="node1", scope="c", tags={}, bootstrap=SimpleNamespace(dcs={}),
                          postgresql=SimpleNamespace(use_pg_rewind=None, remove_data_directory_on_rewind_failure=False,
                                                     remove_data_directory_on_diverged_timelines=False,
                                                     pg_hba=None, parameters={}))
    node = SimpleNamespace(dynamic_parameters={}, use_slots=True)
    agent = Agent(cfg, _Dcs(), node)
    s = agent.settings
    assert (s.synchronous_mode, s.synchronous_mode_strict, s.synchronous_node_count, s.maximum_lag_on_syncnode) == \
        ("off", False, 1, -1)
    agent._apply_dynamic(ClusterView(config={"synchronous_mode": "quorum", "synchronous_mode_strict": True,
                                             "synchronous_node_count": 2, "maximum_lag_on_syncnode": 1048576}))
    s = agent.settings
    assert (s.synchronous_mode, s.synchronous_mode_strict, s.synchronous_node_count, s.maximum_lag_on_syncnode) == \
        ("quorum", True, 2, 1048576)
    agent._apply_dynamic(ClusterView(config={"synchronous_mode": True}))  # YAML's `on`
    assert agent.settings.synchronous_mode == "on"


# --- roles: /cluster, /patroni, /metrics, pgha list -----------------------------------------------------------------

def _member(name: str, role: str = "replica") -> Member:
    data = {"conn_url": f"postgres://127.0.0.1:544{name[-1]}/postgres", "state": "running", "role": role,
            "replication_state": "streaming", "xlog_location": 100, "timeline": 1}
    return Member(name=name, conn_url=data["conn_url"], state="running", role=role, xlog_location=100, timeline=1,
                  data=data)


def _view(mode, voters=("node1",), quorum=0, **config) -> ClusterView:
    return ClusterView(leader="node0", members=(_member("node0", "primary"), _member("node1"), _member("node2")),
                       initialize="1", config={"synchronous_mode": mode, **config},
                       sync=SyncState(leader="node0", voters=voters, quorum=quorum))


@pytest.mark.parametrize("view,roles", [
    (_view("on"), ["leader", "sync_standby", "replica"]),
    (_view(True), ["leader", "sync_standby", "replica"]),
    (_view("quorum", ("node1", "node2"), 1), ["leader", "quorum_standby", "quorum_standby"]),
    (_view("off"), ["leader", "replica", "replica"]),  # mode off: the key is ignored
    (_view("on", ("node0",)), ["leader", "replica", "replica"]),  # the leader keeps its role
    (_view("on", standby_cluster={"host": "x"}), ["standby_leader", "replica", "replica"]),
    (ClusterView(leader="node0", members=(_member("node0", "primary"), _member("node1")), config={}),
     ["leader", "replica"]),
])
def test_cluster_roles_follow_the_sync_key(view, roles):
    assert [m["role"] for m in cluster_json(view, "c")["members"]] == roles


def test_pgha_list_shows_sync_and_quorum_standbys():
    assert [r["Role"] for r in rows(_view("on"), "c")] == ["Leader", "Sync Standby", "Replica"]
    assert [r["Role"] for r in rows(_view("quorum", ("node1", "node2"), 1), "c")] == \
        ["Leader", "Quorum Standby", "Quorum Standby"]
    view = _view("on", ("NODE2",))
    assert sync_role(view, "Node2") is None  # SyncState holds lower-cased names (parse_sync does that)
    view = _view("on", ("node2",))
    assert role_name(view, view.members[2]) == "Sync Standby" and sync_role(view, "NODE2") == "sync_standby"


def _status(role: str, sync: str | None, **more):
    values = dict(name="node1", scope="c", state="running", role=role, pg_running=True, server_version=160004,
                  postmaster_start_time="2024-08-28 19:39:26+00:00", timeline=1,
                  xlog={"received_location": 1, "replayed_location": 1, "replayed_timestamp": None, "paused": False},
                  replication=[], replication_state="streaming", tags={}, system_id="1", lock_holder=False,
                  cluster_unlocked=False, dcs_last_seen=int(time.time()), pause=False, pending_restart=False,
                  last_tick_wall=time.time(), loop_wait=1, ttl=4, maximum_lag_on_failover=1, status_optime=1,
                  sync=sync)
    values.update(more)
    return build_status(**values)


def test_patroni_status_and_metrics_carry_the_flags():
    sync = _status("replica", "sync_standby")
    assert sync["sync_standby"] is True and "quorum_standby" not in sync
    assert list(sync)[:7] == ["state", "postmaster_start_time", "role", "server_version", "xlog", "sync_standby",
                              "timeline"]  # Patroni's order
    metrics = metrics_text(sync, "c", "node1")
    assert 'patroni_sync_standby{scope="c",name="node1"} 1' in metrics
    assert 'patroni_quorum_standby{scope="c",name="node1"} 0' in metrics
    quorum = _status("replica", "quorum_standby")
    assert quorum["quorum_standby"] is True and "sync_standby" not in quorum
    assert 'patroni_quorum_standby{scope="c",name="node1"} 1' in metrics_text(quorum, "c", "node1")
    for status in (_status("replica", None), _status("primary", "sync_standby", xlog={"location": 1}),
                   _status("replica", "sync_standby", pg_running=False, state="stopped")):
        assert "sync_standby" not in status and "quorum_standby" not in status
        assert 'patroni_sync_standby{scope="c",name="node1"} 0' in metrics_text(status, "c", "node1")
    json.dumps(sync)  # plain JSON
