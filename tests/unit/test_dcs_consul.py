"""The Consul adapter (pgha.dcs.consul) against a local stub that replays exchanges from Consul's HTTP API docs.

No Consul server can be installed here, so this is NOT a contract pass against Consul: a stub HTTP server on
127.0.0.1 answers with the status, headers and bodies Consul's documentation shows, and the tests assert the
requests the adapter sends (method, path, query, body) and how it handles the answers. Where each exchange comes from
(developer.hashicorp.com/consul/api-docs/..., the website/content/api-docs/*.mdx pages of hashicorp/consul):

- SESSION: session.mdx: "Create Session" (PUT /session/create; payload LockDelay/Name/Checks/Behavior/TTL,
  response {"ID": ...}), "Renew Session" (PUT /session/renew/:uuid, a one-element list with "TTL": "15s"; "Consul
  may return a TTL value higher than the one specified"; 404 once the session is invalidated), "Destroy Session"
  (PUT /session/destroy/:uuid -> true), "Read Session" (GET /session/info/:uuid -> list, null when unknown).
- INVALID_TTL: the error text of Consul's session endpoint (agent/consul/session_endpoint.go, "Invalid Session TTL
  '%d', must be between [%v=%v]"), answered with status 500, which is what Patroni's consul.py matches; the
  SessionTTLMin read from GET /agent/self (agent.mdx "Read Configuration"; ``DebugConfig`` in Consul >= 1.0).
- KV: kv.mdx: "Read Key" (GET /kv/:key, ?recurse, a list of {CreateIndex, ModifyIndex, LockIndex, Key, Flags,
  Value (base64), Session}; 404 when absent), "Create/Update Key" (PUT /kv/:key with ?cas, ?acquire -> true/false;
  "cas=0: only if it does not already exist"), "Delete Key" (DELETE /kv/:key with ?recurse, ?cas -> true/false;
  "the index must be greater than 0 for Consul to take any action").
- BLOCKING: features/blocking.mdx: ?index=<X-Consul-Index>&wait=<duration>, the X-Consul-Index header, and up to
  wait/16 of added jitter.
- SERVICE: agent/service.mdx: "Register Service" (PUT /agent/service/register with ID, Name, Tags, Address, Port,
  EnableTagOverride, Check {HTTP, Interval, DeregisterCriticalServiceAfter, TLSServerName}; 200, empty body),
  "Deregister Service" (PUT /agent/service/deregister/:service_id; 200).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pgha.config.ctl import load_ctl_config
from pgha.config.errors import ConfigError
from pgha.config.read import Reader
from pgha.config.schema import Consul
from pgha.config.sections import read_consul
from pgha.dcs import dcs_from_config
from pgha.dcs.consul import ConsulClient, ConsulDcs, service_name
from pgha.ports import DcsError

SID = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"  # the session id of session.mdx's samples
OTHER = "b9a5e4c1-0d67-4b1c-9a53-4d1d5fbbd3c2"
TOKEN = "s3cr3t-acl-token"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def entry(key: str, value: str | None, modify: int, session: str | None = None) -> dict[str, Any]:
    """One KV entry as kv.mdx "Read Key" shows it."""
    e: dict[str, Any] = {"CreateIndex": modify, "ModifyIndex": modify, "LockIndex": 1 if session else 0,
                         "Key": key, "Flags": 0, "Value": b64(value) if value is not None else None}
    if session:
        e["Session"] = session
    return e


def renewed(ttl: str = "15s") -> list[dict[str, Any]]:
    """session.mdx "Renew Session" sample response (Behavior/TTL as we created it)."""
    return [{"ID": SID, "Node": "foobar", "Checks": [], "LockDelay": 1000000, "Behavior": "delete", "TTL": ttl,
             "CreateIndex": 1086449, "ModifyIndex": 1086449}]


class Stub:
    """Answers each request with the next scripted exchange (method and path must match) and records it."""

    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                req = {"method": self.command, "path": unquote(parts.path),
                       "query": {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                       "body": body, "token": self.headers.get("X-Consul-Token")}
                with stub.lock:
                    stub.seen.append(req)
                    step = stub.script.pop(0) if stub.script else None
                if step is None or (step["method"], step["path"]) != (req["method"], req["path"]):
                    step = {"status": 599, "body": f"unexpected {req['method']} {req['path']}, expected {step}"}
                time.sleep(step.get("delay", 0))
                data = step.get("body", "")
                text = data if isinstance(data, str) else json.dumps(data)
                raw = text.encode()
                try:
                    self.send_response(step.get("status", 200))
                    for k, v in {"Content-Type": "application/json", **step.get("headers", {})}.items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass

            do_GET = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def expect(self, method: str, path: str, body: Any = "", status: int = 200, index: int | None = None,
               delay: float = 0.0) -> None:
        step: dict[str, Any] = {"method": method, "path": path, "body": body, "status": status, "delay": delay}
        if index is not None:
            step["headers"] = {"X-Consul-Index": index}
        self.script.append(step)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


def make(stub: Stub, ttl: int = 30, **kwargs: Any) -> ConsulDcs:
    client_kwargs = {k: kwargs.pop(k) for k in ("token", "consistency", "dc") if k in kwargs}
    client = ConsulClient("127.0.0.1", stub.port, timeout=2.0, **client_kwargs)
    return ConsulDcs(client, namespace="/service", scope="batman", ttl=ttl, name="pg1", **kwargs)


def with_session(stub: Stub, dcs: ConsulDcs) -> None:
    stub.expect("PUT", "/v1/session/create", {"ID": SID})
    dcs.renew_lease()
    stub.seen.clear()


# --- session (SESSION, INVALID_TTL) ----------------------------------------------------------------------
def test_renew_lease_creates_patronis_session(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("PUT", "/v1/session/create", {"ID": SID})
    assert dcs.renew_lease() == 15.0
    req = stub.seen[0]
    assert json.loads(req["body"]) == {"Name": "batman-pg1", "TTL": "15.0s", "LockDelay": "0.001s",
                                       "Behavior": "delete", "Checks": []}
    assert dcs.session == SID


def test_renew_counts_the_ttl_we_asked_even_when_consul_answers_more(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("PUT", f"/v1/session/renew/{SID}", renewed("15s"))
    stub.expect("PUT", f"/v1/session/renew/{SID}", renewed("30s"))  # "may return a TTL value higher"
    before = time.monotonic()
    assert dcs.renew_lease() == 15.0
    assert dcs.renew_lease() == 15.0
    assert [r["method"] + " " + r["path"] for r in stub.seen] == [f"PUT /v1/session/renew/{SID}"] * 2
    assert dcs.last_keepalive is not None and dcs.last_keepalive[0] >= before  # counted from the send


def test_a_lost_session_is_replaced_in_the_same_call(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("PUT", f"/v1/session/renew/{SID}", f"Session id '{SID}' not found", status=404)
    stub.expect("PUT", "/v1/session/create", {"ID": OTHER})
    assert dcs.renew_lease() == 15.0
    assert dcs.session == OTHER


def test_invalid_session_ttl_lowers_it_to_the_agents_minimum(stub: Stub) -> None:
    dcs = make(stub, ttl=4)
    stub.expect("PUT", "/v1/session/create", "Invalid Session TTL '2000000000', must be between [10s=24h0m0s]",
                status=500)
    stub.expect("GET", "/v1/agent/self", {"Config": {"Datacenter": "dc1"}, "DebugConfig": {"SessionTTLMin": "10s"}})
    stub.expect("PUT", "/v1/session/create", {"ID": SID})
    assert dcs.renew_lease() == 10.0
    assert json.loads(stub.seen[0]["body"])["TTL"] == "2.0s"
    assert json.loads(stub.seen[2]["body"])["TTL"] == "10.0s"


def test_close_destroys_the_session(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("PUT", f"/v1/session/destroy/{SID}", True)
    dcs.close(revoke=True)
    assert stub.seen[0]["path"] == f"/v1/session/destroy/{SID}"
    assert dcs.session is None


# --- reads (KV) ---------------------------------------------------------------------------------------------
def test_snapshot_reads_the_prefix_recursively(stub: Stub) -> None:
    dcs = make(stub, consistency="consistent")
    member = json.dumps({"conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
                         "state": "running", "role": "primary"})
    stub.expect("GET", "/v1/kv/service/batman/", [
        entry("service/batman/config", '{"ttl":30}', 12), entry("service/batman/initialize", "7441012345678901234", 5),
        entry("service/batman/leader", "pg1", 20, SID), entry("service/batman/members/pg1", member, 21, SID),
        entry("service/batman/failover", None, 22)], index=22)
    view = dcs.snapshot()
    assert stub.seen[0]["query"] == {"recurse": "1", "consistent": "1"}  # py-consul's spelling
    assert view.leader == "pg1" and view.initialize == "7441012345678901234"
    assert [m.name for m in view.members] == ["pg1"] and view.members[0].api_url.endswith("/patroni")
    assert view.config == {"ttl": 30}
    assert view.versions["config"] == 12 and view.versions["failover"] == 22


def test_snapshot_of_an_absent_cluster_is_empty(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("GET", "/v1/kv/service/batman/", "", status=404, index=3)
    view = dcs.snapshot()
    assert view.leader is None and view.members == () and view.initialize is None


# --- leader key (KV) ----------------------------------------------------------------------------------------
def test_acquire_leader_is_create_only_with_our_session(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("GET", "/v1/kv/service/batman/leader", "", status=404)
    stub.expect("PUT", "/v1/kv/service/batman/leader", True)
    assert dcs.acquire_leader("pg1")
    put = stub.seen[1]
    assert put["query"] == {"acquire": SID} and put["body"] == "pg1"
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg1", 30, SID)])
    assert not dcs.acquire_leader("pg1")  # even the holder: no second PUT
    assert len(stub.seen) == 3


def test_acquire_leader_answers_false_when_another_session_won_the_race(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("GET", "/v1/kv/service/batman/leader", "", status=404)
    stub.expect("PUT", "/v1/kv/service/batman/leader", False)
    assert not dcs.acquire_leader("pg1")


def test_refresh_leader_renews_then_checks_the_key(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    dcs.last_keepalive = (time.monotonic() - 5, 15.0)  # the last renew is old: refresh renews
    stub.expect("PUT", f"/v1/session/renew/{SID}", renewed())
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg1", 30, SID)])
    assert dcs.refresh_leader("pg1")
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg2", 31, OTHER)])
    assert not dcs.refresh_leader("pg1")  # renewed a moment ago: not again; another name: lost
    stub.expect("GET", "/v1/kv/service/batman/leader", "", status=404)
    assert not dcs.refresh_leader("pg1")
    assert [r["method"] for r in stub.seen] == ["PUT", "GET", "GET", "GET"]


def test_refresh_leader_moves_the_key_to_our_session(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg1", 40, OTHER)])
    stub.expect("DELETE", "/v1/kv/service/batman/leader", True)
    stub.expect("PUT", "/v1/kv/service/batman/leader", True)
    assert dcs.refresh_leader("pg1")
    assert stub.seen[1]["query"] == {"cas": "40"}
    assert stub.seen[2]["query"] == {"acquire": SID} and stub.seen[2]["body"] == "pg1"


def test_after_set_ttl_the_lease_ends_with_the_old_session_until_the_key_moved(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("GET", "/v1/kv/service/batman/", [entry("service/batman/leader", "pg1", 40, SID)], index=40)
    dcs.snapshot()  # we hold the leader key
    dcs.last_keepalive = (time.monotonic() - 10, 15.0)  # the old session is safe for about 5 s more
    dcs.set_ttl(60)
    stub.seen.clear()
    stub.expect("PUT", "/v1/session/create", {"ID": OTHER})
    assert 4.0 < dcs.renew_lease() <= 5.0  # not the new session's 30 s: the leader key is on the old one
    assert json.loads(stub.seen[0]["body"])["TTL"] == "30.0s"
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg1", 40, SID)])
    stub.expect("DELETE", "/v1/kv/service/batman/leader", True)
    stub.expect("PUT", "/v1/kv/service/batman/leader", True)
    assert dcs.refresh_leader("pg1")
    assert stub.seen[3]["query"] == {"acquire": OTHER}
    stub.expect("PUT", f"/v1/session/renew/{OTHER}", renewed("30s"))
    assert dcs.renew_lease() == 30.0


def test_after_set_ttl_a_replica_gets_the_new_sessions_lease(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("GET", "/v1/kv/service/batman/", [entry("service/batman/leader", "pg2", 40, OTHER)], index=40)
    dcs.snapshot()
    dcs.set_ttl(60)
    stub.expect("PUT", "/v1/session/create", {"ID": SID})
    assert dcs.renew_lease() == 30.0


def test_release_leader_deletes_at_the_index_read(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg1", 50, SID)])
    stub.expect("DELETE", "/v1/kv/service/batman/leader", True)
    assert dcs.release_leader("pg1")
    assert stub.seen[1]["query"] == {"cas": "50"}
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg2", 51, OTHER)])
    assert not dcs.release_leader("pg1")
    assert len(stub.seen) == 3


# --- other keys (KV) ----------------------------------------------------------------------------------------
def test_touch_member_acquires_and_skips_unchanged_writes(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", {"state": "running", "role": "replica"})
    dcs.touch_member("pg1", {"state": "running", "role": "replica"})
    assert len(stub.seen) == 1
    assert stub.seen[0]["query"] == {"acquire": SID}
    assert stub.seen[0]["body"] == '{"state":"running","role":"replica"}'


def test_touch_member_takes_over_a_key_held_by_an_old_session(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", False)
    stub.expect("GET", "/v1/kv/service/batman/members/pg1", [entry("service/batman/members/pg1", "{}", 60, OTHER)])
    stub.expect("DELETE", "/v1/kv/service/batman/members/pg1", True)
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", {"state": "running"})
    assert stub.seen[2]["query"] == {"cas": "60"} and stub.seen[3]["query"] == {"acquire": SID}


def test_create_only_and_compare_and_swap_keys(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("PUT", "/v1/kv/service/batman/initialize", True)
    assert dcs.claim_initialize()
    stub.expect("PUT", "/v1/kv/service/batman/config", False)
    assert not dcs.set_config({"ttl": 30})
    stub.expect("PUT", "/v1/kv/service/batman/failover", True)
    assert dcs.put_key("failover", {"leader": "pg1"}, version=0)
    stub.expect("PUT", "/v1/kv/service/batman/config", False)
    assert not dcs.put_key("config", {"ttl": 20}, version=12)
    stub.expect("DELETE", "/v1/kv/service/batman/failover", True)
    assert dcs.delete_key("failover", version=22)
    stub.expect("GET", "/v1/kv/service/batman/failsafe", "", status=404)
    assert dcs.delete_key("failsafe", version=0)  # DELETE ?cas=0 never deletes: absent is checked by a read
    assert [(r["method"], r["query"], r["body"]) for r in stub.seen] == [
        ("PUT", {"cas": "0"}, ""), ("PUT", {"cas": "0"}, '{"ttl":30}'), ("PUT", {"cas": "0"}, '{"leader":"pg1"}'),
        ("PUT", {"cas": "12"}, '{"ttl":20}'), ("DELETE", {"cas": "22"}, ""), ("GET", {}, "")]


def test_permanent_writes_and_cluster_removal(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("PUT", "/v1/kv/service/batman/initialize", True)
    stub.expect("PUT", "/v1/kv/service/batman/history", True)
    stub.expect("PUT", "/v1/kv/service/batman/status", True)
    stub.expect("DELETE", "/v1/kv/service/batman/initialize", True)
    stub.expect("DELETE", "/v1/kv/service/batman/", True)
    dcs.set_initialize("7441012345678901234")
    dcs.set_history([[1, 100, "no recovery target specified"]])
    dcs.set_status({"optime": 100})
    dcs.cancel_initialize()
    dcs.delete_cluster()
    assert [r["query"] for r in stub.seen] == [{}, {}, {}, {}, {"recurse": "1"}]
    assert stub.seen[1]["body"] == '[[1,100,"no recovery target specified"]]'


def test_member_lease_alive(stub: Stub) -> None:
    dcs = make(stub)
    with_session(stub, dcs)
    stub.expect("GET", "/v1/kv/service/batman/members/pg1", "", status=404)
    assert dcs.member_lease_alive("pg1", window=0.1) is None
    stub.expect("GET", "/v1/kv/service/batman/members/pg1", [entry("service/batman/members/pg1", "{}", 7, SID)])
    assert dcs.member_lease_alive("pg1", window=0.1) is False  # our own session
    stub.expect("GET", "/v1/kv/service/batman/members/pg1", [entry("service/batman/members/pg1", "{}", 7, OTHER)])
    stub.expect("GET", f"/v1/session/info/{OTHER}", [{"ID": OTHER, "TTL": "15s"}])
    stub.expect("GET", "/v1/kv/service/batman/members/pg1", [entry("service/batman/members/pg1", "{}", 8, OTHER)])
    assert dcs.member_lease_alive("pg1", window=1.2) is True  # written again under its session: someone lives
    stub.expect("GET", "/v1/kv/service/batman/members/pg1", [entry("service/batman/members/pg1", "{}", 8, OTHER)])
    stub.expect("GET", f"/v1/session/info/{OTHER}", "null")  # session.mdx: null for an unknown session
    assert dcs.member_lease_alive("pg1", window=1.2) is False


# --- watch (BLOCKING) ---------------------------------------------------------------------------------------
def test_watch_blocks_on_the_leader_key_from_its_index(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("GET", "/v1/kv/service/batman/", [entry("service/batman/leader", "pg1", 20, SID)], index=25)
    dcs.snapshot()
    stub.expect("GET", "/v1/kv/service/batman/leader", [entry("service/batman/leader", "pg1", 20, SID)],
                index=20, delay=0.3)  # the wait ran out: nothing changed
    assert dcs.wait_for_leader_change(0.33) is False
    stub.expect("GET", "/v1/kv/service/batman/leader", "", status=404, index=33, delay=0.1)  # deleted
    assert dcs.wait_for_leader_change(2.0) is True
    first, second = stub.seen[1], stub.seen[2]
    assert first["query"]["index"] == "20" and first["query"]["wait"].endswith("ms")
    assert int(first["query"]["wait"][:-2]) * 17 / 16 < 330  # the wait plus Consul's jitter fits the timeout
    assert second["query"]["index"] == "20"
    stub.expect("GET", "/v1/kv/service/batman/leader", "", status=404, index=34, delay=0.25)
    assert dcs.wait_for_leader_change(0.28) is False  # still absent: a bare index move is no change
    assert stub.seen[3]["query"]["index"] == "33"


def test_watch_failure_waits_out_its_timeout(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("GET", "/v1/kv/service/batman/", [], status=404, index=3)
    dcs.snapshot()
    stub.expect("GET", "/v1/kv/service/batman/leader", "rpc error: No cluster leader", status=500)
    start = time.monotonic()
    assert dcs.wait_for_leader_change(0.3) is False
    assert 0.25 <= time.monotonic() - start < 1.0


# --- errors and deadlines -----------------------------------------------------------------------------------
def test_errors_name_the_agent_and_never_the_token(stub: Stub) -> None:
    dcs = make(stub, token=TOKEN)
    stub.expect("GET", "/v1/kv/service/batman/", "rpc error making call: Permission denied", status=403)
    with pytest.raises(DcsError) as e:
        dcs.snapshot()
    assert f"127.0.0.1:{stub.port}" in str(e.value) and "403" in str(e.value) and TOKEN not in str(e.value)
    assert stub.seen[0]["token"] == TOKEN and TOKEN not in repr(dcs)


def test_a_slow_agent_is_a_dcs_error_within_the_deadline(stub: Stub) -> None:
    dcs = make(stub)
    stub.expect("GET", "/v1/kv/service/batman/", [], delay=1.5)
    start = time.monotonic()
    with pytest.raises(DcsError, match=r"Consul http://127\.0\.0\.1:\d+: GET /v1/kv/service/batman/: timed out"):
        dcs.snapshot(timeout=0.3)
    assert time.monotonic() - start < 1.0


def test_an_unreachable_agent_is_a_dcs_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dcs = ConsulDcs(ConsulClient("127.0.0.1", port, timeout=0.5), scope="batman", ttl=30, name="pg1")
    with pytest.raises(DcsError, match=f"127.0.0.1:{port}"):
        dcs.renew_lease()


# --- service registration (SERVICE) -------------------------------------------------------------------------
MEMBER = {"conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
          "state": "running", "role": "primary"}


def test_service_is_registered_with_patronis_tags_and_check(stub: Stub) -> None:
    dcs = make(stub, register_service=True, service_tags=["dc-a"])
    with_session(stub, dcs)
    stub.expect("PUT", "/v1/agent/service/register", "")
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", MEMBER)
    assert json.loads(stub.seen[0]["body"]) == {  # py-consul's field names (Consul matches them case-insensitively)
        "id": "batman/pg1", "name": "batman", "tags": ["dc-a", "primary", "master"], "address": "10.0.0.1",
        "port": 5432, "enabletagoverride": True,
        "checks": [{"HTTP": "http://10.0.0.1:8008/primary", "Interval": "5s",
                    "DeregisterCriticalServiceAfter": "150.0s"}]}
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", {**MEMBER, "xlog_location": 5})  # same service: not sent again
    stub.expect("PUT", "/v1/agent/service/register", "")
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", {**MEMBER, "role": "replica"})
    assert json.loads(stub.seen[3]["body"])["tags"] == ["dc-a", "replica"]
    assert json.loads(stub.seen[3]["body"])["checks"][0]["HTTP"] == "http://10.0.0.1:8008/replica"
    stub.expect("PUT", "/v1/agent/service/deregister/batman/pg1", "")
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", {**MEMBER, "role": "replica", "state": "stopped"})
    assert [r["path"] for r in stub.seen].count("/v1/agent/service/deregister/batman/pg1") == 1


def test_service_waits_for_running_and_names_follow_patroni(stub: Stub) -> None:
    dcs = make(stub, register_service=True, service_check_tls_server_name="db.example")
    with_session(stub, dcs)
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", {**MEMBER, "state": "starting"})
    assert [r["path"] for r in stub.seen] == ["/v1/kv/service/batman/members/pg1"]
    assert dcs.service_registration({**MEMBER, "role": "standby_leader"})["Tags"] == ["standby-leader"]
    assert dcs.service_registration(MEMBER)["Check"]["TLSServerName"] == "db.example"
    assert dcs.service_registration({**MEMBER, "role": "uninitialized"}) is None
    assert service_name("Batman.prod_DB x") == "batman-prod-db-x"
    assert service_name("b@t") == "bu0064t" and len(service_name("x" * 300)) == 230


def test_a_failed_registration_does_not_fail_the_member_write(stub: Stub) -> None:
    dcs = make(stub, register_service=True)
    with_session(stub, dcs)
    stub.expect("PUT", "/v1/agent/service/register", "Invalid check: TTL must be > 0", status=400)
    stub.expect("PUT", "/v1/kv/service/batman/members/pg1", True)
    dcs.touch_member("pg1", MEMBER)
    assert stub.seen[1]["query"] == {"acquire": SID}


# --- configuration ------------------------------------------------------------------------------------------
def _consul(section: dict[str, Any]) -> tuple[Consul | None, list[str]]:
    r = Reader()
    return read_consul(r, {"consul": section}), r.errors


def test_consul_section_reads_patronis_keys() -> None:
    c, errors = _consul({"url": "https://consul.local:8501", "token": TOKEN, "verify": "false", "dc": "eu",
                         "consistency": "consistent", "checks": "serfHealth", "register_service": True,
                         "service_tags": ["a", "b"], "service_check_interval": 10, "cacert": "/ca.pem"})
    assert errors == [] and c is not None
    assert (c.host, c.port, c.scheme, c.verify, c.dc, c.consistency) == ("consul.local", 8501, "https", False, "eu",
                                                                         "consistent")
    assert c.checks == ("serfHealth",) and c.service_tags == ("a", "b") and c.service_check_interval == "10s"
    assert TOKEN not in repr(c) and "token='***'" in repr(c)
    c, errors = _consul({"host": "localhost", "port": 8600})
    assert errors == [] and (c.host, c.port, c.scheme) == ("localhost", 8600, "http")
    c, errors = _consul({"host": "10.1.1.1:8500", "consistency": "sometimes", "token": ["x"]})
    assert sorted(errors) == ["consul.consistency: expected one of default, consistent, stale, got 'sometimes'",
                              "consul.token: expected a string"]  # the token's value is never quoted


def test_dcs_url_and_dcs_from_config_build_the_consul_backend() -> None:
    ctl = load_ctl_config(None, "consul://10.2.2.2:8501/ns", env={"PATRONI_SCOPE": "batman"})
    assert isinstance(ctl.dcs, Consul) and (ctl.dcs.host, ctl.dcs.port) == ("10.2.2.2", 8501)
    assert ctl.namespace == "/ns" and ctl.dcs.consistency == "consistent"
    dcs = dcs_from_config(ctl.dcs, namespace=ctl.namespace, scope="batman", ttl=30, name="pg1")
    assert isinstance(dcs, ConsulDcs) and dcs.keys.leader == "ns/batman/leader"
    assert dcs.client.address == "http://10.2.2.2:8501"
    with pytest.raises(ConfigError, match="not supported yet"):
        load_ctl_config(None, "exhibitor://10.2.2.2", env={})
