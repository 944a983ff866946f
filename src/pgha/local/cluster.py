"""Bring a local cluster up and down: its own etcd, N agents (each running its PostgreSQL), on 127.0.0.1.

Rules
1. Every process is started detached (its own session) and recorded by PID in DIR/state.json; ``down`` ends
   exactly those PIDs: the router and HAProxy first, then the agents (replicas before the leader, so the
   leader's last WAL is the newest), etcd last. Nothing is ever killed by name.
2. ``up`` on a directory that already holds a cluster restarts it with its data: the node that led when it was
   stopped starts first, so it takes the lock back on its own timeline.
3. Files with passwords (node configs, pgpass files) are 0600; PostgreSQL's files belong to its account.
4. Every wait is bounded and says what it is waiting for.
5. Routing (HAProxy on rw/ro ports, and `pgha router`) starts once the cluster is healthy, when the haproxy
   binary is installed; without it the cluster runs without a router, and says so.
6. With ``pgbouncer`` (`pgha up --pgbouncer`, remembered in state.json), PgBouncer (as PostgreSQL's account) and
   its follower `pgha pgbouncer` start after routing; ``down`` ends them first, by PID. PgBouncer missing is an
   error then: it was asked for.
7. With ``netns`` (`pgha up --netns`, remembered in state.json), etcd and each node run in network namespaces of
   their own (pgha/local/netns.py), created before anything starts and removed by ``down`` after everything
   stopped; this process talks to them from the hub namespace (``self.net.inside()``) and starts HAProxy where
   it was started itself (``self.net.outside()``), so clients keep using 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any, Callable

import yaml

from pgha.core.model import ClusterView
from pgha.dcs import make_dcs
from pgha.fsutil import write_atomic
from pgha.local import zookeeper as zk
from pgha.local import bouncer, etcd
from pgha.local.layout import Layout, SCOPE, ctl_config, dump_yaml, new_secrets, node_config, read_state
from pgha.local.netns import NetnsError, check_supported, listen_everywhere, network_for
from pgha.osuser import Account, postgres_account
from pgha.procutil import pid_alive, stop_pid
from pgha.postgres.conf import render_pgpass
from pgha.ports import DcsError

DEFAULT_TIMING = {"ttl": 4, "loop_wait": 1, "retry_timeout": 1}  # pgha's defaults, written out in bootstrap.dcs


class UpError(Exception):
    pass


class LocalCluster:
    def __init__(self, layout: Layout, say: Callable[[str], None] = print, dcs_kind: str = "etcd",
                 pgbouncer: bool = False, netns: bool = False) -> None:
        self.layout = layout
        # An existing cluster keeps its DCS: the state file remembers which one it was made with.
        self.dcs_kind = read_state(layout).get("dcs", dcs_kind)
        self.pgbouncer = pgbouncer or bool(read_state(layout).get("pgbouncer"))
        try:  # rule 7: loopback, or the namespaces the state file recorded, or new ones (--netns)
            self.net = network_for(layout.base_port, layout.nodes, read_state(layout), netns)
        except NetnsError as e:
            raise UpError(str(e)) from None
        if self.net.netns and (self.dcs_kind != "etcd" or self.pgbouncer):
            raise UpError("--netns runs etcd as the DCS and no PgBouncer (--dcs zookeeper and --pgbouncer are "
                          "not available with it yet)")
        self.say = say
        self.account: Account = postgres_account()
        self.watched: set[str] = set()  # agents this `up` started or found running: they must stay up

    # --- files ----------------------------------------------------------------------------------------
    def _check_reachable(self) -> None:
        """PostgreSQL's account must be able to walk down to DIR (root's home usually is 0700)."""
        if not self.account.switching:
            return
        path = os.path.abspath(self.layout.root)
        while True:
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent
            st = os.stat(path)
            if not (st.st_mode & 0o001) and st.st_uid != self.account.uid:
                raise UpError(f"{self.layout.root} is not reachable by the '{self.account.name}' account "
                              f"that runs PostgreSQL ({path} is mode {oct(st.st_mode & 0o777)}): "
                              "choose --dir under /tmp or /var/tmp")

    def _secrets(self) -> dict[str, str]:
        path = self.layout.path("node0", "pgha.yml")
        if os.path.exists(path):
            with open(path) as f:
                node = yaml.safe_load(f)
            auth = node["postgresql"]["authentication"]
            found = {role: auth[role]["password"] for role in ("superuser", "replication", "rewind")}
            api = (node.get("restapi") or {}).get("authentication") or {}
            # a cluster made before the REST API had a password gets one now
            return {**found, "restapi": api.get("password") or new_secrets()["restapi"]}
        return new_secrets()

    def write_files(self, timing: dict[str, Any]) -> None:
        layout = self.layout
        os.makedirs(layout.root, mode=0o755, exist_ok=True)
        self._check_reachable()
        pw = self._secrets()
        for i in range(layout.nodes):
            node_dir = layout.node_dir(i)
            os.makedirs(node_dir, mode=0o700, exist_ok=True)
            self.account.chown(node_dir)
            config = node_config(layout, i, pw, timing, net=self.net)
            if self.net.netns:  # rule 7: a VIP on the node's link (vip-manager) reaches PostgreSQL too
                config = listen_everywhere(config, layout.pg_port(i))
            write_atomic(os.path.join(node_dir, "pgha.yml"), dump_yaml(self._on_dcs(config)), mode=0o600)
        config = ctl_config(layout, pw, dcs_host=self.net.dcs_host)
        write_atomic(layout.ctl_config, dump_yaml(self._on_dcs(config)), mode=0o600)
        write_atomic(layout.client_pgpass, render_pgpass([("postgres", pw["superuser"])]), mode=0o600)

    def _on_dcs(self, config: dict[str, Any]) -> dict[str, Any]:
        """The configuration pointed at this cluster's DCS (etcd by default; ZooKeeper on the same port)."""
        return zk.use_zookeeper(config, self.layout.etcd_port) if self.dcs_kind == "zookeeper" else config

    def _save_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.layout.state_file, json.dumps(state, indent=2) + "\n", mode=0o644)

    # --- processes ------------------------------------------------------------------------------------
    def _start_etcd(self, state: dict[str, Any]) -> None:
        if pid_alive(state.get("etcd_pid")):
            return
        layout = self.layout
        if self.dcs_kind == "zookeeper":  # one DCS runs: ZooKeeper takes etcd's port and PID slot
            proc = zk.start_zookeeper(layout.path("zookeeper"), layout.etcd_port, layout.path("zookeeper.log"))
            state["etcd_pid"], state["dcs"] = proc.pid, "zookeeper"
            self._save_state(state)
            try:
                zk.wait_healthy(layout.etcd_port, timeout=30, proc=proc)
            except (RuntimeError, TimeoutError) as e:
                raise UpError(f"{e}; see {layout.path('zookeeper.log')}") from None
            return
        proc = etcd.start_etcd(layout.path("etcd"), layout.etcd_port, layout.etcd_peer_port, layout.path("etcd.log"),
                               host=self.net.dcs_host, prefix=self.net.dcs_prefix())
        state["etcd_pid"] = proc.pid
        self._save_state(state)
        try:
            etcd.wait_healthy(layout.etcd_port, timeout=30, proc=proc, host=self.net.dcs_host)
        except (RuntimeError, TimeoutError) as e:
            raise UpError(f"{e}; see {layout.path('etcd.log')}") from None

    def _start_agent(self, i: int, state: dict[str, Any]) -> None:
        pids = state.setdefault("agents", {})
        name = self.layout.name(i)
        self.watched.add(name)
        if pid_alive(pids.get(name)):
            return
        node_dir = self.layout.node_dir(i)
        with open(os.path.join(node_dir, "agent.log"), "ab") as log:
            command = [sys.executable, "-m", "pgha", "run", os.path.join(node_dir, "pgha.yml")]
            proc = subprocess.Popen(self.net.node_prefix(i) + command,
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        pids[name] = proc.pid
        self._save_state(state)

    def dcs(self):
        if self.dcs_kind == "zookeeper":
            return zk.local_dcs(self.layout.etcd_port, SCOPE, ttl=10)
        return make_dcs(hosts=[(self.net.dcs_host, self.layout.etcd_port)], namespace="/service", scope=SCOPE, ttl=10)

    def snapshot(self, dcs) -> ClusterView | None:
        try:
            return dcs.snapshot(timeout=2)
        except DcsError:
            return None

    # --- up / down ------------------------------------------------------------------------------------
    def up(self, timeout: float = 300.0, timing: dict[str, Any] | None = None) -> ClusterView:
        started = time.monotonic()
        self.watched = set()
        if self.net.netns:
            self._make_network()
        self.write_files(timing or DEFAULT_TIMING)
        state = read_state(self.layout)
        state.update(nodes=self.layout.nodes, base_port=self.layout.base_port)
        with self.net.inside():
            return self._up(state, started, timeout)

    def _make_network(self) -> None:
        """Rule 7: the namespaces, recorded in state.json first, so that `down` removes a half-made topology too."""
        state = read_state(self.layout)
        state.update(nodes=self.layout.nodes, base_port=self.layout.base_port)
        try:
            check_supported()
        except NetnsError as e:
            raise UpError(str(e)) from None
        os.makedirs(self.layout.root, mode=0o755, exist_ok=True)
        made = (state.get("netns") or {}).get("made") or {}
        taken = self.net.foreign(made)
        if taken:
            raise UpError(f"--netns: {', '.join(taken)} exist and are not this cluster's (another cluster on "
                          f"base port {self.layout.base_port}?): choose another --base-port, or `ip netns "
                          "delete` them if nothing runs in them")
        state["netns"] = {**self.net.record(), "made": made}
        self._save_state(state)
        try:
            self.net.create()
        except NetnsError as e:
            raise UpError(f"--netns: {e}") from None
        finally:  # none was foreign: every one there now is this cluster's, also after a failure half-way
            state["netns"]["made"] = self.net.identities()
            self._save_state(state)

    def _up(self, state: dict[str, Any], started: float, timeout: float) -> ClusterView:
        self._start_etcd(state)
        dcs = self.dcs()
        try:
            first = state.get("last_leader")
            order = sorted(range(self.layout.nodes), key=lambda i: self.layout.name(i) != first)
            if first in [self.layout.name(i) for i in order]:
                self._start_agent(order[0], state)
                self._wait(dcs, lambda v: v.leader is not None, started + timeout, "a leader")
            for i in order:
                self._start_agent(i, state)
            view = self._wait(dcs, self._healthy, started + timeout, "one leader and streaming replicas")
        finally:
            dcs.close(revoke=False)
        state["last_leader"] = view.leader
        self._save_state(state)
        self._start_routing(view, state)
        if self.pgbouncer:
            self._start_pgbouncer(view, state)
        self.say(f"cluster {SCOPE} is up: {self.layout.nodes} nodes in {time.monotonic() - started:.1f}s")
        return view

    # --- routing: HAProxy and `pgha router` -----------------------------------------------------------
    def _start_routing(self, view: ClusterView, state: dict[str, Any]) -> None:
        from pgha.router import process
        from pgha.router.haproxy_config import RouterPorts, render, server_name, servers_from_view
        from pgha.router.runtime import HaproxyRuntime
        binary, layout = process.haproxy_binary(), self.layout
        if binary is None:
            self.say("HAProxy is not installed (no haproxy binary): running without a router; "
                     "connect to the nodes directly")
            return
        runtime = HaproxyRuntime(layout.haproxy_socket)
        hub = (self.net.hub,) if self.net.netns else ()  # rule 7: to the nodes through the hub; binds there too
        try:
            if not pid_alive(state.get("haproxy_pid")):
                servers = [replace(s, namespace=self.net.hub) if hub else s for s in servers_from_view(view)]
                config = render(servers, RouterPorts(layout.rw_port, layout.ro_port, layout.stats_port, also_in=hub),
                                layout.haproxy_socket, scope=SCOPE)
                write_atomic(layout.haproxy_config, config, mode=0o644)
                with self.net.outside():
                    proc = process.start_haproxy(binary, layout.haproxy_config, layout.path("haproxy.log"))
                state["haproxy_pid"] = proc.pid
                self._save_state(state)
            process.wait_until(lambda: process.answers(runtime), 15, "HAProxy's runtime API",
                               lambda: pid_alive(state["haproxy_pid"]), layout.path("haproxy.log"))
            if not pid_alive(state.get("router_pid")):
                proc = process.start_router(layout.ctl_config, layout.haproxy_socket, layout.path("router.log"))
                state["router_pid"] = proc.pid
                self._save_state(state)
            rw = {server_name(view.leader)} if view.leader else set()
            ro = {server_name(m.name) for m in view.members if m.name != view.leader}
            process.wait_until(lambda: process.routes(runtime, rw, ro), 30, f"rw -> {rw}, ro -> {ro}",
                               lambda: pid_alive(state["router_pid"]), layout.path("router.log"))
        except (process.RouterError, OSError, subprocess.SubprocessError) as e:
            raise UpError(f"router: {e}") from None
        url = "postgres://postgres@127.0.0.1:{}/postgres?passfile=" + layout.client_pgpass
        self.say(f"router: HAProxy on 127.0.0.1, stats on http://127.0.0.1:{layout.stats_port}/")
        self.say(f"  read-write (the leader): psql '{url.format(layout.rw_port)}'")
        self.say(f"  read-only (replicas):    psql '{url.format(layout.ro_port)}'")

    # --- PgBouncer and its follower (`pgha up --pgbouncer`): pgha/local/bouncer.py -------------------------
    def _start_pgbouncer(self, view: ClusterView, state: dict[str, Any]) -> None:
        bouncer.start(self, view, state)

    def _stop_pgbouncer(self, state: dict[str, Any]) -> list[str]:
        return bouncer.stop(state)

    def _stop_routing(self, state: dict[str, Any]) -> list[str]:
        stopped = self._stop_pgbouncer(state)
        for key, what in (("router_pid", "router"), ("haproxy_pid", "haproxy")):
            if pid_alive(state.get(key)):
                stop_pid(state[key], timeout=10)
                stopped.append(what)
            state.pop(key, None)
        return stopped

    def _healthy(self, view: ClusterView) -> bool:
        if view.leader is None or len(view.members) < self.layout.nodes:
            return False
        for member in view.members:
            if member.name == view.leader:
                if member.state != "running" or member.role != "primary":
                    return False
            elif member.data.get("replication_state") != "streaming":
                return False
        return True

    def _wait(self, dcs, done: Callable[[ClusterView], bool], deadline: float, what: str) -> ClusterView:
        last = ""
        self._check_agents()
        while time.monotonic() < deadline:
            view = self.snapshot(dcs)
            if view is not None:
                if done(view):
                    return view
                line = progress_line(view)
                if line != last:
                    self.say(f"  waiting for {what}: {line}")
                    last = line
            self._check_agents()
            time.sleep(0.2)
        raise UpError(f"timed out waiting for {what}; agent logs are in {self.layout.root}/node*/agent.log")

    def _check_agents(self) -> None:
        state = read_state(self.layout)
        for name, pid in state.get("agents", {}).items():
            if name in self.watched and not pid_alive(pid):
                log = os.path.join(self.layout.root, name, "agent.log")
                raise UpError(f"the agent of {name} exited; last lines of {log}:\n" + tail(log, 8))

    def down(self) -> list[str]:
        state = read_state(self.layout)
        stopped: list[str] = self._stop_routing(state)
        agents: dict[str, int] = state.get("agents", {})
        leader = self._current_leader(state)
        if leader:
            state["last_leader"] = leader
        for name in sorted(agents, key=lambda n: n == leader):  # replicas first, the leader last
            pid = agents[name]
            if pid_alive(pid):
                stop_pid(pid, timeout=90)
                stopped.append(name)
        state["agents"] = {}
        stopped += self._stop_orphan_postgres()
        if pid_alive(state.get("etcd_pid")):
            stop_pid(state["etcd_pid"])
            stopped.append(state.get("dcs", "etcd"))
        state.pop("etcd_pid", None)
        self._save_state(state)
        if self.net.netns:  # rule 7: once nothing runs in them; the record stays, `up` makes them again
            try:
                record = state.get("netns") or {}
                stopped += self.net.remove(record.get("namespaces"), record.get("made") or {})
            except NetnsError as e:
                raise UpError(f"--netns: {e}") from None
        return stopped

    def _stop_orphan_postgres(self) -> list[str]:
        """A PostgreSQL whose agent was killed keeps running; stop it by its own postmaster.pid."""
        from pgha.postgres.control import PgCommands
        from pgha.config import load_config
        stopped = []
        for i in range(self.layout.nodes):
            config = os.path.join(self.layout.node_dir(i), "pgha.yml")
            if not os.path.exists(config):
                continue
            cfg, _ = load_config(config)
            commands = PgCommands(cfg.postgresql.bin_dir, cfg.postgresql.data_dir, self.account)
            if commands.postmaster_pid() is not None:
                commands.stop("fast", 60)
                stopped.append(f"{self.layout.name(i)} postgres")
        return stopped

    def _current_leader(self, state: dict[str, Any]) -> str | None:
        if not pid_alive(state.get("etcd_pid")):
            return None
        try:
            with self.net.inside():
                dcs = self.dcs()
                try:
                    view = self.snapshot(dcs)
                    return view.leader if view else None
                finally:
                    dcs.close(revoke=False)
        except NetnsError:  # the hub is gone: no one to ask
            return None


def progress_line(view: ClusterView) -> str:
    parts = []
    for m in sorted(view.members, key=lambda m: m.name):
        role = "leader" if m.name == view.leader else (m.data.get("replication_state") or m.role or "?")
        parts.append(f"{m.name} {m.state or '?'}/{role}")
    return ", ".join(parts) or "no member has registered yet"


def tail(path: str, lines: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"
