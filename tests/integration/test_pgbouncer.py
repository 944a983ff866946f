"""PgBouncer in front of a real cluster (`pgha up --pgbouncer`): real PgBouncer 1.18, real `pgha pgbouncer`
follower, real agents and PostgreSQL. Writes through PgBouncer reach the leader before and after switchovers and
a failover; the follower touches only the host/port of the [databases] entries; `down` ends both by PID. A role
created later in PostgreSQL logs in through PgBouncer (auth_user + auth_query, as seed 002), before and after a
switchover, without being added to the auth file.

A bounded writer (one client, autocommit INSERTs every 10 ms, reconnecting after an error) runs through the
switchovers and counts what clients saw: errors, and the slowest statement (the time held in PgBouncer's PAUSE).
Waits poll under deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from pgha.local.layout import read_state
from pgha.osuser import postgres_account
from pgha.pgbouncer.authquery import AUTH_QUERY
from pgha.pgbouncer.ini import point_databases, targets
from pgha.pgbouncer.process import parse_auth_file, pgbouncer_binary
from pgha.procutil import pid_alive

from .conftest import TEST_TIMING, api_auth, wait_for
from .test_cluster import leader_and_replicas, snapshot
from .test_failover import agent_pid, all_streaming, new_leader, postmaster_pid

pytestmark = pytest.mark.integration

PGBOUNCER = True  # the `cluster` fixture starts PgBouncer and its follower (conftest.py)


def url(cluster) -> str:
    layout = cluster.layout
    return f"postgres://postgres@127.0.0.1:{layout.pgbouncer_port}/postgres?passfile={layout.client_pgpass}"


def through_pgbouncer(cluster) -> tuple[bool, int]:
    """(in recovery, server port) of a new connection through PgBouncer."""
    with psycopg.connect(url(cluster), connect_timeout=3, autocommit=True, prepare_threshold=None) as conn:
        return conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()


def reaches(cluster, i: int) -> bool:
    try:
        return through_pgbouncer(cluster) == (False, cluster.layout.pg_port(i))
    except psycopg.Error:
        return False


class Writer:
    """One client through PgBouncer: an INSERT every 10 ms (autocommit); a failed statement or connection is one
    error, then it reconnects. Bounded: ``limit`` seconds at most, and each statement by PgBouncer's
    query_wait_timeout."""

    def __init__(self, cluster, tag: str, limit: float = 400) -> None:
        self.cluster, self.tag, self.limit = cluster, tag, limit
        self.acked: list[int] = []
        self.errors: list[tuple[float, str]] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        conn, k = None, 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(url(self.cluster), connect_timeout=3, autocommit=True,
                                           prepare_threshold=None)
                conn.execute("INSERT INTO pgb_writes (tag, n) VALUES (%s, %s)", (self.tag, k))
                self.acked.append(k)
                k += 1
            except psycopg.Error as e:
                self.errors.append((time.monotonic(), str(e).strip().splitlines()[0][:160]))
                if conn is not None:
                    conn.close()
                conn = None
            self.slowest = max(self.slowest, time.monotonic() - started)
            self._stop.wait(0.01)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Writer":
        with psycopg.connect(url(self.cluster), connect_timeout=3, autocommit=True, prepare_threshold=None) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS pgb_writes (tag text, n int)")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        assert not self._thread.is_alive(), "the writer did not stop"

    def progress_after(self, n: int, timeout: float = 30) -> None:
        wait_for(lambda: len(self.acked) > n + 5, timeout, "writes through PgBouncer to go on", interval=0.05)


def rows_on(cluster, i: int, tag: str) -> set[int]:
    from .conftest import connect
    with connect(cluster.layout, i) as conn:
        return {n for (n,) in conn.execute("SELECT n FROM pgb_writes WHERE tag = %s", (tag,))}


def switchover(cluster, leader: int, target: int) -> None:
    layout = cluster.layout
    r = requests.post(f"http://127.0.0.1:{layout.api_port(leader)}/switchover", timeout=60,
                      json={"leader": f"node{leader}", "candidate": f"node{target}"}, auth=api_auth(layout))
    assert (r.status_code, r.text) == (200, f'Successfully switched over to "node{target}"')


def follower_log(cluster) -> str:
    return Path(cluster.layout.path("pgbouncer-follower.log")).read_text()


def admin_clients(cluster) -> int:
    """Connections to PgBouncer's admin console (this one included)."""
    from pgha.pgbouncer.admin import Admin
    admin = Admin(f"host=127.0.0.1 port={cluster.layout.pgbouncer_port} user=postgres "
                  f"passfile={cluster.layout.client_pgpass}")
    try:
        return sum(1 for c in admin.command("SHOW CLIENTS") if c.get("database") == "pgbouncer")
    finally:
        admin.close()


