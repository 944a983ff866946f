"""A real 3-node cluster: bootstrap, replication, read-only replicas, a stable lease, refused agents, restart.

Real etcd, real PostgreSQL 15, real agents started by `LocalCluster` (what `pgha up` runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psycopg
import pytest
import yaml

from pgha.local.layout import SCOPE

from .conftest import TEST_TIMING, connect, wait_for

pytestmark = pytest.mark.integration


def node_index(name: str) -> int:
    return int(name.removeprefix("node"))


def snapshot(cluster):
    dcs = cluster.dcs()  # etcd or ZooKeeper, whichever the cluster runs on
    try:
        return dcs.snapshot(timeout=3)
    finally:
        dcs.close(revoke=False)


def leader_and_replicas(cluster) -> tuple[int, list[int]]:
    view = snapshot(cluster)
    leader = node_index(view.leader)
    return leader, [i for i in range(cluster.layout.nodes) if i != leader]


def pgha(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgha", *args], capture_output=True, text=True, timeout=timeout)


def test_one_leader_and_two_streaming_replicas(cluster):
    view = snapshot(cluster)
    assert view.leader is not None
    assert view.initialize and len(view.initialize) >= 10
    replicas = [m for m in view.members if m.name != view.leader]
    assert len(replicas) == 2
    assert all(m.data.get("replication_state") == "streaming" for m in replicas)
    leader = view.member(view.leader)
    assert leader.role == "primary" and leader.state == "running"
    assert leader.conn_url.startswith("postgres://127.0.0.1:") and leader.api_url.endswith("/patroni")
    config = view.config
    assert config["ttl"] == TEST_TIMING["ttl"] and config["loop_wait"] == TEST_TIMING["loop_wait"]


def test_a_row_written_on_the_leader_appears_on_both_replicas(cluster):
    leader, replicas = leader_and_replicas(cluster)
    with connect(cluster.layout, leader) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS smoke (id int primary key, note text)")
        conn.execute("INSERT INTO smoke VALUES (1, 'written on the leader') ON CONFLICT DO NOTHING")
    for i in replicas:
        with connect(cluster.layout, i) as conn:
            row = wait_for(lambda: conn.execute("SELECT note FROM smoke WHERE id = 1").fetchone()
                           if conn.execute("SELECT to_regclass('smoke')").fetchone()[0] else None,
                           30, f"the row on node{i}")
            assert row[0] == "written on the leader"


def test_password_files_are_private_and_owned_by_postgres_account(cluster):
    from pgha.osuser import postgres_account
    account = postgres_account()
    for i in range(cluster.layout.nodes):
        for name in ("pgpass", "pgha.yml"):
            st = os.stat(os.path.join(cluster.layout.node_dir(i), name))
            assert st.st_mode & 0o777 == 0o600, (name, oct(st.st_mode))
        st = os.stat(os.path.join(cluster.layout.node_dir(i), "pgpass"))
        assert st.st_uid == account.uid
        conf = open(os.path.join(cluster.layout.node_dir(i), "data", "postgresql.conf")).read()
        assert "password" not in conf  # replication reads its password from the pgpass file
        assert f"application_name=node{i}" in conf or f"node{i}" == snapshot(cluster).leader


def test_a_write_on_a_replica_is_refused(cluster):
    _, replicas = leader_and_replicas(cluster)
    with connect(cluster.layout, replicas[0]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE must_fail (id int)")


def test_physical_slots_exist_for_the_replicas(cluster):
    leader, replicas = leader_and_replicas(cluster)
    with connect(cluster.layout, leader) as conn:
        rows = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
    slots = dict(rows)
    for i in replicas:
        assert slots.get(f"node{i}") is True


def test_the_leader_keeps_its_lease_over_three_ttls(cluster):
    view = snapshot(cluster)
    leader, timeline = view.leader, view.member(view.leader).timeline
    deadline = time.monotonic() + 3 * TEST_TIMING["ttl"] + 1
    samples = 0
    while time.monotonic() < deadline:
        now = snapshot(cluster)
        assert now.leader == leader, f"the leader changed from {leader} to {now.leader} with no fault"
        assert now.member(leader).timeline == timeline
        samples += 1
        time.sleep(0.25)
    assert samples > 10


def test_list_and_dsn(cluster):
    ctl = cluster.layout.ctl_config
    out = pgha("-c", ctl, "list")
    assert out.returncode == 0, out.stderr
    assert "| Member" in out.stdout and "Leader" in out.stdout and out.stdout.count("Replica") == 2
    rows = json.loads(pgha("-c", ctl, "list", "-f", "json").stdout)
    assert sorted(r["Role"] for r in rows) == ["Leader", "Replica", "Replica"]
    assert all(r["State"] in ("running", "streaming") for r in rows)
    dsn = pgha("-c", ctl, "dsn", "--role", "primary").stdout.strip()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    replica_dsn = pgha("-c", ctl, "dsn", "--role", "replica").stdout.strip()
    with psycopg.connect(replica_dsn, autocommit=True, connect_timeout=3) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def _variant_config(cluster, i: int, tmp_path, **changes) -> str:
    with open(os.path.join(cluster.layout.node_dir(i), "pgha.yml")) as f:
        cfg = yaml.safe_load(f)
    for path, value in changes.items():
        section = cfg
        keys = path.split(".")
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value
    spare = f"127.0.0.1:{cluster.layout.base_port + 150 + i}"  # its own REST API port (free in the block)
    cfg["restapi"] = {"listen": spare, "connect_address": spare}
    out = tmp_path / f"variant-{i}.yml"
    out.write_text(yaml.safe_dump(cfg))
    out.chmod(0o600)
    return str(out)


def test_a_second_agent_with_a_live_name_is_refused(cluster, tmp_path):
    _, replicas = leader_and_replicas(cluster)
    i = replicas[0]
    data_dir = f"{cluster.layout.node_dir(i)}-dup"
    config = _variant_config(cluster, i, tmp_path, **{"postgresql.data_dir": data_dir,
                                                      "postgresql.listen": "127.0.0.1:1",
                                                      "postgresql.connect_address": "127.0.0.1:1"})
    out = pgha("run", config, timeout=60)
    assert out.returncode == 1
    assert f"Can't start; there is already a node named 'node{i}' running" in out.stderr
    assert not os.path.exists(data_dir)
    view = snapshot(cluster)
    assert view.member(f"node{i}").conn_url.endswith(f":{cluster.layout.pg_port(i)}/postgres")


def test_a_data_directory_of_another_cluster_is_refused(cluster, tmp_path):
    from pgha.osuser import postgres_account
    from pgha.postgres.control import PgCommands
    from pgha.config import load_config
    base_cfg, _ = load_config(os.path.join(cluster.layout.node_dir(0), "pgha.yml"))
    foreign = f"{cluster.layout.root}/foreign-data"
    account = postgres_account()
    os.makedirs(foreign, mode=0o700)
    account.chown(foreign)
    PgCommands(base_cfg.postgresql.bin_dir, foreign, account).run("initdb", "-D", foreign, timeout=120)
    config = _variant_config(cluster, 0, tmp_path, name="stranger", **{"postgresql.data_dir": foreign})
    out = pgha("run", config, timeout=60)
    assert out.returncode == 1
    assert "belongs to another cluster" in out.stderr
    assert snapshot(cluster).member("stranger") is None


def test_a_bad_config_is_refused_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("scope: x\nname: n\nrestapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}\n"
                   "etcd3: {hosts: 127.0.0.1:2379}\npostgresql: {listen: 127.0.0.1:5432, "
                   "connect_address: 127.0.0.1:5432, authentication: {replication: {username: r}}}\n"
                   "bootstrap: {dcs: {ttl: abc}}\n")
    out = pgha("run", str(bad))
    assert out.returncode == 1
    assert "postgresql.data_dir" in out.stderr and "bootstrap.dcs.ttl" in out.stderr
    assert out.stderr.startswith("Error: ")


def test_down_and_up_again_keeps_the_data(cluster):
    leader, _ = leader_and_replicas(cluster)
    with connect(cluster.layout, leader) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS survives (v text)")
        conn.execute("INSERT INTO survives VALUES ('before restart')")
        sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    stopped = cluster.down()
    assert "etcd" in stopped
    view = cluster.up(timeout=240, timing=TEST_TIMING)
    assert view.initialize == sysid
    new_leader = node_index(view.leader)
    assert view.leader == f"node{leader}", "the node that led before the restart leads again"
    with connect(cluster.layout, new_leader) as conn:
        assert conn.execute("SELECT v FROM survives").fetchall() == [("before restart",)]
