"""`pgha etcd-v2-view` (src/pgha/dcs/etcd_v2_view.py): etcd v2's read-only keys API from v3 keys.

First the JSON shaping and the request rules with plain values; then the view against the real etcd of the test
session (tests/support/etcd.py), each test under keys of its own prefix: the v2 answers, failover between
endpoints, deadlines, 503 without a secret; then the command line (bad input named by option, a run ended by
SIGTERM). Every server the tests start is stopped by them; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Iterator

import pytest
import requests
from click.testing import CliRunner

from pgha.cli.main import cli
from pgha.dcs.etcd3_client import Etcd3Client, b64
from pgha.dcs.etcd_v2_view import EtcdV2View, clean_key, etcd_reader, node_reply, respond
from pgha.ports import DcsError
from tests.support.dcs import silent_server
from tests.support.etcd import EtcdServer, free_port, http

HEADER = {"cluster_id": "14841639068965178418", "member_id": "10276657743932975437", "revision": "7",
          "raft_term": "2"}
KV = {"key": b64("/service/c/leader"), "value": b64("node1"), "create_revision": "5", "mod_revision": "7",
      "version": "2", "lease": "7587884318335786500"}

web = requests.Session()
web.trust_env = False  # no proxy from the environment


# --- plain values ---------------------------------------------------------------------------------------------
def body(reply: Any) -> dict:
    return json.loads(reply.body)


def test_a_key_is_etcd_v2s_node():
    reply = node_reply("/service/c/leader", {"header": HEADER, "kvs": [KV], "count": "1"})
    assert reply.status == 200
    assert body(reply) == {"action": "get", "node": {"key": "/service/c/leader", "value": "node1",
                                                      "modifiedIndex": 7, "createdIndex": 5}}
    headers = dict(reply.headers)
    assert headers["X-Etcd-Index"] == "7" and headers["Content-Type"] == "application/json"
    assert headers["X-Etcd-Cluster-Id"] == format(14841639068965178418, "x") and headers["X-Raft-Term"] == "2"


def test_an_empty_value_and_odd_bytes():
    kv = {"key": b64("/k"), "create_revision": "3", "mod_revision": "3"}  # the gateway leaves "" out
    assert body(node_reply("/k", {"header": HEADER, "kvs": [kv]}))["node"]["value"] == ""
    kv["value"] = "/w=="  # b"\xff": not UTF-8
    assert body(node_reply("/k", {"header": HEADER, "kvs": [kv]}))["node"]["value"] == "\ufffd"


def test_no_key_is_error_100():
    reply = node_reply("/service/c/leader", {"header": HEADER})  # the gateway leaves an empty "kvs" out
    assert reply.status == 404 and dict(reply.headers)["X-Etcd-Index"] == "7"
    assert body(reply) == {"errorCode": 100, "message": "Key not found", "cause": "/service/c/leader", "index": 7}


def test_keys_are_cleaned_as_etcd_v2_does():
    assert clean_key("/service/c/leader") == "/service/c/leader"
    assert clean_key("service//c/./x/../leader/") == "/service/c/leader"
    assert clean_key("") == clean_key("/") == clean_key("//") == clean_key("/..") == "/"


def test_the_request_rules():
    asked: list[str] = []

    def read(key: str) -> dict:
        asked.append(key)
        return {"header": HEADER, "kvs": [KV]}
    ok = respond("GET", "/v2/keys/service/c/leader?quorum=true&recursive=false&sorted=false", read)
    assert ok.status == 200 and asked == ["/service/c/leader"]
    assert respond("HEAD", "/v2/keys/service/c/leader", read).status == 200
    assert respond("GET", "/v2/keys/service/%63/leader", read).status == 200 and asked[-1] == "/service/c/leader"
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        refused = respond(method, "/v2/keys/service/c/leader?value=x", read)
        assert refused.status == 405 and ("Allow", "GET, HEAD") in refused.headers
    for path in ("/v2/members", "/v3/kv/range", "/v2/keysfoo", "/", "/version"):
        assert respond("GET", path, read).status == 404 and respond("GET", path, read).body == b"404 page not found\n"
    watch = respond("GET", "/v2/keys/service/c/leader?wait=true&waitIndex=8", read)
    assert watch.status == 400 and body(watch)["errorCode"] == 209
    assert len(asked) == 3  # refused requests never reached etcd


def test_an_etcd_failure_is_503_with_its_message():
    def read(key: str) -> dict:
        raise DcsError("etcd /kv/range: failed on every endpoint within 1s (http://e1:2379: timed out)")
    reply = respond("GET", "/v2/keys/k", read)
    assert reply.status == 503
    odd = respond("GET", "/v2/keys/k", lambda key: {"header": {"revision": "x"}, "kvs": [KV]})
    assert odd.status == 503 and body(odd)["errorCode"] == 300 and "not understood" in body(odd)["cause"]
    assert body(reply) == {"errorCode": 300, "message": "Raft Internal Error",
                           "cause": "etcd /kv/range: failed on every endpoint within 1s (http://e1:2379: timed out)"}


# --- against a real etcd --------------------------------------------------------------------------------------
@pytest.fixture
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:8]}"


def put(etcd: EtcdServer, key: str, value: str) -> None:
    r = http.post(f"{etcd.url}/v3/kv/put", json={"key": b64(key), "value": b64(value)}, timeout=5)
    r.raise_for_status()


def view_on(hosts: list[tuple[str, int]], timeout: float = 2.0, **options: Any) -> EtcdV2View:
    return EtcdV2View(etcd_reader(Etcd3Client(hosts, timeout=timeout, **options)), "127.0.0.1", 0).start()


@pytest.fixture
def view(etcd_server: EtcdServer) -> Iterator[EtcdV2View]:
    v = view_on([("127.0.0.1", etcd_server.port)])
    yield v
    v.stop()


def test_get_answers_from_the_v3_key(etcd_server, view, prefix):
    put(etcd_server, f"{prefix}/leader", "node0")
    r = web.get(f"{view.url}/v2/keys{prefix}/leader", params={"quorum": "true"}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    node = r.json()["node"]
    assert r.json()["action"] == "get" and node["key"] == f"{prefix}/leader" and node["value"] == "node0"
    assert node["modifiedIndex"] == node["createdIndex"] <= int(r.headers["X-Etcd-Index"])
    put(etcd_server, f"{prefix}/leader", "node2")
    again = web.get(f"{view.url}/v2/keys{prefix}/leader", timeout=5)
    assert again.json()["node"]["value"] == "node2"
    assert again.json()["node"]["createdIndex"] == node["createdIndex"]
    assert again.json()["node"]["modifiedIndex"] == int(again.headers["X-Etcd-Index"]) > node["modifiedIndex"]
    head = web.head(f"{view.url}/v2/keys{prefix}/leader", timeout=5)
    assert head.status_code == 200 and head.content == b"" and head.headers["X-Etcd-Index"]


def test_missing_keys_and_directories_are_not_found(etcd_server, view, prefix):
    put(etcd_server, f"{prefix}/members/node0", "{}")
    for key in (f"{prefix}/leader", prefix, f"{prefix}/members", f"{prefix}/members/"):
        r = web.get(f"{view.url}/v2/keys{key}", timeout=5)
        assert r.status_code == 404, key
        assert r.json() == {"errorCode": 100, "message": "Key not found", "cause": key.rstrip("/"),
                            "index": int(r.headers["X-Etcd-Index"])}


def test_it_stays_read_only(etcd_server, view, prefix):
    put(etcd_server, f"{prefix}/leader", "node0")
    for method in ("PUT", "POST", "DELETE"):
        r = web.request(method, f"{view.url}/v2/keys{prefix}/leader", data={"value": "evil"}, timeout=5)
        assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    assert web.get(f"{view.url}/v2/keys{prefix}/leader", timeout=5).json()["node"]["value"] == "node0"
    assert web.get(f"{view.url}/v2/members", timeout=5).status_code == 404
    assert web.get(f"{view.url}/v2/keys{prefix}/leader?wait=true", timeout=5).status_code == 400


def test_failover_to_the_next_endpoint(etcd_server, prefix):
    put(etcd_server, f"{prefix}/leader", "node1")
    with silent_server() as silent:
        v = view_on([("127.0.0.1", free_port()), ("127.0.0.1", silent), ("127.0.0.1", etcd_server.port)],
                    timeout=3.0)
        try:
            start = time.monotonic()
            r = web.get(f"{v.url}/v2/keys{prefix}/leader", timeout=10)
            assert r.status_code == 200 and r.json()["node"]["value"] == "node1"
            assert time.monotonic() - start < 3.5
            start = time.monotonic()  # the one that answered is asked first from now on
            assert web.get(f"{v.url}/v2/keys{prefix}/leader", timeout=10).status_code == 200
            assert time.monotonic() - start < 0.5
        finally:
            v.stop()


def test_no_etcd_is_503_within_the_deadline():
    with silent_server() as silent:
        v = view_on([("127.0.0.1", free_port()), ("127.0.0.1", silent)], timeout=1.0)
        try:
            start = time.monotonic()
            r = web.get(f"{v.url}/v2/keys/service/c/leader", timeout=10)
            elapsed = time.monotonic() - start
        finally:
            v.stop()
    assert r.status_code == 503 and elapsed < 1.5
    assert r.json()["errorCode"] == 300 and "failed on every endpoint within 1s" in r.json()["cause"]


def test_a_failed_login_is_503_without_the_password(etcd_server):
    # the session's etcd has auth off: logging in fails, as a wrong password would
    v = view_on([("127.0.0.1", etcd_server.port)], username="viewer", password="s3cret-Pa55")
    try:
        r = web.get(f"{v.url}/v2/keys/service/c/leader", timeout=10)
    finally:
        v.stop()
    assert r.status_code == 503 and "viewer" in r.json()["cause"] and "s3cret-Pa55" not in r.text


# --- the command --------------------------------------------------------------------------------------------
def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["etcd-v2-view", *args], env=env)


@pytest.mark.parametrize("args, option", [
    (["--etcd", "http://127.0.0.1:2379"], "--listen"),
    (["--listen", "127.0.0.1", "--etcd", "http://127.0.0.1:2379"], "--listen"),
    (["--listen", "127.0.0.1:99999", "--etcd", "http://127.0.0.1:2379"], "--listen"),
    (["--listen", "127.0.0.1:x", "--etcd", "http://127.0.0.1:2379"], "--listen"),
    (["--listen", "127.0.0.1:2381"], "--etcd"),
    (["--listen", "127.0.0.1:2381", "--etcd", "etcd1:2379"], "--etcd"),
    (["--listen", "127.0.0.1:2381", "--etcd", "http://127.0.0.1:2379/v2"], "--etcd"),
    (["--listen", "127.0.0.1:2381", "--etcd", "http://a:2379", "--etcd", "https://b:2379"], "--etcd"),
    (["--listen", "127.0.0.1:2381", "--etcd", "http://a:2379", "--timeout", "0"], "--timeout"),
    (["--listen", "127.0.0.1:2381", "--etcd", "http://a:2379", "--cacert", "/nonexistent/ca.crt"], "--cacert"),
])
def test_bad_input_names_the_option(args, option):
    result = run(*args)
    assert result.exit_code == 2 and f"'{option}'" in result.output, result.output


def test_credentials_are_refused_and_never_echoed():
    result = run("--listen", "127.0.0.1:2381", "--etcd", "http://root:s3cret@127.0.0.1:2379")
    assert result.exit_code == 2 and "'--etcd'" in result.output and "s3cret" not in result.output
    result = run("--listen", "127.0.0.1:2381", "--etcd", "http://a:2379", env={"PGHA_ETCD_PASSWORD": "s3cret"})
    assert result.exit_code == 2 and "'--username'" in result.output and "s3cret" not in result.output


def test_tls_options_need_https(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    result = run("--listen", "127.0.0.1:2381", "--etcd", "http://a:2379", "--cacert", str(ca))
    assert result.exit_code == 2 and "https" in result.output


def test_a_port_in_use_is_an_error_naming_listen():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("--listen", f"127.0.0.1:{port}", "--etcd", "http://127.0.0.1:2379")
    assert result.exit_code == 1 and result.output.startswith(f"Error: --listen 127.0.0.1:{port}: cannot listen")


def test_the_command_serves_until_sigterm(etcd_server, prefix):
    put(etcd_server, f"{prefix}/leader", "node0")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PGHA_ETCD_PASSWORD"}
    proc = subprocess.Popen([sys.executable, "-m", "pgha", "etcd-v2-view", "--listen", f"127.0.0.1:{port}",
                             "--etcd", f"http://127.0.0.1:{free_port()}", "--etcd", etcd_server.url, "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        deadline, r = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = web.get(f"http://127.0.0.1:{port}/v2/keys{prefix}/leader", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r is not None and r.status_code == 200 and r.json()["node"]["value"] == "node0"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    log = out.decode()
    assert f"etcd v2 view on http://127.0.0.1:{port}" in log and f"GET /v2/keys{prefix}/leader -> 200" in log
