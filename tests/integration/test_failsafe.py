"""Failsafe mode with real processes: with etcd stopped and every member answering, the primary keeps taking
writes; with etcd stopped and one replica silent too, it stops accepting writes before its last lease runs out.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
import requests

from pgha.local.layout import read_state

from .conftest import TEST_TIMING, api_auth, connect, wait_for
from .test_cluster import leader_and_replicas, snapshot
from .test_fencing import is_primary

pytestmark = pytest.mark.integration


def api(cluster, i: int, path: str) -> str:
    return f"http://127.0.0.1:{cluster.layout.api_port(i)}{path}"


def write(layout, leader: int) -> bool:
    try:
        with connect(layout, leader) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS failsafe_probe (t timestamptz)")
            conn.execute("INSERT INTO failsafe_probe VALUES (now())")
        return True
    except psycopg.Error:
        return False


def test_failsafe_mode_keeps_the_primary_only_while_every_member_answers(cluster):
    layout = cluster.layout
    leader, replicas = leader_and_replicas(cluster)
    r = requests.patch(api(cluster, leader, "/config"), json={"failsafe_mode": True}, timeout=10,
                       auth=api_auth(layout))
    assert r.status_code == 200 and r.json()["failsafe_mode"] is True
    wait_for(lambda: len(snapshot(cluster).failsafe or {}) == layout.nodes, 30, "the failsafe key listing everyone")
    wait_for(lambda: requests.get(api(cluster, replicas[0], "/failsafe"), timeout=2).status_code == 200, 10,
             "GET /failsafe on a replica")
    state = read_state(layout)
    etcd_pid = state["etcd_pid"]
    silent_agent = state["agents"][layout.name(replicas[1])]
    os.kill(etcd_pid, signal.SIGSTOP)
    try:
        # Three lease lengths without the DCS: every write must still succeed (bounded by count and time).
        until = time.monotonic() + 3 * TEST_TIMING["ttl"]
        for _ in range(200):
            if time.monotonic() >= until:
                break
            assert write(layout, leader), "the primary stopped taking writes although every member answers"
            time.sleep(0.25)  # pacing of the write load, not a wait for a condition
        body = requests.get(api(cluster, leader, "/patroni"), timeout=2).json()
        assert body["role"] == "primary"
        os.kill(silent_agent, signal.SIGSTOP)  # one replica stops answering POST /failsafe
        stopped_at = time.monotonic()
        try:
            wait_for(lambda: not is_primary(layout, leader), TEST_TIMING["ttl"] + 5,
                     "the primary to stop accepting writes", interval=0.1)
            assert time.monotonic() - stopped_at < TEST_TIMING["ttl"] + 2
            for i in range(layout.nodes):
                assert not is_primary(layout, i), f"node{i} accepts writes"
        finally:
            os.kill(silent_agent, signal.SIGCONT)
    finally:
        os.kill(etcd_pid, signal.SIGCONT)
    view = wait_for(lambda: (lambda v: v if v.leader else None)(snapshot(cluster)), 60, "a leader again")
    new_leader = int(view.leader.removeprefix("node"))
    wait_for(lambda: is_primary(layout, new_leader), 30, "the leader to accept writes")
    assert [i for i in range(layout.nodes) if is_primary(layout, i)] == [new_leader]
