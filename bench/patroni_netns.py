"""Both systems in network namespaces, for the verifier's partition faults (bench/verify_bench.py --netns).

``PatroniNetnsSystem``: a Patroni 4.1.5 cluster laid out as `pgha up --netns` lays out pgha
(pgha.local.netns.Topology: etcd in ``pgha-P-dcs``, node i's Patroni and PostgreSQL in ``pgha-P-nI``, veth links
to a bridge in ``pgha-P-hub``), behind the same HAProxy configuration pgha renders for its own netns cluster
(started in this process's namespace, connecting to the nodes from the hub, its listeners bound in both).
``PghaNetnsSystem``: failover_lib's PghaSystem on `pgha up --netns` (LocalCluster(layout, netns=True)).
``PatroniNetnsTarget``: verify_lib's PatroniTarget with the ``netns`` capability; its ``partition`` is pgha's
(pgha.verify.partition.partition_leader), the same cut, hold (ttl + 2 s) and heal as NetnsTarget's.

Rules
1. Nothing in the root namespace ever connects to a 10.x address: every read of the DCS, the REST APIs or
   PostgreSQL happens inside the hub (``topology.inside()``, on the calling thread only; threads started in it
   stay there, so a verifier run is started inside it).
2. Processes are started inside their namespace and ended by the PID we started (Patroni, etcd, HAProxy) or read
   from postmaster.pid; the namespaces are removed (``Topology.remove``) by ``stop``, also after a failed start.
3. Every wait is bounded in count and time.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from psycopg.conninfo import make_conninfo

import benchlib
import failover_lib as fl
import patroni_env
import switchover_lib as sl
import verify_lib as vl


def _netns():
    from pgha.local import netns
    return netns


# --- the DCS and PostgreSQL, read from the hub (rule 1) ---------------------------------------------------------
def read_cluster(topo, port: int, namespace: str, scope: str) -> benchlib.ClusterState | None:
    """benchlib.read_cluster, at the DCS namespace's address, from the hub."""
    base = f"{namespace.rstrip('/')}/{scope}/".encode()
    body = json.dumps({"key": base64.b64encode(base).decode(),
                       "range_end": base64.b64encode(base[:-1] + bytes([base[-1] + 1])).decode()}).encode()
    req = urllib.request.Request(f"http://{topo.dcs_host}:{port}/v3/kv/range", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with topo.inside(), urllib.request.urlopen(req, timeout=1.0) as r:
            data = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    state = benchlib.ClusterState()
    for kv in data.get("kvs", []):
        rest = base64.b64decode(kv["key"]).decode()[len(base):]
        value = base64.b64decode(kv.get("value", ""))
        if rest == "leader":
            state.leader = value.decode(errors="replace") or None
        elif rest.startswith("members/"):
            try:
                state.members[rest[len("members/"):]] = json.loads(value)
            except ValueError:
                state.members[rest[len("members/"):]] = {}
    return state


class NetnsMixin:
    """What a fl.System in namespaces reads differently: the DCS and PostgreSQL at their namespace addresses."""

    topology: Any

    def cluster_state(self) -> benchlib.ClusterState | None:
        return read_cluster(self.topology, self.etcd_port, self.namespace, self.scope)

    def wait_streaming(self, timeout: float) -> benchlib.Milestones:
        t0 = time.monotonic()
        ms = benchlib.Milestones()
        for _ in range(int(timeout / 0.2) + 2):
            st = self.cluster_state()
            if st is not None:
                ms.last = st.line()
                if st.streaming(self.nodes):
                    ms.streaming = time.monotonic() - t0
                    return ms
            if time.monotonic() - t0 >= timeout or not self._alive():
                break
            time.sleep(0.2)
        return ms

    def _alive(self) -> bool:
        return True

    def wait_replication(self, timeout: float) -> None:
        topo = self.topology
        info = make_conninfo(host=",".join(topo.node_host(i) for i in range(self.nodes)),
                             port=",".join(str(p) for p in self.ports), user="postgres", password=self.password,
                             dbname="postgres", target_session_attrs="read-write", connect_timeout=2)
        import psycopg
        deadline, seen = time.monotonic() + timeout, -1
        for _ in range(int(timeout / 0.2) + 2):
            try:
                with topo.inside(), psycopg.connect(info, autocommit=True) as conn:
                    seen = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                                        ).fetchone()[0]
                if seen >= self.nodes - 1:
                    return
            except psycopg.Error:
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind}: the leader shows {seen} streaming replicas after {timeout:.0f}s")


