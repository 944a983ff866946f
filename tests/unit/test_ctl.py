"""The operator verbs without a cluster: rendering, edit-config helpers, argument errors, and the CLI driven
through click's runner over the in-memory DCS."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pgha.cli import tables
from pgha.cli.ctl import Ctl
from pgha.cli.dynconf import apply_pairs, load_yaml_text, unified_diff
from pgha.cli.errors import CliError
from pgha.cli.listing import render
from pgha.cli.main import cli
from pgha.cli.members import members_with_role, parse_scheduled, rolling_order
from pgha.config.ctl import load_ctl_config
from pgha.core.model import ClusterView, Failover, Member
from pgha.dcs.memory import MemoryDcs, MemoryStore

CONN = "postgres://127.0.0.1:{}/postgres"


def member(name: str, port: int, **data) -> Member:
    role = "primary" if data.pop("leader", False) else "replica"
    tags = data.get("tags") or {}
    return Member(name, conn_url=CONN.format(port), api_url=f"http://127.0.0.1:{port + 100}/patroni",
                  state="running", role=role, xlog_location=50331976, timeline=1, tags=tags,
                  data={"state": "running", "role": role, **data})


VIEW = ClusterView(leader="node0", initialize="7441", members=(
    member("node0", 5440, leader=True),
    member("node1", 5441, replication_state="streaming", receive_lsn=50331976, replay_lsn=50331976,
           pending_restart=True, pending_restart_reason={"wal_buffers": {"old_value": "2MB", "new_value": "16MB"}}),
    member("node2", 5442, replication_state="streaming", receive_lsn=50331976, replay_lsn=40000000,
           tags={"replicatefrom": "node1"}),
), config={"ttl": 30}, versions={"config": 1})


def test_pretty_table_is_patronictls_shape() -> None:
    text = tables.pretty(["A", "Num"], [["x", 1], ["longer", 22]], right=("Num",), title=" T: t ")
    assert text.splitlines() == [
        "+ T: t --+-----+",
        "| A      | Num |",
        "+--------+-----+",
        "| x      |   1 |",
        "| longer |  22 |",
        "+--------+-----+"]
    multi = tables.pretty(["A"], [["a\nb"], ["c"]])
    assert multi.count("+---+") == 4  # every row framed when a cell has several lines


def test_list_shows_pending_restart_tags_and_footer() -> None:
    view = ClusterView(**{**VIEW.__dict__, "config": {"pause": True},
                          "failover": Failover("node0", "node1", 1.9e9)})
    text = render(view, "demo", "pretty")
    lines = text.splitlines()
    assert lines[0].startswith("+ Cluster: demo (7441) ")
    assert lines[1].split("|")[1:-1] == [" Member ", " Host           ", " Role    ", " State     ", " TL ",
                                          " Receive LSN ", " Lag ", " Replay LSN ", " Lag ", " Pending restart ",
                                          " Pending restart reason ", " Tags                 "]
    assert "| *               | wal_buffers: 2MB->16MB |" in text
    assert " Maintenance mode: on" in lines and any(line.startswith(" Switchover scheduled at: ") for line in lines)
    rows = json.loads(render(view, "demo", "json"))
    assert rows[0] == {"Cluster": "demo", "Member": "node0", "Host": "127.0.0.1:5440", "Role": "Leader",
                       "State": "running", "TL": 1}  # empty cells left out, as patronictl does
    assert rows[1]["Pending restart"] == "*" and rows[2]["Replay Lag"] == 10
    assert render(view, "demo", "tsv").splitlines()[0].startswith("Cluster\tMember\tHost\tRole")
    assert "Maintenance mode" not in render(view, "demo", "yaml")
    extended = render(VIEW, "demo", "pretty", extended=True)
    assert "Scheduled restart" in extended


def test_topology_nests_cascading_replicas() -> None:
    names = [line.split("|")[1].rstrip() for line in render(VIEW, "demo", "topology").splitlines()[3:6]]
    assert names == [" node0", " + node1", "   + node2"]


def test_edit_config_pairs() -> None:
    data = {"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}}}
    out = apply_pairs(data, ["ttl=40", "postgresql.parameters.pg_stat_statements.track=all",
                             "postgresql.parameters.work_mem=null", "synchronous_mode=true"])
    assert out == {"ttl": 40, "synchronous_mode": True, "postgresql": {"parameters": {
        "pg_stat_statements.track": "all"}}}
    assert data["ttl"] == 30  # the input is left alone
    with pytest.raises(CliError, match="Invalid parameter setting ttl"):
        apply_pairs(data, ["ttl"])
    diff = unified_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n")
    assert diff[:2] == ["--- ", "+++ "] and "-b: 2" in diff and "+b: 3" in diff


def test_yaml_with_tab_indentation_is_read() -> None:
    text = '"postgresql": {\n"parameters": {\n\t"max_connections" : 101\n}\n}\n'
    assert load_yaml_text(text) == {"postgresql": {"parameters": {"max_connections": 101}}}


def test_member_selection_and_order() -> None:
    assert [m.name for m in members_with_role(VIEW, "leader")] == ["node0"]
    assert [m.name for m in members_with_role(VIEW, "primary")] == ["node0"]
    assert members_with_role(VIEW, "standby-leader") == []
    assert [m.name for m in members_with_role(VIEW, "replica")] == ["node1", "node2"]
    assert [m.name for m in rolling_order(VIEW, list(VIEW.members))] == ["node1", "node2", "node0"]
    assert parse_scheduled("now") is None and parse_scheduled(None) is None
    assert parse_scheduled("2030-01-01T10:00+02:00").utcoffset().total_seconds() == 7200
    with pytest.raises(CliError, match="Unable to parse scheduled timestamp"):
        parse_scheduled("tomorrow-ish")


def test_ctl_config_reads_the_rest_api_credentials(tmp_path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("scope: s\netcd3: {hosts: ['127.0.0.1:2379']}\nrestapi: {authentication: {username: r, "
                    "password: p}}\nctl: {authentication: {username: u, password: w}, insecure: true}\n")
    target = load_ctl_config(str(path), None, {})
    assert target.api_auth == ("u", "w") and target.insecure
    path.write_text("scope: s\netcd3: {hosts: ['127.0.0.1:2379']}\nrestapi: {authentication: {username: r, "
                    "password: p}, cafile: /ca.pem}\n")
    target = load_ctl_config(str(path), None, {})
    assert target.api_auth == ("r", "p") and target.cacert == "/ca.pem" and not target.insecure
    env_only = load_ctl_config(None, None, {"PATRONI_SCOPE": "e", "PATRONI_ETCD3_HOSTS": "'127.0.0.1:2379'",
                                            "PATRONI_RESTAPI_USERNAME": "x", "PATRONI_RESTAPI_PASSWORD": "y"})
    assert env_only.scope == "e" and env_only.api_auth == ("x", "y")


# --- the CLI over the in-memory DCS ------------------------------------------------------------------------
@pytest.fixture
def memory_cluster(tmp_path, monkeypatch):
    store = MemoryStore(lambda: 0.0)
    dcs = MemoryDcs(store, "/service", "demo", 30)
    dcs.renew_lease()
    assert dcs.acquire_leader("node0")
    for m in VIEW.members:
        dcs.touch_member(m.name, {"conn_url": m.conn_url, "api_url": m.api_url, **m.data})
    dcs.claim_initialize()
    dcs.set_initialize("7441")
    dcs.set_config({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}})
    monkeypatch.setattr(Ctl, "dcs", lambda self, scope: MemoryDcs(store, "/service", scope, 30))
    config = tmp_path / "ctl.yml"
    config.write_text("scope: demo\netcd3: {hosts: ['127.0.0.1:1']}\n")
    return str(config), dcs


def run(config: str, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["-c", config, *args], input=input, catch_exceptions=False)


def test_cli_edit_config_and_show_config(memory_cluster) -> None:
    config, dcs = memory_cluster
    r = run(config, "edit-config", "-p", "max_connections=120", "-s", "ttl=20", "--force")
    assert r.exit_code == 0 and r.output.endswith("Configuration changed\n") and "+    max_connections: 120" in r.output
    assert dcs.snapshot().config["postgresql"]["parameters"]["max_connections"] == 120
    r = run(config, "edit-config", "-s", "ttl=20", "--force")
    assert r.output == "Not changed\n"
    r = run(config, "edit-config", "-s", "loop_wait=5")  # asks; "n" leaves it alone
    assert "Apply these changes? [y/N]" in r.output and dcs.snapshot().config["loop_wait"] == 10
    r = run(config, "edit-config", "--apply", "-", input='{"postgresql": {"parameters": {"work_mem": null}}}')
    assert r.output.rstrip().endswith("Use --force option to apply changes")
    r = run(config, "edit-config", "--apply", "-", "--force", input="postgresql:\n  pg_hba: [local all all trust]\n")
    assert r.exit_code == 0 and dcs.snapshot().config["postgresql"]["pg_hba"] == ["local all all trust"]
    r = run(config, "show-config")
    assert "max_connections: 120" in r.output and "ttl: 20" in r.output


@pytest.mark.parametrize("args, message", [
    (["edit-config", "-s", "ttl=abc", "--force"], "Error: invalid configuration, nothing changed: ttl"),
    (["edit-config", "-s", "novalue", "--force"], "Error: Invalid parameter setting novalue"),
    (["edit-config", "--apply", "/no/such/file", "--force"], "Error: --apply /no/such/file: cannot read it"),
    (["switchover", "--candidate", "nodeX", "--force"], "Error: Member nodeX does not exist in cluster demo"),
    (["switchover", "--leader", "node1", "--force"], "Error: Member node1 is not the leader of cluster demo"),
    (["switchover", "--candidate", "node1", "--scheduled", "soon", "--force"],
     "Error: Unable to parse scheduled timestamp (soon)"),
    (["failover", "--force"], "Error: Failover could be performed only to a specific candidate"),
    (["restart", "demo", "nodeX", "--force"], "Error: nodeX is not a member of cluster"),
    (["restart", "demo", "--pg-version", "fifteen", "--force"], "Error: --pg-version: expected a PostgreSQL"),
    (["reinit", "demo", "node0", "--force"], "Error: No replica among provided members"),
    (["resume"], "Error: Cluster is not paused"),
    (["query"], "Error: You need to specify either --command or --file"),
    (["query", "-c", "select 1", "-r", "replica", "-m", "node1"], "Error: --role and --member are mutually"),
    (["list", "-w", "0"], "Error: --watch: expected a positive number of seconds"),
])
def test_cli_bad_arguments_fail_with_an_error_naming_them(memory_cluster, args, message) -> None:
    config, _ = memory_cluster
    r = CliRunner().invoke(cli, ["-c", config, *args])
    assert r.exit_code == 1, r.output
    assert message in r.output


def test_cli_usage_errors_name_the_argument(memory_cluster) -> None:
    config, _ = memory_cluster
    r = CliRunner().invoke(cli, ["-c", config, "restart"])
    assert r.exit_code == 2 and "Missing argument 'CLUSTER_NAME'" in r.output
    r = CliRunner().invoke(cli, ["-c", config, "list", "-f", "xml"])
    assert r.exit_code == 2 and "'--format'" in r.output
    r = CliRunner().invoke(cli, ["-c", "/no/such.yml", "list"])
    assert r.exit_code == 1 and "Error: Provided config file /no/such.yml not existing" in r.output


def test_cli_remove_asks_then_wipes_the_cluster(memory_cluster) -> None:
    config, dcs = memory_cluster
    r = run(config, "remove", "demo", input="demo\nYes I am aware\nnode1\n")
    assert r.exit_code == 1 and "Error: You did not specify the current leader of the cluster" in r.output
    r = run(config, "remove", "demo", input="demo\nyes\n")
    assert r.exit_code == 1 and 'You did not exactly type "Yes I am aware"' in r.output
    assert dcs.snapshot().initialize == "7441"
    r = run(config, "remove", "demo", input="demo\nYes I am aware\nnode0\n")
    assert r.exit_code == 0, r.output
    view = dcs.snapshot()
    assert view.initialize is None and view.members == () and view.config is None


def test_cli_list_history_and_version(memory_cluster) -> None:
    config, dcs = memory_cluster
    dcs.set_history([[1, 50331648, "no recovery target specified", "2026-01-01T00:00:00+00:00", "node0"]])
    r = run(config, "list", "-f", "json")
    assert [row["Member"] for row in json.loads(r.output)] == ["node0", "node1", "node2"]
    assert run(config, "list", "-e", "-t").output.splitlines()[0].count(":") == 2  # the timestamp line
    r = run(config, "history", "-f", "json")
    assert json.loads(r.output)[0]["New Leader"] == "node0"
    assert "|  1 | 50331648 | no recovery target specified |" in run(config, "history").output
    assert run(config, "version").output.startswith("pgha version ")