def follower_settled(cluster) -> None:
    """The follower has read the DCS and holds its spare admin connection, opened right before the wait that
    starts its etcd watch (a switchover right after `up` could otherwise beat it)."""
    wait_for(lambda: "following the leader key" in follower_log(cluster), 20, "the follower to follow the key")
    wait_for(lambda: admin_clients(cluster) >= 2, 20, "the follower's spare admin connection")


def test_pgbouncer_is_installed():
    assert pgbouncer_binary(), "PgBouncer is not installed (Debian: apt-get install pgbouncer)"


def test_up_started_pgbouncer_and_its_follower(cluster):
    layout = cluster.layout
    state = read_state(layout)
    assert state.get("pgbouncer") is True
    assert pid_alive(state.get("pgbouncer_pid")) and pid_alive(state.get("pgbouncer_follower_pid"))
    st = os.stat(layout.pgbouncer_auth_file)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == postgres_account().uid
    # only what PgBouncer logs in with itself: the auth user (auth_query) and the admin console's user
    assert set(parse_auth_file(Path(layout.pgbouncer_auth_file).read_text())) == {"postgres", "pgbouncer"}
    ini = Path(layout.pgbouncer_ini).read_text().splitlines()
    assert "auth_user = pgbouncer" in ini and f"auth_query = {AUTH_QUERY}" in ini
    leader, _ = leader_and_replicas(cluster)
    assert targets(Path(layout.pgbouncer_ini).read_text()) == {
        "postgres": ("127.0.0.1", layout.pg_port(leader)), "*": ("127.0.0.1", layout.pg_port(leader))}


def test_writes_through_pgbouncer_reach_the_leader(cluster):
    leader, _ = leader_and_replicas(cluster)
    assert through_pgbouncer(cluster) == (False, cluster.layout.pg_port(leader))
    with psycopg.connect(url(cluster), connect_timeout=3, autocommit=True, prepare_threshold=None) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pgb_writes (tag text, n int)")
        conn.execute("INSERT INTO pgb_writes VALUES ('before', 1)")
    assert rows_on(cluster, leader, "before") == {1}


def as_app_user(cluster, password: str, dbname: str = "postgres") -> tuple[str, bool, int]:
    """(current_user, in recovery, server port) of a new connection through PgBouncer as ``app_user``."""
    with psycopg.connect(host="127.0.0.1", port=cluster.layout.pgbouncer_port, user="app_user", password=password,
                         dbname=dbname, connect_timeout=3, autocommit=True, prepare_threshold=None) as conn:
        return conn.execute("SELECT current_user::text, pg_is_in_recovery(), inet_server_port()").fetchone()


def test_a_role_created_later_logs_in_through_pgbouncer_also_after_a_switchover(cluster):
    """auth_user + auth_query: `app_user`, created on the leader after `up`, is looked up by PgBouncer in
    PostgreSQL (pgbouncer.get_auth); the function and the role are replicated, so after a switchover the same
    login works against the new leader. The auth file is not touched."""
    from .conftest import connect
    layout = cluster.layout
    leader, replicas = leader_and_replicas(cluster)
    auth_file = Path(layout.pgbouncer_auth_file).read_bytes()
    password = "app-" + os.urandom(9).hex()
    with connect(layout, leader) as conn:
        conn.execute("SET log_statement TO 'none'")
        conn.execute("DROP DATABASE IF EXISTS appdb")
        conn.execute("DROP ROLE IF EXISTS app_user")
        conn.execute(f"CREATE ROLE app_user LOGIN PASSWORD '{password}'")
        conn.execute("CREATE DATABASE appdb OWNER app_user")  # from template1: it has pgbouncer.get_auth too
        # the function is the auth user's only: app_user may not read other roles' secrets through it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE app_user")
            conn.execute("SELECT * FROM pgbouncer.get_auth('postgres')")
        conn.execute("RESET ROLE")
    assert as_app_user(cluster, password) == ("app_user", False, layout.pg_port(leader))
    assert as_app_user(cluster, password, "appdb") == ("app_user", False, layout.pg_port(leader))
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        as_app_user(cluster, password + "x")

    all_streaming(cluster)
    target = replicas[0]
    follower_settled(cluster)
    switchover(cluster, leader, target)
    wait_for(lambda: reaches(cluster, target), 30, f"PgBouncer -> the new leader node{target}")
    wait_for(lambda: as_app_user(cluster, password) == ("app_user", False, layout.pg_port(target)), 20,
             "app_user through PgBouncer on the new leader")
    assert as_app_user(cluster, password, "appdb") == ("app_user", False, layout.pg_port(target))
    assert Path(layout.pgbouncer_auth_file).read_bytes() == auth_file


