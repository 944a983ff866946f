"""A virtual IP that follows the leader: vip-manager (Debian bookworm's package, 1.0.2) on a `pgha up --netns`
cluster, one vip-manager per node inside that node's network namespace, adding the VIP (the subnet's .100/24) to
the node's link (eth0) while the leader key names that node, removing it otherwise. Asserted: the VIP is on the
leader's link only; a connection to it from the hub namespace reaches the primary; after the leader is killed
(agent and postmaster SIGKILLed) the VIP moves to the new leader within a deadline and reaches the new primary.
Also `pgha check primary|replica` (keepalived's kind of script), run inside the nodes' namespaces.

vip-manager 1.0.2 speaks only etcd's v2 API (github.com/coreos/etcd/client; etcd v3 came with vip-manager 2.0):
it cannot read pgha's keys, which are v3 keys (and etcd 3.4 serves no v2 API unless started with --enable-v2,
whose v2 store is separate from the v3 keys anyway). ``test_vip_manager_1_0_2_cannot_read_v3_keys`` shows exactly
that against the cluster's etcd. The other tests put the product's answer between them: `pgha etcd-v2-view`
(src/pgha/dcs/etcd_v2_view.py), etcd v2's read-only ``GET /v2/keys/<key>`` answered from the v3 key of the same
name, started beside etcd in the DCS namespace (``ip netns exec``, ended by its PID), as on real hosts it runs
beside vip-manager (docs/pgbouncer.md, "A virtual IP"). Its --verbose log shows what vip-manager asks: it polls
(no ``wait=true``).

The nodes of a `pgha up --netns` cluster keep their own ports (P+i), so a client of the VIP connects to the port of
the node that holds it (on real hosts every node has 5432). Every process the tests start (vip-manager, the view) is
ended by its PID; every wait polls under a deadline; nothing is dialled from this namespace to a namespace address
(``netns.inside`` first).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
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


# --- `pgha etcd-v2-view`, beside etcd in the DCS namespace ---------------------------------------------------
def start_view(topo: Topology, port: int, etcd_port: int, log_path: str) -> subprocess.Popen:
    """`pgha etcd-v2-view --verbose` in the DCS namespace (``ip netns exec`` execs python in place: the PID is the
    view's, the one the test ends), once it answers there."""
    command = topo.dcs_prefix() + [
        sys.executable, "-m", "pgha", "etcd-v2-view", "--listen", f"{topo.dcs_host}:{port}",
        "--etcd", f"http://{topo.dcs_host}:{etcd_port}", "--verbose"]
    env = {k: v for k, v in os.environ.items() if k != "PGHA_ETCD_PASSWORD"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=env)

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pgha etcd-v2-view exited with {proc.returncode}: "
                                 f"{Path(log_path).read_text(errors='replace')}")
        with netns.inside(topo.dcs_ns):
            return requests.get(f"http://{topo.dcs_host}:{port}/v2/keys{LEADER_KEY}", timeout=2).status_code \
                in (200, 404)
    try:
        wait_for(answers, 30, "pgha etcd-v2-view to answer")
    except BaseException:
        end(proc)
        raise
    return proc


def view_requests(log_path: str) -> list[tuple[str, str, str, str]]:
    """(client, method, target, status) of every request the view logged (--verbose)."""
    found = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) == 8 and words[2] == "INFO:" and words[6] == "->":
            found.append((words[3], words[4], words[5], words[7]))
    return found


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
    """`pgha etcd-v2-view` beside etcd (the DCS namespace, port P+202) and one vip-manager per node, reading it."""
    if not VIP_MANAGER:
        pytest.fail("vip-manager is not installed (Debian: apt-get install -y vip-manager)", pytrace=False)
    layout = netns_cluster
    topo = Topology.for_cluster(layout.base_port, layout.nodes)
    address, port = f"{topo.subnet}.100", layout.etcd_port + 2
    view = start_view(topo, port, layout.etcd_port, layout.path("etcd-v2-view.log"))
    procs: list[subprocess.Popen] = []
    try:
        for i in range(layout.nodes):
            procs.append(start_vip_manager(topo, i, address, f"http://{topo.dcs_host}:{port}",
                                           layout.path(f"vip-manager-node{i}.log")))
        yield topo, address, procs, f"http://{topo.dcs_host}:{port}"
    finally:
        for proc in procs:
            end(proc)
        end(view)


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
    topo, address, procs, view_url = vip
    leader = the_leader(layout)
    with netns.inside(topo.dcs_ns):  # the view answers what etcd v2 would, from the v3 key
        answer = requests.get(f"{view_url}/v2/keys{LEADER_KEY}", timeout=3).json()
    assert answer["node"]["key"] == LEADER_KEY and answer["node"]["value"] == f"node{leader}"
    wait_for(lambda: holders(topo, address) == [leader], 20, f"the VIP {address} on node{leader}'s link only")
    assert via_vip(topo, layout, address, layout.pg_port(leader)) == (address, layout.pg_port(leader), False)
    assert all(pid_alive(p.pid) for p in procs)
    assert f"Configuring address {address}/24 on {NODE_LINK}" in vip_log(layout, leader)


def test_vip_manager_1_0_2_polls_the_view(netns_cluster, vip):  # noqa: F811
    """What vip-manager 1.0.2 asks (the view's --verbose log): GETs of the trigger key, never ``wait=true``, so
    the view needs no long-poll; every one answered 200, from every node."""
    layout = netns_cluster
    topo = vip[0]
    nodes = {topo.node_host(i) for i in range(layout.nodes)}
    log_path = layout.path("etcd-v2-view.log")
    wait_for(lambda: {c for c, *_ in view_requests(log_path)} >= nodes, 20, "a request from every vip-manager")
    asked = [r for r in view_requests(log_path) if r[0] in nodes]
    shapes = sorted({(method, target) for _, method, target, _ in asked})
    print(f"\nvip-manager 1.0.2 asked the view {len(asked)} times: {shapes}")
    assert all(method == "GET" and urllib.parse.urlsplit(target).path == f"/v2/keys{LEADER_KEY}"
               for method, target in shapes)
    assert not any("wait=" in target for _, target in shapes)
    assert {status for *_, status in asked} == {"200"}


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
