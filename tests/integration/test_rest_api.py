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
