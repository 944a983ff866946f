"""Health-check codes of the REST API as Patroni 4.1 gives them: a table of (status, path, query) → code.

Statuses are built with the agent's own builder (build_status); ``now`` is a fixed number. The last tests send a
few rows over a real server with HEAD and OPTIONS and check the reply is the bare status line HAProxy reads.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from pgha.api import ApiServer, StatusBoard, build_status, health_code, liveness_code, readiness_code
from pgha.api.health import parse_bytes
from pgha.config.schema import RestApi

NOW = 1_700_000_000.0
TIP = 0x5000_0000  # the leader's WAL position (and the DCS status optime)
MB = 1024 * 1024


def status(**overrides):
    values = dict(name="n1", scope="demo", state="running", role="primary", pg_running=True, server_version=160004,
                  postmaster_start_time="2024-08-28 19:39:26.352526+00:00", timeline=2, xlog={"location": TIP},
                  replication=[], replication_state=None, tags={"dc": "east"}, system_id="7268616322854375442",
                  lock_holder=True, cluster_unlocked=False, dcs_last_seen=int(NOW) - 1, pause=False,
                  pending_restart=False, last_tick_wall=NOW - 0.5, loop_wait=1, ttl=4,
                  maximum_lag_on_failover=MB, status_optime=TIP)
    values.update(overrides)
    return build_status(**values)


def replica_xlog(behind: int, received_behind: int | None = None) -> dict:
    received = behind if received_behind is None else received_behind
    return {"received_location": TIP - received, "replayed_location": TIP - behind, "replayed_timestamp": None,
            "paused": False}


LEADER = status()
REPLICA = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(1000),
                 tags={"dc": "east", "clonefrom": True, "nofailover": False})
LAGGING = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(50 * MB))
LAGGING_NO_DCS = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(50 * MB),
                        dcs_last_seen=int(NOW) - 60)
LAGGING_BY_RECEIVER = status(role="replica", lock_holder=False, replication_state="streaming",
                             xlog=replica_xlog(50 * MB), dcs_last_seen=int(NOW) - 60, latest_end_lsn=TIP)
ARCHIVE = status(role="replica", lock_holder=False, replication_state="in archive recovery", xlog=replica_xlog(0))
STOPPED = status(state="stopped", role="replica", pg_running=False, lock_holder=False)
NOLOADBALANCE = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(0),
                       tags={"noloadbalance": True})
STANDBY_LEADER = status(role="standby_leader", standby_cluster=True, replication_state="streaming",
                        xlog=replica_xlog(0))
FROZEN_LEADER = status(last_tick_wall=NOW - 10)  # the agent said "lock holder" 10 s ago; ttl is 4
PAUSED_NO_DCS = status(lock_holder=False, pause=True, dcs_last_seen=int(NOW) - 60)
LEADER_NO_DCS = status(dcs_last_seen=int(NOW) - 60)  # lock still valid, DCS view stale
PROMOTING = status(role="replica", replication_state="streaming", xlog=replica_xlog(0))  # lock held, still replica
SYNC = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(1000),
              sync="sync_standby")
QUORUM = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(1000),
                sync="quorum_standby")
SYNC_LAGGING = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(50 * MB),
                      sync="sync_standby")
SYNC_NO_DCS = status(role="replica", lock_holder=False, replication_state="streaming", xlog=replica_xlog(0),
                     sync="sync_standby", dcs_last_seen=int(NOW) - 60)
SYNC_STOPPED = status(state="stopped", role="replica", pg_running=False, lock_holder=False, sync="sync_standby")
LEADER_IN_KEY = status(sync="sync_standby")  # the flag is a replica's only: a primary never carries it

TABLE = [
    # --- the leader
    ("leader", LEADER, "/", 200), ("leader", LEADER, "/primary", 200), ("leader", LEADER, "/master", 200),
    ("leader", LEADER, "/read-write", 200), ("leader", LEADER, "/leader", 200),
    ("leader", LEADER, "/standby-leader", 503), ("leader", LEADER, "/standby_leader", 503),
    ("leader", LEADER, "/replica", 503), ("leader", LEADER, "/read-only", 200), ("leader", LEADER, "/health", 200),
    ("leader", LEADER, "/sync", 503), ("leader", LEADER, "/synchronous", 503), ("leader", LEADER, "/quorum", 503),
    ("leader", LEADER, "/async", 503), ("leader", LEADER, "/asynchronous", 503),
    ("leader", LEADER, "/read-only-sync", 200), ("leader", LEADER, "/read-only-synchronous", 200),
    ("leader", LEADER, "/read-only-quorum", 200), ("leader", LEADER, "/anything-else", 503),
    ("leader", LEADER, "/patroni", 503), ("leader", LEADER, "/sync/", 503),
    # tag filters are ignored on leader paths, applied elsewhere
    ("leader", LEADER, "/primary?tag_dc=west", 200), ("leader", LEADER, "/?tag_dc=west", 200),
    ("leader", LEADER, "/leader?tag_dc=west", 200), ("leader", LEADER, "/read-only?tag_dc=west", 503),
    ("leader", LEADER, "/read-only?tag_dc=east", 200), ("leader", LEADER, "/health?tag_dc=west", 503),
    ("leader", LEADER, "/read-only-sync?tag_dc=west", 503),
    # --- a streaming replica 1000 bytes behind
    ("replica", REPLICA, "/", 503), ("replica", REPLICA, "/primary", 503), ("replica", REPLICA, "/leader", 503),
    ("replica", REPLICA, "/standby-leader", 503), ("replica", REPLICA, "/replica", 200),
    ("replica", REPLICA, "/read-only", 200), ("replica", REPLICA, "/health", 200),
    ("replica", REPLICA, "/async", 200), ("replica", REPLICA, "/asynchronous", 200),
    ("replica", REPLICA, "/sync", 503), ("replica", REPLICA, "/synchronous", 503),
    ("replica", REPLICA, "/quorum", 503), ("replica", REPLICA, "/read-only-sync", 503),
    ("replica", REPLICA, "/read-only-quorum", 503), ("replica", REPLICA, "/replica/anything", 200),
    ("replica", REPLICA, "/replica?lag=1MB", 200), ("replica", REPLICA, "/replica?lag=1024", 200),
    ("replica", REPLICA, "/replica?lag=500", 503), ("replica", REPLICA, "/async?lag=500", 503),
    ("replica", REPLICA, "/read-only?lag=500", 503), ("replica", REPLICA, "/replica?lag=nonsense", 200),
    ("replica", REPLICA, "/replica?replication_state=streaming", 200),
    ("replica", REPLICA, "/replica?replication_state=in+archive+recovery", 503),
    ("replica", REPLICA, "/replica?tag_dc=east", 200), ("replica", REPLICA, "/replica?tag_dc=west", 503),
    ("replica", REPLICA, "/replica?tag_rack=r1", 503), ("replica", REPLICA, "/replica?tag_clonefrom=true", 200),
    ("replica", REPLICA, "/replica?tag_clonefrom=True", 503),
    ("replica", REPLICA, "/replica?tag_nofailover=false", 200),
    ("replica", REPLICA, "/replica?tag_dc=east&tag_clonefrom=true", 200),
    ("replica", REPLICA, "/async?tag_dc=west", 503),
    # --- a replica 50 MB behind the DCS optime
    ("lagging", LAGGING, "/replica", 200), ("lagging", LAGGING, "/replica?lag=16MB", 503),
    ("lagging", LAGGING, "/replica?lag=16384kB", 503), ("lagging", LAGGING, "/replica?lag=64MB", 200),
    ("lagging", LAGGING, "/replica?lag=1GB", 200), ("lagging", LAGGING, "/async?lag=16MB", 503),
    ("lagging", LAGGING, "/read-only?lag=16MB", 503), ("lagging", LAGGING, "/health?lag=16MB", 200),
    # without a fresh DCS view the optime is unknown (not lagging) and the /async family is off
    ("lagging, DCS stale", LAGGING_NO_DCS, "/replica?lag=16MB", 200),
    ("lagging, DCS stale", LAGGING_NO_DCS, "/async", 503),
    # ... unless the WAL receiver reports the upstream's position
    ("lagging, receiver", LAGGING_BY_RECEIVER, "/replica?lag=16MB", 503),
    ("lagging, receiver", LAGGING_BY_RECEIVER, "/replica?lag=64MB", 200),
    # --- archive recovery
    ("archive", ARCHIVE, "/replica", 200), ("archive", ARCHIVE, "/replica?replication_state=streaming", 503),
    ("archive", ARCHIVE, "/replica?replication_state=in%20archive%20recovery", 200),
    # --- PostgreSQL stopped
    ("stopped", STOPPED, "/", 503), ("stopped", STOPPED, "/replica", 503), ("stopped", STOPPED, "/read-only", 503),
    ("stopped", STOPPED, "/health", 503), ("stopped", STOPPED, "/async", 503), ("stopped", STOPPED, "/leader", 503),
    # --- noloadbalance
    ("noloadbalance", NOLOADBALANCE, "/replica", 503), ("noloadbalance", NOLOADBALANCE, "/read-only", 503),
    ("noloadbalance", NOLOADBALANCE, "/async", 503), ("noloadbalance", NOLOADBALANCE, "/health", 200),
    # --- leader of a standby cluster
    ("standby leader", STANDBY_LEADER, "/standby-leader", 200),
    ("standby leader", STANDBY_LEADER, "/standby_leader", 200), ("standby leader", STANDBY_LEADER, "/leader", 200),
    ("standby leader", STANDBY_LEADER, "/primary", 503), ("standby leader", STANDBY_LEADER, "/", 503),
    ("standby leader", STANDBY_LEADER, "/replica", 503), ("standby leader", STANDBY_LEADER, "/read-only", 200),
    ("standby leader", STANDBY_LEADER, "/read-only-sync", 200),
    # --- lock holder facts
    ("frozen agent", FROZEN_LEADER, "/primary", 503), ("frozen agent", FROZEN_LEADER, "/leader", 503),
    ("frozen agent", FROZEN_LEADER, "/read-only", 503), ("frozen agent", FROZEN_LEADER, "/health", 200),
    ("paused, DCS stale", PAUSED_NO_DCS, "/primary", 200), ("paused, DCS stale", PAUSED_NO_DCS, "/leader", 200),
    ("paused, DCS stale", PAUSED_NO_DCS, "/standby-leader", 503), ("paused, DCS stale", PAUSED_NO_DCS, "/sync", 503),
    ("leader, DCS stale", LEADER_NO_DCS, "/primary", 200),
    ("leader, DCS stale", LEADER_NO_DCS, "/read-only-sync", 503),
    ("promoting", PROMOTING, "/primary", 200), ("promoting", PROMOTING, "/replica", 200),
    # --- a sync standby (synchronous_mode on, listed in the sync key)
    ("sync standby", SYNC, "/sync", 200), ("sync standby", SYNC, "/synchronous", 200),
    ("sync standby", SYNC, "/quorum", 503), ("sync standby", SYNC, "/async", 503),
    ("sync standby", SYNC, "/asynchronous", 503), ("sync standby", SYNC, "/read-only-sync", 200),
    ("sync standby", SYNC, "/read-only-synchronous", 200), ("sync standby", SYNC, "/read-only-quorum", 503),
    ("sync standby", SYNC, "/replica", 200), ("sync standby", SYNC, "/read-only", 200),
    ("sync standby", SYNC, "/primary", 503), ("sync standby", SYNC, "/sync?lag=500", 503),
    ("sync standby", SYNC, "/sync?tag_dc=west", 503), ("sync standby", SYNC, "/sync?tag_dc=east", 200),
    ("sync standby", SYNC, "/read-only-sync?lag=500", 503),
    ("sync standby, lagging", SYNC_LAGGING, "/sync?lag=16MB", 503),
    ("sync standby, lagging", SYNC_LAGGING, "/sync", 200),
    ("sync standby, DCS stale", SYNC_NO_DCS, "/sync", 503),
    ("sync standby, DCS stale", SYNC_NO_DCS, "/read-only-sync", 503),
    ("sync standby, DCS stale", SYNC_NO_DCS, "/replica", 200),
    ("sync standby, stopped", SYNC_STOPPED, "/sync", 503),
    ("sync standby, stopped", SYNC_STOPPED, "/async", 503),
    # --- a quorum standby (synchronous_mode quorum, listed in the sync key)
    ("quorum standby", QUORUM, "/quorum", 200), ("quorum standby", QUORUM, "/sync", 503),
    ("quorum standby", QUORUM, "/synchronous", 503), ("quorum standby", QUORUM, "/async", 503),
    ("quorum standby", QUORUM, "/read-only-quorum", 200), ("quorum standby", QUORUM, "/read-only-sync", 503),
    ("quorum standby", QUORUM, "/read-only-synchronous", 503), ("quorum standby", QUORUM, "/replica", 200),
    ("quorum standby", QUORUM, "/quorum?lag=500", 503),
    # --- the leader keeps its answers whatever the key says
    ("leader in key", LEADER_IN_KEY, "/sync", 503), ("leader in key", LEADER_IN_KEY, "/read-only-sync", 200),
    ("leader in key", LEADER_IN_KEY, "/read-only-quorum", 200), ("leader in key", LEADER_IN_KEY, "/async", 503),
    # --- nothing published yet
    ("empty", {}, "/", 503), ("empty", {}, "/health", 503), ("empty", {}, "/replica", 503),
]


def split(target: str) -> tuple[str, dict[str, list[str]]]:
    url = urlsplit(target)
    return url.path, parse_qs(url.query)


@pytest.mark.parametrize("label,value,target,code", TABLE, ids=[f"{r[0]}:{r[2]}" for r in TABLE])
def test_health_table(label, value, target, code):
    path, query = split(target)
    assert health_code(path, query, value, NOW) == code


@pytest.mark.parametrize("text,expected", [
    ("1048576", 1048576), ("1024kB", MB), ("10MB", 10 * MB), ("1GB", 1024 * MB), ("1TB", 1024 * 1024 * MB),
    ("1.5MB", 1536 * 1024), (" 5 MB ", 5 * MB), ("0x400", 1024), ("010", 8), ("1e3", 1000), ("16kB", 16384),
    ("nonsense", None), ("10XB", None), ("10mb", None), ("", None), (None, None),
])
def test_lag_values_read_like_patroni(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("value,now,code", [
    (LEADER, NOW, 200),
    (status(last_tick_wall=NOW - 4.4), NOW, 200),  # next run NOW-3.4, overdue by 3.4 < ttl
    (status(last_tick_wall=NOW - 5.1), NOW, 503),  # overdue by 4.1 > ttl on a running primary
    (REPLICA, NOW, 200),
    (status(role="replica", lock_holder=False, last_tick_wall=NOW - 8.9), NOW, 200),  # replicas get 2×ttl
    (status(role="replica", lock_holder=False, last_tick_wall=NOW - 9.1), NOW, 503),
    (status(state="stopped", pg_running=False, last_tick_wall=NOW - 8.9), NOW, 200),  # a stopped primary: 2×ttl
    (status(last_tick_wall=NOW - 60, pause=True), NOW, 200),  # paused: a stuck loop is fine
    ({}, NOW, 503),
])
def test_liveness(value, now, code):
    assert liveness_code(value, now) == code


@pytest.mark.parametrize("value,target,code", [
    (LEADER, "/readiness", 200),
    (STOPPED, "/readiness", 503),
    (status(state="stopped", pg_running=False), "/readiness", 200),  # the lock holder is ready
    (REPLICA, "/readiness", 200),
    (LAGGING, "/readiness", 503),  # 50 MB > maximum_lag_on_failover (1 MB)
    (LAGGING, "/readiness?lag=64MB", 200),
    (LAGGING, "/readiness?lag=nonsense", 503),
    (status(role="replica", lock_holder=False, replication_state="streaming",
            xlog=replica_xlog(50 * MB, received_behind=0)), "/readiness?mode=write", 200),
    (status(role="replica", lock_holder=False, replication_state="streaming",
            xlog=replica_xlog(50 * MB, received_behind=0)), "/readiness?mode=apply", 503),
    (ARCHIVE, "/readiness", 503),  # not streaming
    (LAGGING_NO_DCS, "/readiness?lag=1GB", 503),  # DCS is not accessible
    (LAGGING_BY_RECEIVER, "/readiness?lag=64MB", 200),
    (FROZEN_LEADER, "/readiness", 503),
])
def test_readiness(value, target, code):
    path, query = split(target)
    assert readiness_code(value, query, NOW) == code


# --- the same decisions over HTTP, HEAD and OPTIONS: the status line alone -------------------------------------

def _status_line_only(port: int, method: str, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("value,target,code", [
    (LEADER, "/", 200), (LEADER, "/replica", 503), (REPLICA, "/replica?lag=1MB", 200),
    (LAGGING, "/replica?lag=16MB", 503), (REPLICA, "/replica?tag_dc=west", 503), (NOLOADBALANCE, "/replica", 503),
    (STOPPED, "/health", 503), (LEADER, "/patroni", 503),
])
def test_head_and_options_answer_with_the_status_line_only(value, target, code):
    # the server reads the wall clock: publish the same facts relative to it
    shift = time.time() - NOW
    live = dict(value, dcs_last_seen=value["dcs_last_seen"] + int(shift))
    live["_pgha"] = dict(value["_pgha"], last_tick_wall=value["_pgha"]["last_tick_wall"] + shift)
    reason = {200: "OK", 503: "Service Unavailable"}[code]
    with ApiServer(RestApi(listen="127.0.0.1:0", connect_address="127.0.0.1:8008"), StatusBoard(live)) as api:
        for method in ("HEAD", "OPTIONS"):
            assert _status_line_only(api.port, method, target) == f"HTTP/1.0 {code} {reason}\r\n\r\n".encode()
