"""The REST API of real agents answers health checks as Patroni does (what HAProxy's checks rely on)."""

from __future__ import annotations

import socket

import pytest
import requests

from .conftest import wait_for
from .test_cluster import leader_and_replicas, snapshot

pytestmark = pytest.mark.integration


def url(cluster, i: int, path: str) -> str:
    return f"http://127.0.0.1:{cluster.layout.api_port(i)}{path}"


def status_line(cluster, i: int, method: str, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", cluster.layout.api_port(i)), timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_health_endpoints_on_the_leader_and_a_replica(cluster):
    leader, replicas = leader_and_replicas(cluster)
    replica = replicas[0]
    wait_for(lambda: requests.get(url(cluster, leader, "/primary"), timeout=2).status_code == 200, 20,
             "the leader's API to say primary")
    for path, on_leader, on_replica in [("/", 200, 503), ("/primary", 200, 503), ("/read-write", 200, 503),
                                        ("/leader", 200, 503), ("/replica", 503, 200), ("/read-only", 200, 200),
                                        ("/health", 200, 200), ("/liveness", 200, 200),
                                        ("/replica?lag=1MB", 503, 200), ("/nonsense", 503, 503)]:
        assert requests.get(url(cluster, leader, path), timeout=2).status_code == on_leader, path
        assert requests.get(url(cluster, replica, path), timeout=2).status_code == on_replica, path
    body = requests.get(url(cluster, leader, "/patroni"), timeout=2).json()
    assert body["role"] == "primary" and body["state"] == "running" and body["xlog"]["location"] > 0
    assert body["patroni"]["scope"] == "pgha-local" and "_pgha" not in body
    replica_body = requests.get(url(cluster, replica, "/patroni"), timeout=2).json()
    assert replica_body["role"] == "replica" and replica_body["replication_state"] == "streaming"


def test_options_and_head_answer_with_the_status_line_only(cluster):
    leader, replicas = leader_and_replicas(cluster)
    assert status_line(cluster, leader, "OPTIONS", "/") == b"HTTP/1.0 200 OK\r\n\r\n"
    assert status_line(cluster, replicas[0], "OPTIONS", "/").startswith(b"HTTP/1.0 503 ")
    assert status_line(cluster, replicas[0], "HEAD", "/replica") == b"HTTP/1.0 200 OK\r\n\r\n"


def test_cluster_and_metrics(cluster):
    leader, _ = leader_and_replicas(cluster)
    members = requests.get(url(cluster, leader, "/cluster"), timeout=2).json()["members"]
    assert sorted(m["role"] for m in members) == ["leader", "replica", "replica"]
    metrics = requests.get(url(cluster, leader, "/metrics"), timeout=2).text
    assert 'patroni_primary{scope="pgha-local",name="node' in metrics
    assert requests.post(url(cluster, leader, "/switchover"), timeout=2).status_code == 401  # writes need auth
    assert snapshot(cluster).member(f"node{leader}").api_url == f"http://127.0.0.1:{cluster.layout.api_port(leader)}/patroni"


def test_health_codes_of_a_lagging_replica_and_a_stopped_node(cluster):
    """Patroni's answers (spec section 2) where they differ: a replica whose replay lags beyond `lag`, and a node
    whose PostgreSQL is stopped (the cluster paused, so its agent leaves it stopped)."""
    import subprocess

    from .conftest import api_auth, connect
    from pgha.osuser import postgres_account
    leader, replicas = leader_and_replicas(cluster)
    replica = replicas[0]
    auth = api_auth(cluster.layout)
    with connect(cluster.layout, replica) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        with connect(cluster.layout, leader) as conn:  # ~2 MB of WAL the paused replica receives, not replays
            conn.execute("CREATE TABLE IF NOT EXISTS lagging AS SELECT g FROM generate_series(1, 1) g")
            conn.execute("INSERT INTO lagging SELECT g FROM generate_series(1, 40000) g")
        wait_for(lambda: requests.get(url(cluster, replica, "/replica?lag=64kB"), timeout=2).status_code == 503, 20,
                 "the lagging replica to fail /replica?lag=64kB")
        assert requests.get(url(cluster, replica, "/replica?lag=1GB"), timeout=2).status_code == 200
        assert requests.get(url(cluster, replica, "/replica"), timeout=2).status_code == 200  # no lag given
        assert requests.get(url(cluster, replica, "/readiness?lag=64kB"), timeout=2).status_code == 503
    finally:
        with connect(cluster.layout, replica) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
    assert requests.patch(url(cluster, leader, "/config"), json={"pause": True}, timeout=10, auth=auth).ok
    try:
        wait_for(lambda: requests.get(url(cluster, replica, "/patroni"), timeout=2).json().get("pause"), 20,
                 "the replica to see the pause")
        account = postgres_account()
        data = f"{cluster.layout.node_dir(replica)}/data"
        subprocess.run(["/usr/lib/postgresql/15/bin/pg_ctl", "stop", "-m", "fast", "-D", data], check=True,
                       capture_output=True, timeout=60, env=account.env(), **account.subprocess_kwargs())
        wait_for(lambda: requests.get(url(cluster, replica, "/patroni"), timeout=2).json()["state"] == "stopped",
                 20, "the replica's status to say stopped")
        for path, code in [("/", 503), ("/primary", 503), ("/replica", 503), ("/read-only", 503),
                           ("/health", 503), ("/liveness", 200), ("/readiness", 503)]:
            assert requests.get(url(cluster, replica, path), timeout=2).status_code == code, path
    finally:
        assert requests.patch(url(cluster, leader, "/config"), json={"pause": None}, timeout=10, auth=auth).ok
    wait_for(lambda: requests.get(url(cluster, replica, "/replica"), timeout=2).status_code == 200, 60,
             "the replica started again once the pause ended")
