"""What the verifier needs from a cluster to inject faults: a ``Target``. One for a `pgha up` cluster
(``LocalTarget``); one reading any cluster's DCS through a ctl config (``CtlTarget``: switchover and
terminate-backends only); a Patroni cluster (bench/) gets its own subclass of ``CtlTarget`` that supplies PIDs and
restarts, as ``LocalTarget`` does for pgha.

Rules
1. The cluster's state (leader, members, their REST API and PostgreSQL addresses, ttl) is read from the DCS, one
   client per thread, every call with a deadline; a DCS that does not answer reads as ``None``, never an error.
2. Processes are found through the cluster's own files (DIR/state.json for agents and the DCS,
   data/postmaster.pid for PostgreSQL), never by name; only 127.0.0.1, or the addresses inside the namespaces of
   a `pgha up --netns` cluster (its target, ``NetnsTarget``, is in partition.py).
3. ``capabilities`` says which kinds of fault a target can serve: ``api`` (REST calls), ``sql`` (superuser
   connections to one node), ``processes`` (PIDs, restarts), ``netns`` (network partitions: a `pgha up --netns`
   cluster's ``NetnsTarget``, which implements ``partition(kind, ctx)``).
4. Restarts wait until the cluster is healthy again (one running leader, every other member streaming), bounded.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from pgha.core.model import ClusterView, Member
from pgha.postgres.conf import conninfo, parse_conn_url


class TargetError(Exception):
    pass


class Target:
    """The interface, with what every target computes the same way from a DCS view."""

    kind = "target"
    capabilities: frozenset[str] = frozenset()

    # --- reading the cluster (rule 1) --------------------------------------------------------------------
    def view(self) -> ClusterView | None:
        raise NotImplementedError

    def leader(self) -> str | None:
        view = self.view()
        return view.leader if view else None

    def members(self) -> list[Member]:
        view = self.view()
        return sorted(view.members, key=lambda m: m.name) if view else []

    def ttl(self) -> float:
        view = self.view()
        return float((view.config or {}).get("ttl", 30)) if view else 30.0

    def expected_nodes(self) -> int:
        return len(self.members())

    def healthy(self) -> bool:
        """Rule 4: one running primary holding the leader key, every other member streaming."""
        view = self.view()
        if view is None or view.leader is None or len(view.members) < self.expected_nodes():
            return False
        for m in view.members:
            if m.name == view.leader:
                if m.state != "running" or m.role != "primary":
                    return False
            elif m.data.get("replication_state") != "streaming":
                return False
        return True

    def streaming_replicas(self) -> list[str]:
        view = self.view()
        if view is None:
            return []
        return sorted(m.name for m in view.members
                      if m.name != view.leader and m.data.get("replication_state") == "streaming")

    # --- access ------------------------------------------------------------------------------------------
    def api_url(self, name: str) -> str:
        view = self.view()
        member = view.member(name) if view else None
        if member is None or not member.api_url:
            raise TargetError(f"member {name} publishes no api_url")
        return member.api_url

    def api_auth(self) -> tuple[str, str] | None:
        return None

    def node_conninfo(self, name: str) -> str:
        """A superuser connection string to one node."""
        raise TargetError(f"{self.kind}: no way to connect to one node")

    def default_dsn(self) -> str:
        raise TargetError(f"{self.kind}: no default connection string; give --dsn")

    # --- processes (rule 2) ------------------------------------------------------------------------------
    def agent_pid(self, name: str) -> int | None:
        raise TargetError(f"{self.kind}: cannot find the agent of {name}")

    def postmaster_pid(self, name: str) -> int | None:
        raise TargetError(f"{self.kind}: cannot find the PostgreSQL of {name}")

    def dcs_pids(self) -> list[int]:
        raise TargetError(f"{self.kind}: cannot find the DCS processes")

    def start_agent(self, name: str, timeout: float) -> None:
        """Start the agent of ``name`` again (after it was stopped or killed) and wait until healthy (rule 4)."""
        raise TargetError(f"{self.kind}: cannot restart {name}")

    def start_dcs(self, timeout: float) -> None:
        raise TargetError(f"{self.kind}: cannot restart the DCS")

    def close(self) -> None:
        pass


class CtlTarget(Target):
    """A cluster named by a ctl config (Patroni's or pgha's YAML): its DCS, REST APIs and PostgreSQL addresses."""

    kind = "ctl-config"
    capabilities = frozenset({"api", "sql"})

    def __init__(self, config_path: str | None, dcs_url: str | None = None) -> None:
        from pgha.config import ConfigError, load_ctl_config
        try:
            self.config = load_ctl_config(config_path, dcs_url)
        except ConfigError as e:
            raise TargetError(str(e)) from None
        if not self.config.scope:
            raise TargetError("the config names no cluster (scope)")
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._nodes: int | None = None

    def _dcs(self):
        client = getattr(self._local, "dcs", None)
        if client is None:
            from pgha.dcs import dcs_from_config
            client = dcs_from_config(self.config.dcs, namespace=self.config.namespace, scope=self.config.scope,
                                     ttl=30, timeout=2.0)
            self._local.dcs = client
            with self._lock:
                self._clients.append(client)
        return client

    def view(self) -> ClusterView | None:
        try:
            return self._dcs().snapshot(timeout=2.0)
        except Exception:  # rule 1: an unreadable DCS is "no view"; the caller's deadline decides
            return None

    def expected_nodes(self) -> int:
        if self._nodes is None:
            self._nodes = len(self.members())
        return self._nodes

    def api_auth(self) -> tuple[str, str] | None:
        return self.config.api_auth

    def _address(self, name: str) -> tuple[str, int]:
        view = self.view()
        member = view.member(name) if view else None
        address = parse_conn_url(member.conn_url) if member else None
        if address is None:
            raise TargetError(f"member {name} publishes no usable conn_url")
        return address

    def node_conninfo(self, name: str) -> str:
        host, port = self._address(name)
        return conninfo(host=host, port=port, user=self.config.username, dbname=self.config.dbname,
                        passfile=self.config.pgpass)

    def default_dsn(self) -> str:
        """A libpq multi-host string naming every member, the one that accepts writes wins."""
        addresses = [self._address(m.name) for m in self.members()]
        if not addresses:
            raise TargetError("no member in the DCS: give --dsn")
        return multi_host(addresses, self.config.username, self.config.dbname, self.config.pgpass)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close(revoke=False)
            except Exception:  # closing must not hide the run's outcome
                pass


def multi_host(addresses: list[tuple[str, int]], user: str | None, dbname: str, passfile: str | None) -> str:
    from psycopg.conninfo import make_conninfo
    params: dict[str, Any] = {"host": ",".join(h for h, _ in addresses),
                              "port": ",".join(str(p) for _, p in addresses), "dbname": dbname,
                              "target_session_attrs": "read-write"}
    if user:
        params["user"] = user
    if passfile:
        params["passfile"] = passfile
    return make_conninfo(**params)


class LocalTarget(CtlTarget):
    """A `pgha up` cluster: DIR/pgha.yml, DIR/state.json (agents', DCS's, HAProxy's PIDs), DIR/nodeN/data."""

    kind = "pgha-up"
    capabilities = frozenset({"api", "sql", "processes"})

    def __init__(self, root: str) -> None:
        from pgha.local.layout import Layout, read_state
        state = read_state(Layout(root, 0, 0))
        if not state.get("nodes") or not state.get("base_port"):
            raise TargetError(f"{root} holds no `pgha up` cluster (no state.json with nodes and base_port)")
        self.layout = Layout(root, int(state["nodes"]), int(state["base_port"]))
        super().__init__(self.layout.ctl_config)
        self._nodes = self.layout.nodes

    @classmethod
    def from_config(cls, config_path: str) -> "LocalTarget | None":
        """The local cluster whose DIR/pgha.yml is ``config_path``, or None when it is not one; a `pgha up --netns`
        cluster gets a ``NetnsTarget``."""
        from pgha.local.layout import Layout, read_state
        root = os.path.dirname(os.path.abspath(config_path))
        if not os.path.exists(os.path.join(root, "state.json")):
            return None
        if read_state(Layout(root, 0, 0)).get("netns"):
            from pgha.verify.partition import NetnsTarget
            return NetnsTarget(root)
        return cls(root)

    def _state(self) -> dict[str, Any]:
        from pgha.local.layout import read_state
        return read_state(self.layout)

    def _index(self, name: str) -> int:
        for i in range(self.layout.nodes):
            if self.layout.name(i) == name:
                return i
        raise TargetError(f"{name} is not a node of {self.layout.root}")

    def node_conninfo(self, name: str) -> str:
        return conninfo(host="127.0.0.1", port=self.layout.pg_port(self._index(name)), user="postgres",
                        dbname="postgres", passfile=self.layout.client_pgpass)

    def default_dsn(self) -> str:
        """HAProxy's read-write port when HAProxy runs, else every node in a multi-host string."""
        from pgha.procutil import pid_alive
        if pid_alive(self._state().get("haproxy_pid")):
            return conninfo(host="127.0.0.1", port=self.layout.rw_port, user="postgres", dbname="postgres",
                            passfile=self.layout.client_pgpass)
        return multi_host([("127.0.0.1", self.layout.pg_port(i)) for i in range(self.layout.nodes)], "postgres",
                          "postgres", self.layout.client_pgpass)

    def agent_pid(self, name: str) -> int | None:
        from pgha.procutil import pid_alive
        pid = self._state().get("agents", {}).get(name)
        return pid if pid_alive(pid) else None

    def postmaster_pid(self, name: str) -> int | None:
        from pgha.procutil import pid_alive
        path = os.path.join(self.layout.node_dir(self._index(name)), "data", "postmaster.pid")
        try:
            with open(path) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def dcs_pids(self) -> list[int]:
        from pgha.procutil import pid_alive
        pid = self._state().get("etcd_pid")
        return [pid] if pid_alive(pid) else []

    def _timing(self) -> dict[str, Any]:
        """The timing the cluster was made with, so that `pgha up` rewrites the node configs as they are."""
        import yaml
        try:
            with open(os.path.join(self.layout.node_dir(0), "pgha.yml")) as f:
                dcs = yaml.safe_load(f)["bootstrap"]["dcs"]
            return {k: dcs[k] for k in ("ttl", "loop_wait", "retry_timeout") if k in dcs}
        except (OSError, KeyError, TypeError):
            return {}

    def _up(self, timeout: float) -> None:
        from pgha.local.cluster import LocalCluster
        try:
            LocalCluster(self.layout, say=lambda line: None).up(timeout=max(10.0, timeout),
                                                               timing=self._timing() or None)
        except Exception as e:  # UpError, a missing binary, an OS error: the fault reports it
            raise TargetError(f"pgha up: {e}") from None

    def start_agent(self, name: str, timeout: float) -> None:
        """`pgha up` on the cluster's directory: starts whatever is not running (this agent) and waits."""
        self._index(name)
        self._up(timeout)

    def start_dcs(self, timeout: float) -> None:
        self._up(timeout)
