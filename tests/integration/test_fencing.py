"""The single-writer rule with real processes: a leader that cannot reach the DCS stops accepting writes before its
lease could have expired, ending the sessions already open; when the DCS comes back, one leader takes over.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from pgha.local.layout import read_state

from .conftest import TEST_TIMING, connect, wait_for
from .test_cluster import leader_and_replicas, snapshot

pytestmark = pytest.mark.integration


def is_primary(layout, i: int) -> bool:
    try:
        with connect(layout, i) as conn:
            return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError:
        return False  # not running: certainly not accepting writes


def test_leader_cut_off_from_the_dcs_fences_itself_in_time(cluster):
    layout = cluster.layout
    leader, replicas = leader_and_replicas(cluster)
    session = connect(layout, leader)  # a session opened before the cut: it must be ended too
    session.execute("CREATE TABLE IF NOT EXISTS fence_probe (t timestamptz)")
    etcd_pid = read_state(layout)["etcd_pid"]
    os.kill(etcd_pid, signal.SIGSTOP)  # the DCS stops answering anyone
    frozen_at = time.monotonic()
    try:
        # Writes are accepted until the fence; the session opened before the cut must die with it.
        def fenced() -> bool:
            try:
                session.execute("INSERT INTO fence_probe VALUES (now())")
                return False
            except psycopg.Error:
                return True
        wait_for(fenced, TEST_TIMING["ttl"] + 5, "the old session to be cut off", interval=0.05)
        fenced_after = time.monotonic() - frozen_at
        # The lease was renewed at most loop_wait before the cut; it cannot expire before ttl - loop_wait.
        assert fenced_after < TEST_TIMING["ttl"] - TEST_TIMING["loop_wait"], fenced_after
        wait_for(lambda: not is_primary(layout, leader), 30, "the old leader to stop accepting writes")
        for i in range(layout.nodes):
            assert not is_primary(layout, i), f"node{i} accepts writes while the DCS is down"
    finally:
        os.kill(etcd_pid, signal.SIGCONT)
        session.close()
    view = wait_for(lambda: (lambda v: v if v.leader else None)(snapshot(cluster)), 60, "a new leader")
    new_leader = int(view.leader.removeprefix("node"))
    wait_for(lambda: is_primary(layout, new_leader), 30, "the new leader to accept writes")
    writers = [i for i in range(layout.nodes) if is_primary(layout, i)]
    assert writers == [new_leader]
    wait_for(lambda: all(m.data.get("replication_state") == "streaming"
                         for m in snapshot(cluster).members if m.name != view.leader),
             60, "the others to stream from the new leader")
