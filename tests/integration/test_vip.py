"""A virtual IP that follows the leader: vip-manager (Debian bookworm's package, 1.0.2) on a `pgha up --netns`
cluster, one vip-manager per node inside that node's network namespace, adding the VIP (the subnet's .100/24) to
the node's link (eth0) while the leader key names that node, removing it otherwise. Asserted: the VIP is on the
leader's link only; a connection to it from the hub namespace reaches the primary; after the leader is killed
(agent and postmaster SIGKILLed) the VIP moves to the new leader within a deadline and reaches the new primary.
Also `pgha check primary|replica` (keepalived's kind of script), run inside the nodes' namespaces.

vip-manager 1.0.2 speaks only etcd's v2 API (github.com/coreos/etcd/client; etcd v3 came with vip-manager 2.0):
it cannot read pgha's keys, which are v3 keys (and etcd 3.4 serves no v2 API unless started with --enable-v2,
whose v2 store is separate from the v3 keys anyway). ``test_vip_manager_1_0_2_cannot_read_v3_keys`` shows exactly
that against the cluster's etcd. The other tests put ``V2Gateway`` between them: a read-only stand-in for etcd's
v2 ``GET /v2/keys/<key>`` that answers from the v3 key of the same name (etcd's own JSON gateway,
``/v3/kv/range``), beside etcd in the DCS namespace. On real hosts: vip-manager >= 2.0 reads v3 keys itself
(docs/pgbouncer.md, "A virtual IP").

The nodes of a `pgha up --netns` cluster keep their own ports (P+i), so a client of the VIP connects to the port of
the node that holds it (on real hosts every node has 5432). Every process the tests start (vip-manager) is ended
by its PID; every wait polls under a deadline; nothing is dialled from this namespace to a namespace address
(``netns.inside`` first).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psycopg
import pytest
import requests

from pgha.local import netns
from pgha.local.layout import SCOPE, Layout, read_state
from pgha.local.netns import NODE_LINK, Topology
from pgha.procutil import pid_alive, stop_pid

from .conftest import wait_for
from .test_netns import REFUSED, members, netns_cluster  # noqa: F401 (netns_cluster: the module's cluster)

pytestmark = pytest.mark.integration
if REFUSED:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=REFUSED)]

VIP_MANAGER = shutil.which("vip-manager")
LEADER_KEY = f"/service/{SCOPE}/leader"  # namespace "/service" (layout.node_config), scope pgha-local
INTERVAL_MS = 250  # vip-manager's DCS poll (its default: 1000)


# --- a stand-in for etcd's v2 keys API, reading the v3 keys -------------------------------------------------------
class V2Gateway:
    """``GET /v2/keys/<key>`` answered as etcd v2 would (200 with the node, or 404 errorCode 100 "Key not found";
    ``X-Etcd-Index``), from the v3 key ``<key>``. Read-only: anything else is 405. Listens in namespace ``ns`` on
    ``host:port``; its thread moves into ``ns`` before it dials etcd there."""

    def __init__(self, ns: str, host: str, port: int, etcd_url: str) -> None:
        self.ns, self.url, self.requests = ns, f"http://{host}:{port}", 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gateway.requests += 1
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                if not path.startswith("/v2/keys/"):
                    return self._reply(404, {"errorCode": 100, "message": "Key not found", "cause": path})
                key = path[len("/v2/keys"):]
                try:
                    r = gateway.session.post(f"{etcd_url}/v3/kv/range", timeout=1,
                                             json={"key": base64.b64encode(key.encode()).decode()})
                    r.raise_for_status()
                    data = r.json()
                except (requests.RequestException, ValueError) as e:
                    return self._reply(503, {"errorCode": 300, "message": "Raft Internal Error",
                                             "cause": type(e).__name__})
                index = int(data["header"]["revision"])
                kvs = data.get("kvs") or []
                if not kvs:
                    return self._reply(404, {"errorCode": 100, "message": "Key not found", "cause": key,
                                             "index": index}, index)
                kv = kvs[0]
                node = {"key": key, "value": base64.b64decode(kv.get("value", "")).decode(),
                        "modifiedIndex": int(kv["mod_revision"]), "createdIndex": int(kv["create_revision"])}
                self._reply(200, {"action": "get", "node": node}, index)

            def do_PUT(self) -> None:
                self._reply(405, {"errorCode": 0, "message": "read-only v2 stand-in"})

            do_POST = do_DELETE = do_PUT

            def _reply(self, code: int, body: dict, index: int | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if index is not None:
                    self.send_header("X-Etcd-Index", str(index))
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                pass

        with netns.inside(ns):  # the listening socket belongs to the namespace it was made in
            self.server = HTTPServer((host, port), Handler)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment
        self.thread = threading.Thread(target=self._serve, name=f"v2-gateway-{ns}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with netns.inside(self.ns):  # its connections to etcd are made in the DCS namespace
            self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.session.close()


# --- vip-manager, in a node's namespace ----------------------------------------------------------------------------
def start_vip_manager(topo: Topology, i: int, vip: str, endpoint: str, log_path: str) -> subprocess.Popen:
    """``ip netns exec`` execs vip-manager in place: the PID is vip-manager's, the one the test ends."""
    command = topo.node_prefix(i) + [
        VIP_MANAGER, "--ip", vip, "--netmask", "24", "--interface", NODE_LINK, "--trigger-key", LEADER_KEY,
        "--trigger-value", f"node{i}", "--dcs-type", "etcd", "--dcs-endpoints", endpoint,
        "--interval", str(INTERVAL_MS)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})