# --- pgha -----------------------------------------------------------------------------------------------------
class PghaNetnsSystem(NetnsMixin, fl.PghaSystem):
    """`pgha up --netns` (its HAProxy and `pgha router` as LocalCluster starts them)."""

    def __init__(self, root: str, nodes: int, base_port: int, timing, say: Callable[[str], None]) -> None:
        super().__init__(root, nodes, base_port, timing, say=say)
        from pgha.local.cluster import LocalCluster
        self.cluster = LocalCluster(self.layout, say=self.up_log.append, netns=True)
        self.topology = _netns().Topology.for_cluster(base_port, nodes)

    def make_target(self, dsn: str):
        from pgha.verify.partition import NetnsTarget
        return NetnsTarget(self.layout.root)


# --- Patroni ----------------------------------------------------------------------------------------------------
class NetnsPatroniCluster(patroni_env.PatroniCluster):
    """patroni_env's cluster with its addresses and processes in the topology's namespaces."""

    def __init__(self, topo, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.topology = topo

    def config(self, i: int, pw: dict[str, str]) -> dict[str, Any]:
        topo, host = self.topology, self.topology.node_host(i)
        c = super().config(i, pw)
        api = self.base_port + 100 + i
        c["restapi"] = {"listen": f"{host}:{api}", "connect_address": f"{host}:{api}"}
        c["etcd3"] = {"hosts": f"{topo.dcs_host}:{self.etcd_port}"}
        pg = c["postgresql"]
        pg["listen"] = pg["connect_address"] = f"{host}:{self.base_port + i}"
        pg["pg_hba"] = ["local all all peer", f"host all all {topo.client_net} scram-sha-256",
                        f"host replication replicator {topo.client_net} scram-sha-256"]
        return c

    def start_etcd(self) -> subprocess.Popen:
        from pgha.local import etcd
        self.etcd_proc = etcd.start_etcd(os.path.join(self.root, "etcd"), self.etcd_port, self.etcd_peer_port,
                                         os.path.join(self.root, "etcd.log"), host=self.topology.dcs_host,
                                         prefix=self.topology.dcs_prefix())
        return self.etcd_proc

    def wait_etcd(self, timeout: float) -> None:
        from pgha.local import etcd
        with self.topology.inside():
            etcd.wait_healthy(self.etcd_port, timeout=timeout, proc=self.etcd_proc, host=self.topology.dcs_host)

    def start_agent(self, i: int) -> subprocess.Popen:
        """Patroni of node i, as the postgres account, started from inside the node's namespace (rule 2)."""
        with open(self.log(i), "ab") as log, _netns().inside(self.topology.node_ns(i)):
            self.account.chown(self.log(i))
            proc = subprocess.Popen([patroni_env.patroni_bin(), os.path.join(self.node_dir(i), "patroni.yml")],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.node_dir(i),
                                    start_new_session=True, **self.account.popen_kwargs())
        self.agents[self.name(i)] = proc
        return proc

    def start_agents(self) -> None:
        for i in range(self.nodes):
            self.start_agent(i)


class NetnsHaproxy(sl.PlainHaproxy):
    """The HAProxy configuration pgha renders for its netns cluster: servers reached from the hub, listeners in
    this namespace (127.0.0.1) and in the hub."""

    def __init__(self, topo, *a) -> None:
        super().__init__(*a)
        self.topology = topo

    def start(self) -> None:
        from pgha.router import process
        from pgha.router.haproxy_config import RouterPorts, Server, render
        binary = process.haproxy_binary()
        if binary is None:
            raise SystemExit("HAProxy is not installed: apt-get install -y haproxy")
        topo = self.topology
        servers = [Server(f"node{i}", topo.node_host(i), self.base_port + i, topo.node_host(i),
                          self.base_port + 100 + i, namespace=topo.hub) for i in range(self.nodes)]
        ports = RouterPorts(self.base_port + 300, self.base_port + 301, self.base_port + 302, also_in=(topo.hub,))
        with open(self.config, "w") as f:
            f.write(render(servers, ports, self.socket, scope="pgha-bench (Patroni, netns)"))
        self.proc = process.start_haproxy(binary, self.config, self.log)


class PatroniNetnsSystem(NetnsMixin, sl.PatroniBehindHaproxy):
    def __init__(self, root: str, nodes: int, base_port: int, timing, account, say: Callable[[str], None]) -> None:
        super().__init__(root, nodes, base_port, timing, account, say=say)
        self.topology = _netns().Topology.for_cluster(base_port, nodes)
        self.cluster = NetnsPatroniCluster(self.topology, root, nodes, base_port, timing, account, say=say)
        self.haproxy = NetnsHaproxy(self.topology, root, base_port, nodes)

    def _alive(self) -> bool:
        return self.cluster.agents_alive()

    def start(self, timeout: float) -> None:
        try:
            self.topology.create()
            self.cluster.write_files()
            self.password = self._read_password()
            self.cluster.start_etcd()
            self.cluster.wait_etcd(30)
            self.cluster.start_agents()
            ms = self.wait_streaming(timeout)
            if ms.streaming is None:
                raise TimeoutError(f"Patroni (netns): not streaming within {timeout:.0f}s ({ms.last})")
            self.haproxy.start()
        except BaseException:
            self.stop()
            raise

    def start_agent(self, i: int) -> None:
        old = self.cluster.agents.get(f"node{i}")
        if old is not None and old.poll() is None:
            return
        if old is not None:
            try:
                old.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.cluster.start_agent(i)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            try:
                self.topology.heal_all()
            except Exception:  # noqa: BLE001 (the namespaces go below anyway)
                pass
            self.topology.remove()

    def make_target(self, dsn: str):
        return patroni_netns_target_class()(self, dsn)


def patroni_netns_target_class():
    """``PatroniNetnsTarget``, defined once pgha is importable (as verify_lib.patroni_target_class)."""
    global _TARGET
    if _TARGET is not None:
        return _TARGET
    from pgha.verify.partition import partition_leader
    base = vl.patroni_target_class()

    class PatroniNetnsTarget(base):
        kind = "patroni-bench-netns"
        capabilities = base.capabilities | {"netns"}

        def node_conninfo(self, name: str) -> str:
            i = self._index(name)
            return make_conninfo(host=self.system.topology.node_host(i), port=str(self.system.pg_port(i)),
                                 user="postgres", password=self.system.password, dbname="postgres")

        def partition(self, kind: str, ctx) -> None:
            partition_leader(self, self.system.topology, [f"node{i}" for i in range(self.system.nodes)], kind, ctx)

    _TARGET = PatroniNetnsTarget
    return PatroniNetnsTarget


_TARGET = None


def pick_base_port(first: int, seq: int, nodes: int) -> int:
    """verify_lib.pick_base_port, skipping base ports whose namespaces exist already (another cluster's)."""
    netns = _netns()
    for k in range(16):
        base = vl.pick_base_port(first, seq + k, nodes)
        if not any(netns.exists(ns) for ns in netns.Topology.for_cluster(base, nodes).namespaces):
            return base
    raise SystemExit(f"no base port from {first} whose namespaces are free (16 tried)")


def make_system(kind: str, root: str, nodes: int, base: int, timing, account, say: Callable[[str], None]):
    if kind == "pgha":
        return PghaNetnsSystem(root, nodes, base, timing, say=say)
    return PatroniNetnsSystem(root, nodes, base, timing, account, say=say)


def hub_of(system):
    """Inside the system's hub namespace for the block (rule 1), or nowhere else for a loopback system."""
    import contextlib
    topo = getattr(system, "topology", None)
    return topo.inside() if topo is not None else contextlib.nullcontext()


SECTION_NOTE = (
    "Network namespaces (bench/patroni_netns.py): both clusters laid out as `pgha up --netns` lays out "
    "pgha (pgha.local.netns.Topology: etcd in one namespace, each node's agent and PostgreSQL in its own, "
    "veth links to a bridge in a hub namespace; pgha through `LocalCluster(netns=True)`, Patroni started "
    "inside the same kind of namespaces, behind the HAProxy configuration pgha renders for them). The "
    "verifier runs inside each cluster's hub; the partition faults are pgha's own "
    "(`pgha.verify.partition.partition_leader`, the same code for both systems): blackhole routes both "
    "ways, or the leader's link down, held for ttl + 2 s (6 s for pgha, 22 s for Patroni "
    "at 20 / 1 / 3), then healed.")
