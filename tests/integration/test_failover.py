"""Every way a leader fails, with real processes: exactly one node accepts writes at every instant we probe, a
healthy replica takes over (or the leader restarts in place), and the old leader rejoins as a replica.

A background prober asks every node, every 50 ms, whether it accepts writes (connects and is not in recovery);
each test asserts that no probe ever saw two writers.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

from pgha.local.layout import read_state
from pgha.procutil import pid_alive

from .conftest import TEST_TIMING, connect, wait_for
from .test_cluster import leader_and_replicas, snapshot

pytestmark = pytest.mark.integration


class WriterProbe:
    """Samples which nodes accept writes; records any instant with more than one."""

    def __init__(self, layout) -> None:
        self.layout = layout
        self.overlaps: list[tuple[float, list[int]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _writable(self, i: int) -> bool:
        try:
            with connect(self.layout, i, options="-c statement_timeout=500") as conn:
                return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return False

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            writers = [i for i in range(self.layout.nodes) if self._writable(i)]
            self.samples += 1
            if len(writers) > 1:
                self.overlaps.append((time.monotonic(), writers))
            self._stop.wait(0.05)

    def __enter__(self) -> "WriterProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert self.samples > 0
        assert not self.overlaps, f"two nodes accepted writes at once: {self.overlaps[:3]}"


def agent_pid(cluster, i: int) -> int:
    return read_state(cluster.layout)["agents"][f"node{i}"]


def postmaster_pid(cluster, i: int) -> int:
    with open(os.path.join(cluster.layout.node_dir(i), "data", "postmaster.pid")) as f:
        return int(f.readline())


def writable(cluster, i: int) -> bool:
    try:
        with connect(cluster.layout, i) as conn:
            return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]
    except psycopg.Error:
        return False


def new_leader(cluster, old: str) -> int:
    view = wait_for(lambda: (lambda v: v if v.leader not in (None, old) else None)(snapshot(cluster)),
                    TEST_TIMING["ttl"] * 4 + 10, f"a leader other than {old}")
    i = int(view.leader.removeprefix("node"))
    wait_for(lambda: writable(cluster, i), 30, f"node{i} to accept writes")
    return i


def all_streaming(cluster) -> None:
    def ok():
        view = snapshot(cluster)
        others = [m for m in view.members if m.name != view.leader]
        return (view.leader and len(others) == cluster.layout.nodes - 1
                and all(m.data.get("replication_state") == "streaming" for m in others))
    wait_for(ok, 90, "every replica to stream from the leader")


def write_rows(cluster, i: int, tag: str, n: int) -> None:
    with connect(cluster.layout, i) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS acked (tag text, n int)")
        for k in range(n):
            conn.execute("INSERT INTO acked VALUES (%s, %s)", (tag, k))


def count_rows(cluster, i: int, tag: str) -> int:
    with connect(cluster.layout, i) as conn:
        return conn.execute("SELECT count(*) FROM acked WHERE tag = %s", (tag,)).fetchone()[0]


def test_a_node_death_fails_over_and_the_old_leader_rejoins(cluster):
    leader, _ = leader_and_replicas(cluster)
    write_rows(cluster, leader, "a", 20)
    with WriterProbe(cluster.layout):
        os.kill(agent_pid(cluster, leader), signal.SIGKILL)
        os.kill(postmaster_pid(cluster, leader), signal.SIGKILL)
        promoted = new_leader(cluster, f"node{leader}")
        cluster.up(timeout=120, timing=TEST_TIMING)  # restarts the dead node's agent
        all_streaming(cluster)
    assert count_rows(cluster, promoted, "a") == 20
    history = snapshot(cluster).history
    assert history and history[-1][4] == f"node{promoted}" and history[-1][2] == "race_won"


def test_b_postgres_crash_restarts_in_place(cluster):
    leader, _ = leader_and_replicas(cluster)
    timeline = snapshot(cluster).member(f"node{leader}").timeline
    with WriterProbe(cluster.layout):
        os.kill(postmaster_pid(cluster, leader), signal.SIGKILL)
        wait_for(lambda: writable(cluster, leader), 30, "the leader's PostgreSQL to be restarted in place")
    view = snapshot(cluster)
    assert view.leader == f"node{leader}" and view.member(view.leader).timeline == timeline
    all_streaming(cluster)


def test_b_postgres_that_cannot_restart_hands_the_lock_over(cluster):
    """The crashed primary cannot start again (postgresql.auto.conf, which pgha never writes, asks for a port only
    root may bind): past primary_start_timeout the lock goes to a replica."""
    leader, _ = leader_and_replicas(cluster)
    auto_conf = os.path.join(cluster.layout.node_dir(leader), "data", "postgresql.auto.conf")
    with connect(cluster.layout, leader) as conn:
        conn.execute("ALTER SYSTEM SET port = 1")
    with WriterProbe(cluster.layout):
        os.kill(postmaster_pid(cluster, leader), signal.SIGKILL)
        try:
            new_leader(cluster, f"node{leader}")
        finally:
            _drop_setting(auto_conf, "port")
        all_streaming(cluster)


def _drop_setting(path: str, name: str) -> None:
    """Take ``name`` out of a postgresql.auto.conf again (file owner and mode kept)."""
    st = os.stat(path)
    with open(path) as f:
        kept = [line for line in f if not line.strip().startswith(f"{name} ")]
    with open(path, "w") as f:
        f.writelines(kept)
    os.chown(path, st.st_uid, st.st_gid)


def test_c_graceful_stop_hands_over_without_loss(cluster):
    leader, _ = leader_and_replicas(cluster)
    write_rows(cluster, leader, "c", 200)
    pid = agent_pid(cluster, leader)
    with WriterProbe(cluster.layout):
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        promoted = new_leader(cluster, f"node{leader}")
        handover = time.monotonic() - stopped_at
        assert count_rows(cluster, promoted, "c") == 200
        # The lock is handed over, not left to expire.
        assert handover < TEST_TIMING["ttl"], handover
        wait_for(lambda: not pid_alive(pid), 30, "the stopped agent to exit")
        cluster.up(timeout=120, timing=TEST_TIMING)
        all_streaming(cluster)


def test_e_frozen_agent_is_fenced_and_rejoins_after_sigcont(cluster):
    leader, _ = leader_and_replicas(cluster)
    pid = agent_pid(cluster, leader)
    session = connect(cluster.layout, leader)
    with WriterProbe(cluster.layout):
        os.kill(pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            def fenced() -> bool:
                try:
                    session.execute("SELECT 1")
                    return False
                except psycopg.Error:
                    return True
            wait_for(fenced, TEST_TIMING["ttl"] + 5, "the frozen leader's PostgreSQL to be fenced", interval=0.05)
            assert time.monotonic() - frozen_at < TEST_TIMING["ttl"]
            new_leader(cluster, f"node{leader}")
        finally:
            os.kill(pid, signal.SIGCONT)
            session.close()
        all_streaming(cluster)
    assert not writable(cluster, leader)