def end(proc: subprocess.Popen) -> None:
    stop_pid(proc.pid, timeout=10)
    proc.wait(timeout=10)


def holders(topo: Topology, vip: str) -> list[int]:
    """The nodes whose link carries ``vip`` (`ip -n NS addr show`)."""
    found = []
    for i in range(topo.nodes):
        out = subprocess.run(["ip", "-n", topo.node_ns(i), "-o", "-4", "addr", "show", "dev", NODE_LINK],
                             capture_output=True, text=True, timeout=10)
        if f" {vip}/24 " in out.stdout:
            found.append(i)
    return found


def via_vip(topo: Topology, layout: Layout, vip: str, port: int) -> tuple[str, int, bool]:
    """(server address, server port, in recovery) of a connection to ``vip:port`` made in the hub namespace."""
    with netns.inside(topo.hub):
        with psycopg.connect(host=vip, port=port, user="postgres", dbname="postgres", passfile=layout.client_pgpass,
                             connect_timeout=3, autocommit=True) as conn:
            return conn.execute("SELECT host(inet_server_addr()), inet_server_port(), pg_is_in_recovery()").fetchone()


def the_leader(layout: Layout, other_than: str | None = None, timeout: float = 30) -> int:
    """The index of the one running leader (`pgha -c DIR/pgha.yml list`), once there is one (not ``other_than``)."""
    def leader_name() -> str | None:
        found = members(layout)
        leaders = [name for name, m in found.items() if m["Role"] == "Leader" and m["State"] == "running"]
        return leaders[0] if len(leaders) == 1 and leaders[0] != other_than else None
    what = "one running leader" + (f" other than {other_than}" if other_than else "")
    return int(wait_for(leader_name, timeout, what).removeprefix("node"))


@pytest.fixture(scope="module")
def vip(netns_cluster):  # noqa: F811
    """The gateway beside etcd (the DCS namespace, port P+202) and one vip-manager per node, reading it."""
    if not VIP_MANAGER:
        pytest.fail("vip-manager is not installed (Debian: apt-get install -y vip-manager)", pytrace=False)
    layout = netns_cluster
    topo = Topology.for_cluster(layout.base_port, layout.nodes)
    address = f"{topo.subnet}.100"
    gateway = V2Gateway(topo.dcs_ns, topo.dcs_host, layout.etcd_port + 2, f"http://{topo.dcs_host}:{layout.etcd_port}")
    procs: list[subprocess.Popen] = []
    try:
        for i in range(layout.nodes):
            procs.append(start_vip_manager(topo, i, address, gateway.url, layout.path(f"vip-manager-node{i}.log")))
        yield topo, address, procs, gateway
    finally:
        for proc in procs:
            end(proc)
        gateway.close()


def vip_log(layout: Layout, i: int) -> str:
    return Path(layout.path(f"vip-manager-node{i}.log")).read_text(errors="replace")


# --- the tests -----------------------------------------------------------------------------------------------------
def test_vip_manager_is_installed():
    assert VIP_MANAGER, "vip-manager is not installed (Debian: apt-get install -y vip-manager)"
    out = subprocess.run([VIP_MANAGER, "--version"], capture_output=True, text=True, timeout=10)
    print(f"\nvip-manager --version: {(out.stdout + out.stderr).strip()}")


