"""Routing through real HAProxy to a real cluster: `pgha up`'s rw/ro listeners and `pgha router`, before and
after a failover, and the `listen` blocks of two seed setups (tests/fixtures/haproxy/, adapted to 127.0.0.1 and the
test cluster's ports) against pgha's REST API.

Every process is real; the seed HAProxies are started here and ended by their PID. Waits poll under a deadline.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from string import Template

import psycopg
import pytest
import yaml

from pgha.local.layout import read_state
from pgha.procutil import pid_alive, stop_pid
from pgha.router.process import haproxy_binary
from pgha.router.runtime import HaproxyRuntime

from .conftest import TEST_TIMING, wait_for
from .test_cluster import leader_and_replicas, snapshot
from .test_failover import agent_pid, all_streaming, postmaster_pid

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "haproxy"


def password(cluster) -> str:
    with open(os.path.join(cluster.layout.node_dir(0), "pgha.yml")) as f:
        return yaml.safe_load(f)["postgresql"]["authentication"]["superuser"]["password"]


def where(cluster, port: int) -> tuple[bool, int]:
    """(in recovery, server port) of a new connection through ``port``."""
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password(cluster),
                         dbname="postgres", connect_timeout=3, autocommit=True) as conn:
        return conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()


def lands_on(cluster, port: int, recovery: bool, pg_ports: set[int], tries: int = 6) -> set[int]:
    """Every one of ``tries`` connections through ``port`` reaches one of ``pg_ports`` with that recovery state;
    returns the ports reached (empty when one did not)."""
    seen = set()
    for _ in range(tries):
        try:
            in_recovery, server_port = where(cluster, port)
        except psycopg.Error:
            return set()
        if in_recovery != recovery or server_port not in pg_ports:
            return set()
        seen.add(server_port)
    return seen


def wait_routing(cluster, rw_port: int | None, ro_port: int | None, timeout: float = 30) -> None:
    leader, replicas = leader_and_replicas(cluster)
    pg = cluster.layout.pg_port
    if rw_port:
        wait_for(lambda: lands_on(cluster, rw_port, False, {pg(leader)}), timeout, f"{rw_port} -> node{leader}")
    if ro_port:
        want = {pg(i) for i in replicas}
        wait_for(lambda: lands_on(cluster, ro_port, True, want, tries=3 * len(want)) == want, timeout,
                 f"{ro_port} -> every replica {sorted(want)}")


@pytest.fixture(scope="module")
def seed_proxies(cluster):
    """HAProxy with seed 003's and seed 004's listen blocks, ports P+303.. (see conftest.port_block_free)."""
    layout = cluster.layout
    base = layout.base_port
    ports = dict(SEED003_PORT=base + 303, SEED004_STATS_PORT=base + 304, SEED004_RW_PORT=base + 305,
                 SEED004_RO_PORT=base + 306)
    for i in range(3):
        ports[f"PG_PORT_{i}"], ports[f"API_PORT_{i}"] = layout.pg_port(i), layout.api_port(i)
    procs = []
    try:
        for name in ("seed003", "seed004"):
            config = layout.path(f"haproxy-{name}.cfg")
            Path(config).write_text(Template((FIXTURES / f"{name}.cfg").read_text()).substitute(ports))
            with open(layout.path(f"haproxy-{name}.log"), "ab") as log:
                procs.append(subprocess.Popen([haproxy_binary(), "-db", "-f", config], stdout=log, stderr=log,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
        yield {"003": base + 303, "004_rw": base + 305, "004_ro": base + 306}
    finally:
        for proc in procs:
            stop_pid(proc.pid, timeout=10)


def test_haproxy_is_installed():
    assert haproxy_binary(), "haproxy is not installed (Debian: apt-get install haproxy)"


def test_up_started_haproxy_and_the_router(cluster):
    state = read_state(cluster.layout)
    assert pid_alive(state.get("haproxy_pid")) and pid_alive(state.get("router_pid"))
    runtime = HaproxyRuntime(cluster.layout.haproxy_socket)
    leader, replicas = leader_and_replicas(cluster)
    assert runtime.up_servers("rw") == {f"node{leader}"}
    assert runtime.up_servers("ro") == {f"node{i}" for i in replicas}


def test_writes_through_rw_reach_the_leader_and_reads_through_ro_the_replicas(cluster):
    layout = cluster.layout
    leader, replicas = leader_and_replicas(cluster)
    with psycopg.connect(host="127.0.0.1", port=layout.rw_port, user="postgres", password=password(cluster),
                         dbname="postgres", connect_timeout=3, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone() == \
            (False, layout.pg_port(leader))
        conn.execute("CREATE TABLE IF NOT EXISTS routed (tag text)")
        conn.execute("INSERT INTO routed VALUES ('through rw')")
    assert lands_on(cluster, layout.ro_port, True, {layout.pg_port(i) for i in replicas}, tries=6) == \
        {layout.pg_port(i) for i in replicas}  # round robin over both replicas

    def replicated() -> bool:
        with psycopg.connect(host="127.0.0.1", port=layout.ro_port, user="postgres", password=password(cluster),
                             dbname="postgres", connect_timeout=3, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM routed WHERE tag = 'through rw'").fetchone()[0] == 1
    wait_for(replicated, 10, "the row written through rw to be read through ro")


def test_haproxy_config_command_prints_a_config_haproxy_accepts(cluster, tmp_path):
    out = subprocess.run([sys.executable, "-m", "pgha", "-c", cluster.layout.ctl_config, "haproxy-config",
                          "--rw-port", "15000", "--ro-port", "15001", "--stats-port", "15002",
                          "--socket", str(tmp_path / "s.sock")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for i in range(3):
        assert f"server node{i} 127.0.0.1:{cluster.layout.pg_port(i)} maxconn 100 " \
               f"check port {cluster.layout.api_port(i)}" in out.stdout
    (tmp_path / "h.cfg").write_text(out.stdout)
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(tmp_path / "h.cfg")], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_seed_listen_blocks_route_against_pgha(cluster, seed_proxies):
    # inter 3s fall 3 rise 2: HAProxy starts with every server up, so allow for three failed checks (and, on a
    # loaded machine, checks that time out: timeout check 5s)
    wait_routing(cluster, seed_proxies["003"], None, timeout=60)
    wait_routing(cluster, seed_proxies["004_rw"], seed_proxies["004_ro"], timeout=60)


def test_failover_moves_rw_and_ro_and_the_router_says_so(cluster, seed_proxies):
    layout = cluster.layout
    leader, replicas = leader_and_replicas(cluster)
    os.kill(agent_pid(cluster, leader), signal.SIGKILL)
    os.kill(postmaster_pid(cluster, leader), signal.SIGKILL)
    killed = time.monotonic()
    view = wait_for(lambda: (lambda v: v if v.leader not in (None, f"node{leader}") else None)(snapshot(cluster)),
                    TEST_TIMING["ttl"] * 4 + 10, f"a leader other than node{leader}")
    new = int(view.leader.removeprefix("node"))
    wait_for(lambda: lands_on(cluster, layout.rw_port, False, {layout.pg_port(new)}), 20,
             f"rw -> the new leader node{new}")
    switched = time.monotonic() - killed
    survivor = {layout.pg_port(i) for i in replicas if i != new}
    wait_for(lambda: lands_on(cluster, layout.ro_port, True, survivor) == survivor, 20, "ro -> the other replica")
    router_log = Path(layout.path("router.log")).read_text()
    assert f"rw: node{leader} marked down" in router_log and f"rw: node{new} up (new leader) after" in router_log
    print(f"rw reached the new leader {switched:.1f}s after the old one was killed")

    cluster.up(timeout=120, timing=TEST_TIMING)  # restarts the dead node's agent: it rejoins as a replica
    all_streaming(cluster)
    wait_routing(cluster, layout.rw_port, layout.ro_port, timeout=30)
    wait_routing(cluster, seed_proxies["003"], None, timeout=60)
    wait_routing(cluster, seed_proxies["004_rw"], seed_proxies["004_ro"], timeout=60)


def test_switchover_moves_rw_and_ro_and_the_old_leader_returns_to_ro(cluster, seed_proxies):
    import requests
    from .conftest import api_auth
    layout = cluster.layout
    all_streaming(cluster)
    leader, replicas = leader_and_replicas(cluster)
    target = replicas[0]
    r = requests.post(f"http://127.0.0.1:{layout.api_port(leader)}/switchover", timeout=60,
                      json={"leader": f"node{leader}", "candidate": f"node{target}"}, auth=api_auth(layout))
    assert (r.status_code, r.text) == (200, f'Successfully switched over to "node{target}"')
    wait_for(lambda: lands_on(cluster, layout.rw_port, False, {layout.pg_port(target)}), 20,
             f"rw -> the new leader node{target}")
    with psycopg.connect(host="127.0.0.1", port=layout.rw_port, user="postgres", password=password(cluster),
                         dbname="postgres", connect_timeout=3, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS routed (tag text)")
        conn.execute("INSERT INTO routed VALUES ('after the switchover')")
    others = {layout.pg_port(i) for i in range(layout.nodes) if i != target}  # the old leader is a replica now
    wait_for(lambda: lands_on(cluster, layout.ro_port, True, others, tries=8) == others, 40,
             "ro -> both replicas, the old leader included")
    assert "asked to step down: draining" in Path(layout.path("router.log")).read_text()
    wait_routing(cluster, seed_proxies["003"], None, timeout=30)


def test_down_ends_haproxy_and_the_router_by_pid(cluster):
    state = read_state(cluster.layout)
    pids = state["haproxy_pid"], state["router_pid"]
    try:
        stopped = cluster.down()
        assert "router" in stopped and "haproxy" in stopped
        assert not any(pid_alive(pid) for pid in pids)
    finally:
        cluster.up(timeout=120, timing=TEST_TIMING)
    wait_routing(cluster, cluster.layout.rw_port, cluster.layout.ro_port)


# --- the router on a leader change where the old leader stays alive (as in a switchover) ----------------------
# Real etcd, real HAProxy, a real `pgha router` process; the two members' PostgreSQL and REST API are stand-ins
# (a TCP server that says its name; an HTTP server whose answers the test sets), so the old leader can be held in
# the state a switchover passes through: alive, its /primary still 200 for a moment after the key moved.

class StandIn:
    """One member: a 'PostgreSQL' that sends its name to each connection, a REST API with settable codes."""

    def __init__(self, name: str) -> None:
        self.name, self.codes = name, {"/primary": 503, "/replica": 503}
        self.pg = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._pg_handler())
        self.api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._api_handler())
        for server in (self.pg, self.api):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def _pg_handler(self):
        name = self.name.encode()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(name + b"\n")
                self.request.settimeout(30)  # then hold the session until the client (or HAProxy) ends it
                try:
                    self.request.recv(1)
                except OSError:
                    pass
        return Handler

    def _api_handler(self):
        codes = self.codes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(codes.get(self.path, 503))
                self.end_headers()
            do_OPTIONS = do_GET

            def log_message(self, *args) -> None:
                pass
        return Handler

    def member(self) -> dict:
        return {"conn_url": f"postgres://127.0.0.1:{self.pg.server_address[1]}/postgres",
                "api_url": f"http://127.0.0.1:{self.api.server_address[1]}/patroni", "state": "running"}

    def close(self) -> None:
        for server in (self.pg, self.api):
            server.shutdown()
            server.server_close()


def reached(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(2)
        return s.recv(64).decode().strip()


@pytest.fixture()
def standin_cluster(etcd_server, tmp_path):
    from pgha.dcs import make_dcs
    from pgha.router.haproxy_config import Checks, RouterPorts, render, servers_from_view
    scope = f"router-{os.getpid()}-{int(time.monotonic() * 1000)}"
    members = {n: StandIn(n) for n in ("a", "b")}
    dcs = {n: make_dcs(hosts=[("127.0.0.1", etcd_server.port)], scope=scope, ttl=5) for n in members}
    procs = []
    try:
        for n, m in members.items():
            dcs[n].touch_member(n, m.member())
        members["a"].codes.update({"/primary": 200})
        members["b"].codes.update({"/replica": 200})
        assert dcs["a"].acquire_leader("a")
        ports = [free_port() for _ in range(3)]
        sock = str(tmp_path / "h.sock")
        # health checks every 10 s: any switch seen within a second is the router's doing
        config = render(servers_from_view(dcs["a"].snapshot()), RouterPorts(*ports), sock,
                        Checks(inter="10s", fall=1, rise=1))
        (tmp_path / "h.cfg").write_text(config)
        for argv, log in (([haproxy_binary(), "-db", "-f", str(tmp_path / "h.cfg")], "haproxy.log"),
                          ([sys.executable, "-m", "pgha", "--dcs-url", f"etcd3://127.0.0.1:{etcd_server.port}/service",
                            "router", scope, "--socket", sock], "router.log")):
            with open(tmp_path / log, "ab") as f:
                procs.append(subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
            if log == "haproxy.log":
                wait_for(lambda: os.path.exists(sock), 10, "HAProxy's socket")
        yield members, dcs, ports[0], ports[1], HaproxyRuntime(sock), tmp_path / "router.log"
    finally:
        for proc in reversed(procs):
            stop_pid(proc.pid, timeout=10)
        for n in members:
            dcs[n].close(revoke=True)
            members[n].close()


def never(condition, duration: float, what: str) -> None:
    """An observation window (not a wait): ``condition`` must stay false for ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert not condition(), what
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_router_switches_at_once_when_the_old_leader_stays_alive(standin_cluster):
    members, dcs, rw, ro, runtime, router_log = standin_cluster
    wait_for(lambda: runtime.up_servers("rw") == {"a"} and runtime.up_servers("ro") == {"b"}, 10,
             "the router's first routing: rw -> a, ro -> b")
    assert reached(rw) == "a" and reached(ro) == "b"
    held = socket.create_connection(("127.0.0.1", rw), timeout=5)  # a session on the old leader
    assert held.recv(64) == b"a\n"

    # the switchover: a still answers /primary 200 (not yet demoted) while the key moves to b
    members["b"].codes.update({"/primary": 200, "/replica": 503})
    assert dcs["a"].release_leader("a") and dcs["b"].acquire_leader("b")
    moved = time.monotonic()
    samples = []

    def rw_is_b() -> bool:
        up = runtime.up_servers("rw")
        samples.append(up)
        return up == {"b"}
    wait_for(rw_is_b, 3, "rw -> b", interval=0.02)
    took = time.monotonic() - moved
    assert took < 2, f"rw moved after {took:.2f}s: the health checks (every 10 s) did it, not the router"
    assert all("a" not in up for up in samples[1:]), samples  # a never came back into rw
    assert reached(rw) == "b"
    assert held.recv(64) == b"", "the old leader's session was not ended"  # EOF: HAProxy shut it down
    held.close()
    assert runtime.up_servers("ro") == set()  # b left ro at once; a is not a replica yet
    never(lambda: "a" in runtime.up_servers("rw"), 1.5, "a back in rw while its /primary still answers 200")

    # a finishes demoting and streams from b: back in ro within a second, and still out of rw
    members["a"].codes.update({"/primary": 503, "/replica": 200})
    wait_for(lambda: runtime.up_servers("ro") == {"a"}, 2, "ro -> a", interval=0.02)
    assert runtime.up_servers("rw") == {"b"} and reached(ro) == "a"
    assert not any(s.drain or s.maint for s in runtime.servers_state())  # nothing left drained
    log_text = router_log.read_text()
    assert "rw: a marked down" in log_text and "rw: b up (new leader) after" in log_text
