"""The REST API server on 127.0.0.1: codes, bodies and headers as Patroni sends them, TLS, bounded start/stop.

No mocks: a real server on an ephemeral port, a StatusBoard holding plain values, http.client or raw sockets as
the client, certificates made with the openssl command.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from pgha.api import ApiServer, Handler, StatusBoard, build_status, requires_access
from pgha.config.schema import RestApi
from pgha.core.model import ClusterView, Member

TIP = 0x5000_04E8


def make_status(**overrides):
    values = dict(name="n1", scope="demo", state="running", role="primary", pg_running=True, server_version=160004,
                  postmaster_start_time="2024-08-28 19:39:26.352526+00:00", timeline=2, xlog={"location": TIP},
                  replication=[{"usename": "replicator", "application_name": "n2", "client_addr": "10.0.0.2",
                                "state": "streaming", "sync_state": "async", "sync_priority": 0}],
                  replication_state=None, tags={"clonefrom": True}, system_id="7268616322854375442",
                  lock_holder=True, cluster_unlocked=False, dcs_last_seen=int(time.time()), pause=False,
                  pending_restart=False, last_tick_wall=time.time(), loop_wait=1, ttl=4,
                  maximum_lag_on_failover=1048576, status_optime=TIP)
    values.update(overrides)
    return build_status(**values)


VIEW = ClusterView(
    leader="n1",
    members=(
        Member(name="n2", conn_url="postgres://10.0.0.2:5433/postgres", api_url="http://10.0.0.2:8008/patroni",
               state="running", role="replica", xlog_location=TIP - 1000, timeline=2,
               data={"conn_url": "postgres://10.0.0.2:5433/postgres", "api_url": "http://10.0.0.2:8008/patroni",
                     "state": "running", "role": "replica", "xlog_location": TIP - 1000, "timeline": 2,
                     "receive_lsn": TIP - 1000, "replay_lsn": TIP - 2000, "replication_state": "streaming"}),
        Member(name="n1", conn_url="postgres://10.0.0.1:5432/postgres", api_url="http://10.0.0.1:8008/patroni",
               state="running", role="primary", xlog_location=TIP, timeline=2, tags={"clonefrom": True},
               data={"conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
                     "state": "running", "role": "primary", "xlog_location": TIP, "timeline": 2,
                     "tags": {"clonefrom": True}}),
        Member(name="n3", conn_url="postgres://10.0.0.3:5432/postgres", state="stopped", role="replica",
               data={"conn_url": "postgres://10.0.0.3:5432/postgres", "state": "stopped", "role": "replica"}),
    ),
    initialize="7268616322854375442", config={"ttl": 4, "loop_wait": 1, "pause": True},
    history=((1, 25165984, "no recovery target specified", "2024-08-28T19:40:01+00:00", "n0"),),
    status_optime=TIP,
)


def cfg(**overrides) -> RestApi:
    return RestApi(**{"listen": "127.0.0.1:0", "connect_address": "127.0.0.1:8008", **overrides})


@pytest.fixture
def board():
    return StatusBoard(make_status(), VIEW)


@pytest.fixture
def api(board):
    with ApiServer(cfg(), board) as server:
        yield server


def request(api, method, path, body=None, headers=None, context=None):
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", api.port, timeout=5, context=context)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read(), resp.version
    finally:
        conn.close()


def raw(port, data: bytes, context: ssl.SSLContext | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        sock = context.wrap_socket(plain, server_hostname="127.0.0.1") if context else plain
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


# --- GET ---------------------------------------------------------------------------------------------------------

def test_get_patroni_is_the_status_without_private_fields(api, board):
    code, headers, body, version = request(api, "GET", "/patroni?ignored=1")
    assert (code, version, headers["Content-Type"]) == (200, 10, "application/json")
    assert headers["Server"].startswith("BaseHTTP/") and "Date" in headers
    data = json.loads(body)
    assert list(data) == ["state", "postmaster_start_time", "role", "server_version", "xlog", "timeline",
                          "replication", "dcs_last_seen", "tags", "database_system_identifier", "patroni"]
    assert data["xlog"] == {"location": TIP} and data["patroni"] == {"version": "4.1.5", "scope": "demo",
                                                                      "name": "n1"}
    assert "_pgha" not in data and "_pgha" in board.status()


def test_patroni_is_200_whatever_the_health(api, board):
    board.publish(make_status(state="stopped", pg_running=False, lock_holder=False), None)
    code, _, body, _ = request(api, "GET", "/patroni")
    assert code == 200 and json.loads(body)["state"] == "stopped"


def test_health_paths_answer_the_patroni_json_with_the_code(api, board):
    for path, code in [("/", 200), ("/primary", 200), ("/leader", 200), ("/replica", 503), ("/health", 200),
                       ("/read-only", 200), ("/sync", 503), ("/nonsense", 503)]:
        got, headers, body, _ = request(api, "GET", path)
        assert (path, got) == (path, code)
        assert headers["Content-Type"] == "application/json" and json.loads(body)["role"] == "primary"


def test_a_newly_published_status_is_seen_by_the_next_request(api, board):
    assert request(api, "GET", "/replica")[0] == 503
    board.publish(make_status(role="replica", lock_holder=False, replication_state="streaming",
                              xlog={"received_location": TIP, "replayed_location": TIP, "paused": False}), VIEW)
    code, _, body, _ = request(api, "GET", "/replica")
    data = json.loads(body)
    assert code == 200 and data["xlog"] == {"received_location": TIP, "replayed_location": TIP,
                                            "replayed_timestamp": None, "paused": False}
    assert data["replication_state"] == "streaming"


def test_postgres_down_shows_only_state_role_and_flags(api, board):
    board.publish(make_status(state="running", pg_running=False, lock_holder=False, cluster_unlocked=True,
                              pause=True, pending_restart=True), None)
    data = json.loads(request(api, "GET", "/patroni")[2])
    assert data == {"state": "unknown", "role": "primary", "pause": True, "cluster_unlocked": True,
                    "dcs_last_seen": data["dcs_last_seen"], "tags": {"clonefrom": True},
                    "database_system_identifier": "7268616322854375442", "pending_restart": True,
                    "pending_restart_reason": {}, "patroni": {"version": "4.1.5", "scope": "demo", "name": "n1"}}


# --- HEAD / OPTIONS ----------------------------------------------------------------------------------------------

def test_head_and_options_send_the_status_line_and_nothing_else(api):
    assert raw(api.port, b"OPTIONS / HTTP/1.0\r\n\r\n") == b"HTTP/1.0 200 OK\r\n\r\n"
    assert raw(api.port, b"HEAD /primary HTTP/1.1\r\nHost: x\r\n\r\n") == b"HTTP/1.0 200 OK\r\n\r\n"
    assert raw(api.port, b"OPTIONS /replica HTTP/1.0\r\n\r\n") == b"HTTP/1.0 503 Service Unavailable\r\n\r\n"
    # Patroni's quirk: HEAD is never routed, so /patroni is judged as an unknown health path
    assert raw(api.port, b"HEAD /patroni HTTP/1.0\r\n\r\n") == b"HTTP/1.0 503 Service Unavailable\r\n\r\n"


def test_liveness_and_readiness_are_status_lines(api, board):
    assert raw(api.port, b"GET /liveness HTTP/1.0\r\n\r\n") == b"HTTP/1.0 200 OK\r\n\r\n"
    assert raw(api.port, b"GET /readiness HTTP/1.0\r\n\r\n") == b"HTTP/1.0 200 OK\r\n\r\n"
    board.publish(make_status(last_tick_wall=time.time() - 30, lock_holder=False, role="replica"), VIEW)
    assert raw(api.port, b"GET /liveness HTTP/1.0\r\n\r\n") == b"HTTP/1.0 503 Service Unavailable\r\n\r\n"
    assert raw(api.port, b"GET /readiness HTTP/1.0\r\n\r\n") == b"HTTP/1.0 503 Service Unavailable\r\n\r\n"


# --- DCS views -----------------------------------------------------------------------------------------------------

def test_cluster_is_patronis_cluster_as_json(api):
    code, headers, body, _ = request(api, "GET", "/cluster")
    assert code == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert [m["name"] for m in data["members"]] == ["n1", "n2", "n3"]
    n1, n2, n3 = data["members"]
    assert n1 == {"name": "n1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
                  "host": "10.0.0.1", "port": 5432, "timeline": 2, "tags": {"clonefrom": True}}
    assert n2["role"] == "replica" and n2["state"] == "streaming" and n2["port"] == 5433
    assert (n2["receive_lsn"], n2["receive_lag"], n2["replay_lsn"], n2["replay_lag"], n2["lsn"], n2["lag"]) == \
        ("0/50000100", 1000, "0/4FFFFD18", 2000, "0/50000100", 1000)
    assert n3["api_url"] is None and n3["state"] == "stopped"
    assert (n3["lsn"], n3["lag"], n3["receive_lsn"], n3["replay_lag"]) == ("unknown",) * 4
    assert data["pause"] is True and data["scope"] == "demo"


def test_history_and_config(api, board):
    code, _, body, _ = request(api, "GET", "/history")
    assert code == 200 and json.loads(body) == [[1, 25165984, "no recovery target specified",
                                                  "2024-08-28T19:40:01+00:00", "n0"]]
    code, _, body, _ = request(api, "GET", "/config")
    assert code == 200 and json.loads(body) == {"ttl": 4, "loop_wait": 1, "pause": True}
    board.publish(board.status(), ClusterView(leader="n1"))
    assert request(api, "GET", "/config")[0] == 502
    assert request(api, "GET", "/failsafe")[0] == 502
    board.publish(board.status(), None)
    assert [request(api, "GET", p)[0] for p in ("/cluster", "/history", "/config")] == [503, 503, 503]


# --- /metrics ------------------------------------------------------------------------------------------------------

METRICS = ["patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time", "patroni_primary",
           "patroni_xlog_location", "patroni_standby_leader", "patroni_replica", "patroni_sync_standby",
           "patroni_quorum_standby", "patroni_xlog_received_location", "patroni_xlog_replayed_location",
           "patroni_xlog_replayed_timestamp", "patroni_xlog_paused", "patroni_postgres_streaming",
           "patroni_postgres_in_archive_recovery", "patroni_postgres_server_version", "patroni_cluster_unlocked",
           "patroni_failsafe_mode_is_active", "patroni_postgres_timeline", "patroni_dcs_last_seen",
           "patroni_pending_restart", "patroni_is_paused", "patroni_postgres_state"]


def _samples(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            match = re.fullmatch(r'(patroni_\w+)\{scope="demo",name="n1"\} (\S+)', line)
            assert match, line
            out[match.group(1)] = match.group(2)
    return out


def test_metrics_in_prometheus_text_with_patronis_names(api, board):
    code, headers, body, _ = request(api, "GET", "/metrics")
    text = body.decode()
    assert code == 200 and headers["Content-Type"] == "text/plain" and text.endswith("\n")
    samples = _samples(text)
    assert list(samples) == METRICS
    for name in METRICS:
        assert re.search(rf"^# HELP {name} \S", text, re.M) and re.search(rf"^# TYPE {name} (gauge|counter)$",
                                                                          text, re.M)
    assert "# TYPE patroni_xlog_location counter" in text and "# TYPE patroni_primary gauge" in text
    assert "# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise." in text
    assert "# Values: 0=initdb, 1=initdb_failed," in text
    assert samples["patroni_version"] == "040105" and samples["patroni_postgres_running"] == "1"
    assert samples["patroni_primary"] == "1" and samples["patroni_replica"] == "0"
    assert samples["patroni_xlog_location"] == str(TIP) and samples["patroni_postgres_timeline"] == "2"
    assert samples["patroni_postmaster_start_time"] == "1724873966.352526"
    assert samples["patroni_postgres_server_version"] == "160004" and samples["patroni_postgres_state"] == "5"
    assert samples["patroni_dcs_last_seen"] == str(board.status()["dcs_last_seen"])


def test_metrics_of_a_stopped_paused_replica(api, board):
    board.publish(make_status(state="stopped", role="replica", pg_running=False, lock_holder=False, pause=True,
                              pending_restart=True, cluster_unlocked=True), None)
    samples = _samples(request(api, "GET", "/metrics")[2].decode())
    assert "patroni_postgres_streaming" not in samples  # Patroni leaves it out without a server version
    assert (samples["patroni_postgres_running"], samples["patroni_replica"], samples["patroni_is_paused"],
            samples["patroni_pending_restart"], samples["patroni_cluster_unlocked"],
            samples["patroni_postgres_state"], samples["patroni_postmaster_start_time"]) == \
        ("0", "1", "1", "1", "1", "12", "0")


# --- writes ----------------------------------------------------------------------------------------------------

def test_write_methods_are_not_implemented_yet(api):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/restart", "/config", "/switchover", "/", "/patroni"):
            code, _, body, _ = request(api, method, path, body=b"{}", headers={"Content-Type": "application/json"})
            assert (method, path, code) == (method, path, 501)
            assert f"Unsupported method ('{method}')".encode() in body


class EchoHandler(Handler):
    """How a write endpoint is added: one method, protected by requires_access."""

    @requires_access
    def do_POST_echo(self):
        body = self.read_json()
        if body is not None:
            self.write_json(200, body)


def test_a_write_endpoint_is_one_method_with_patronis_access_rules(board):
    with ApiServer(cfg(username="admin", password="s3cret"), board, handler=EchoHandler) as api:
        code, headers, body, _ = request(api, "POST", "/echo", body=b'{"a": 1}')
        assert (code, body, headers["WWW-Authenticate"]) == (401, b"no auth header received", 'Basic realm="Patroni"')
        assert request(api, "POST", "/echo", b"{}", {"Authorization": "Basic bm9wZQ=="})[:3:2] == \
            (401, b"not authenticated")
        good = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        assert request(api, "POST", "/echo", b'{"a": 1}', good)[:3:2] == (200, b'{"a": 1}')
        no_length = f"POST /echo HTTP/1.0\r\nAuthorization: {good['Authorization']}\r\n\r\n".encode()
        assert raw(api.port, no_length).startswith(b"HTTP/1.0 411 Length Required\r\n")
        assert request(api, "POST", "/echo", None, good)[0] == 400  # Content-Length: 0, no object
        assert request(api, "POST", "/echo", b"[1]", good)[0] == 400
        assert request(api, "POST", "/other", b"{}", good)[0] == 501
        assert request(api, "GET", "/patroni")[0] == 200  # reads never need credentials
    with ApiServer(cfg(allowlist=("10.0.0.0/8",)), board, handler=EchoHandler) as api:
        assert request(api, "POST", "/echo", b"{}")[:3:2] == (403, b"Access is denied")
    with ApiServer(cfg(allowlist=("127.0.0.0/8",)), board, handler=EchoHandler) as api:
        assert request(api, "POST", "/echo", b'{"b": 2}')[0] == 200


# --- TLS -----------------------------------------------------------------------------------------------------------

def _self_signed(directory: Path, name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=IP:{name}" if name[0].isdigit() else f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    directory = tmp_path_factory.mktemp("tls")
    return {"server": _self_signed(directory, "127.0.0.1"), "client": _self_signed(directory, "pgha-client")}


def _client_context(certs, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certs["server"][0])
    if with_cert:
        ctx.load_cert_chain(*certs["client"])
    return ctx


def test_tls_serves_the_same_answers(board, certs):
    cert, key = certs["server"]
    with ApiServer(cfg(certfile=cert, keyfile=key), board) as api:
        assert api.scheme == "https"
        code, _, body, _ = request(api, "GET", "/patroni", context=_client_context(certs, False))
        assert code == 200 and json.loads(body)["role"] == "primary"
        assert raw(api.port, b"OPTIONS / HTTP/1.0\r\n\r\n", _client_context(certs, False)) == \
            b"HTTP/1.0 200 OK\r\n\r\n"
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            request(api, "GET", "/patroni")  # plain HTTP to a TLS port gets no answer
        assert request(api, "GET", "/health", context=_client_context(certs, False))[0] == 200  # still serving


def test_tls_client_certificates(board, certs):
    cert, key = certs["server"]
    required = cfg(certfile=cert, keyfile=key, cafile=certs["client"][0], verify_client="required")
    with ApiServer(required, board) as api:
        assert request(api, "GET", "/patroni", context=_client_context(certs, True))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(api, "GET", "/patroni", context=_client_context(certs, False))
    optional = cfg(certfile=cert, keyfile=key, cafile=certs["client"][0], verify_client="optional")
    with ApiServer(optional, board, handler=EchoHandler) as api:
        assert request(api, "GET", "/patroni", context=_client_context(certs, False))[0] == 200
        assert request(api, "POST", "/echo", b"{}", context=_client_context(certs, False))[:3:2] == \
            (403, b"client certificate required")
        assert request(api, "POST", "/echo", b'{"c": 3}', context=_client_context(certs, True))[0] == 200


# --- lifecycle -----------------------------------------------------------------------------------------------------

def test_start_and_stop_are_bounded(board):
    api = ApiServer(cfg(), board)
    started = time.monotonic()
    api.start()
    assert time.monotonic() - started < 1.0
    port = api.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # a client that never sends its request
    try:
        assert request(api, "GET", "/health")[0] == 200
        stopping = time.monotonic()
        api.stop()
        assert time.monotonic() - stopping < 1.5
    finally:
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    api.stop()  # a second stop is a no-op
    ApiServer(cfg(), board).stop()  # so is stopping a server never started


def test_a_busy_port_fails_start(api, board):
    with pytest.raises(OSError):
        ApiServer(cfg(listen=f"127.0.0.1:{api.port}"), board).start()