def test_vip_manager_1_0_2_cannot_read_v3_keys(netns_cluster):  # noqa: F811
    """Straight at the cluster's etcd (3.4, v3 keys, no v2 API), vip-manager 1.0.2 gets no answer it can read
    and never adds the VIP, even on the leader's node."""
    layout = netns_cluster
    topo = Topology.for_cluster(layout.base_port, layout.nodes)
    leader = the_leader(layout)
    address, log_path = f"{topo.subnet}.101", layout.path("vip-manager-v3.log")
    proc = start_vip_manager(topo, leader, address, f"http://{topo.dcs_host}:{layout.etcd_port}", log_path)
    try:
        wait_for(lambda: "etcd error" in Path(log_path).read_text(errors="replace"), 20, "vip-manager to read etcd")
        assert pid_alive(proc.pid) and holders(topo, address) == []
    finally:
        end(proc)
    errors = sorted({line.split("etcd error: ", 1)[1] for line in Path(log_path).read_text().splitlines()
                     if "etcd error: " in line})
    print(f"\nvip-manager 1.0.2 against etcd {layout.etcd_port} (v3 keys): {errors}")
    assert errors == ["client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint"]
    with netns.inside(topo.hub):  # what it met: etcd 3.4 serves no v2 API
        r = requests.get(f"http://{topo.dcs_host}:{layout.etcd_port}/v2/keys{LEADER_KEY}", timeout=3)
    assert r.status_code == 404 and "404 page not found" in r.text


def test_the_vip_is_on_the_leader_only_and_reaches_the_primary(netns_cluster, vip):  # noqa: F811
    layout = netns_cluster
    topo, address, procs, gateway = vip
    leader = the_leader(layout)
    with netns.inside(topo.dcs_ns):  # the gateway answers what etcd v2 would, from the v3 key
        answer = requests.get(f"{gateway.url}/v2/keys{LEADER_KEY}", timeout=3).json()
    assert answer["node"]["key"] == LEADER_KEY and answer["node"]["value"] == f"node{leader}"
    wait_for(lambda: holders(topo, address) == [leader], 20, f"the VIP {address} on node{leader}'s link only")
    assert via_vip(topo, layout, address, layout.pg_port(leader)) == (address, layout.pg_port(leader), False)
    assert all(pid_alive(p.pid) for p in procs)
    assert f"Configuring address {address}/24 on {NODE_LINK}" in vip_log(layout, leader)


def pgha_in(topo: Topology, i: int, *args: str) -> subprocess.CompletedProcess:
    """`pgha ...` run inside node i's namespace (where keepalived's check script would run)."""
    return subprocess.run(topo.node_prefix(i) + [sys.executable, "-m", "pgha", *args], capture_output=True,
                          text=True, timeout=60)


def test_pgha_check_primary_and_replica_exit_codes(netns_cluster):  # noqa: F811
    layout = netns_cluster
    topo = Topology.for_cluster(layout.base_port, layout.nodes)
    leader = the_leader(layout)
    replica = next(i for i in range(layout.nodes) if i != leader)

    def check(i: int, role: str) -> int:
        return pgha_in(topo, i, "-c", os.path.join(layout.node_dir(i), "pgha.yml"), "check", role).returncode
    assert check(leader, "primary") == 0
    assert check(replica, "primary") == 1
    assert wait_for(lambda: check(replica, "replica") == 0, 30, f"node{replica} to answer /replica") is True
    assert check(leader, "replica") == 1


def test_the_vip_moves_to_the_new_leader_after_the_leader_is_killed(netns_cluster, vip):  # noqa: F811
    layout = netns_cluster
    topo, address, procs, _ = vip
    old = the_leader(layout)
    wait_for(lambda: holders(topo, address) == [old], 20, f"the VIP on node{old}")
    with open(os.path.join(layout.node_dir(old), "data", "postmaster.pid")) as f:
        postmaster = int(f.readline())
    killed = time.monotonic()
    os.kill(read_state(layout)["agents"][f"node{old}"], signal.SIGKILL)
    os.kill(postmaster, signal.SIGKILL)
    new = the_leader(layout, other_than=f"node{old}", timeout=60)
    wait_for(lambda: holders(topo, address) == [new], 30, f"the VIP {address} on node{new}'s link only")
    moved = time.monotonic() - killed
    result = wait_for(lambda: via_vip(topo, layout, address, layout.pg_port(new)), 30,
                      f"a connection through the VIP to node{new}")
    reached = time.monotonic() - killed
    assert result == (address, layout.pg_port(new), False)
    assert f"Removing address {address}/24 on {NODE_LINK}" in vip_log(layout, old)  # its vip-manager still runs
    with pytest.raises(psycopg.OperationalError):  # nothing answers on the old leader's port through the VIP
        via_vip(topo, layout, address, layout.pg_port(old))
    print(f"\nleader node{old} killed: VIP on node{new} after {moved:.1f}s, a connection through it reached the "
          f"new primary after {reached:.1f}s")