def test_a_switchover_moves_pgbouncer_and_keeps_the_rest_of_the_file(cluster):
    layout = cluster.layout
    all_streaming(cluster)
    leader, replicas = leader_and_replicas(cluster)
    target = replicas[0]
    before = Path(layout.pgbouncer_ini).read_bytes()
    follower_settled(cluster)
    with Writer(cluster, "one") as writer:
        writer.progress_after(0)
        switchover(cluster, leader, target)
        wait_for(lambda: reaches(cluster, target), 30, f"PgBouncer -> the new leader node{target}")
        writer.progress_after(len(writer.acked))
    after = Path(layout.pgbouncer_ini).read_bytes()
    # only the host/port spans of the [databases] entries changed: the rest is byte-identical
    assert after.decode() == point_databases(before.decode(), "127.0.0.1", layout.pg_port(target))
    assert after != before
    assert set(writer.acked) <= rows_on(cluster, target, "one"), "an acknowledged write is missing"
    text = follower_log(cluster)
    assert f"node{leader} asked to step down: PAUSE sent" in text and f"RESUME: new leader node{target}" in text
    print(f"one switchover: {len(writer.acked)} writes, {len(writer.errors)} errors {writer.errors[:3]}, "
          f"slowest statement {writer.slowest * 1000:.0f} ms")


def test_ten_switchovers_through_pgbouncer_fail_no_transaction(cluster, tmp_path):
    """Issue #8's measurement with the verifier: its bank clients through PgBouncer (transaction pooling) over 10
    planned switchovers. PgBouncer is PAUSEd before the old leader stops taking writes and RESUMEd on the new
    one, so clients wait instead of failing: no failed transaction, nothing acknowledged lost."""
    all_streaming(cluster)
    follower_settled(cluster)
    out = tmp_path / "verify.json"
    argv = [sys.executable, "-m", "pgha", "-c", cluster.layout.ctl_config, "verify", "--duration", "80",
            "--clients", "3", "--seed", "8", "--dsn", url(cluster), "--json", str(out)]
    argv += ["--fault", "switchover"] * 10
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    data = json.loads(out.read_text())
    faults = data["faults"]
    assert [f["fault"] for f in faults] == ["switchover"] * 10, proc.stdout + proc.stderr
    assert all(f["injected_at"] is not None for f in faults), proc.stdout  # every switchover happened
    assert [f["failed_tx"] for f in faults] == [0] * 10, proc.stdout
    assert data["lost_acked"] == 0 and data["invariant_ok"], proc.stdout
    assert data["acked"] > 1000 and proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nten switchovers through PgBouncer: {data['acked']} acknowledged, 0 failed; unavailability "
          f"{[f['unavailability_s'] for f in faults]} s; longest stall {data['latency_ms'].get('max')} ms")


def test_a_failover_moves_pgbouncer_to_the_new_leader(cluster):
    layout = cluster.layout
    all_streaming(cluster)
    leader, _ = leader_and_replicas(cluster)
    with Writer(cluster, "failover") as writer:
        writer.progress_after(0)
        os.kill(agent_pid(cluster, leader), signal.SIGKILL)
        os.kill(postmaster_pid(cluster, leader), signal.SIGKILL)
        promoted = new_leader(cluster, f"node{leader}")
        writable_at = time.monotonic()
        wait_for(lambda: reaches(cluster, promoted), 20, f"PgBouncer -> the new leader node{promoted}",
                 interval=0.05)
        lag = time.monotonic() - writable_at
        since = len(writer.acked)
        writer.progress_after(since)
    # (writes acknowledged by the killed leader may be lost: replication is asynchronous; those after are not)
    assert set(writer.acked[since:]) <= rows_on(cluster, promoted, "failover"), "an acknowledged write is missing"
    assert f"leader changed: node{leader} -> node{promoted}" in follower_log(cluster)
    print(f"failover: PgBouncer reached node{promoted} {lag:.2f}s after it accepted writes directly; "
          f"{len(writer.errors)} client errors")
    assert lag < 3
    cluster.up(timeout=120, timing=TEST_TIMING)  # the dead node's agent again: it rejoins as a replica
    all_streaming(cluster)
    wait_for(lambda: reaches(cluster, promoted), 10, "PgBouncer still on the leader")


def test_down_ends_pgbouncer_and_its_follower_by_pid(cluster):
    state = read_state(cluster.layout)
    pids = state["pgbouncer_pid"], state["pgbouncer_follower_pid"]
    try:
        stopped = cluster.down()
        assert "pgbouncer" in stopped and "pgbouncer follower" in stopped
        assert not any(pid_alive(pid) for pid in pids)
    finally:
        cluster.up(timeout=120, timing=TEST_TIMING)  # state.json remembers --pgbouncer
    state = read_state(cluster.layout)
    assert pid_alive(state.get("pgbouncer_pid")) and pid_alive(state.get("pgbouncer_follower_pid"))
    leader, _ = leader_and_replicas(cluster)
    wait_for(lambda: reaches(cluster, leader), 20, "PgBouncer -> the leader after up")
