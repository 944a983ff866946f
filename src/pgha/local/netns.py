"""Network namespaces for `pgha up --netns`: one namespace per node and one for the DCS, joined by veth links to
a bridge in a hub namespace, so that the verifier can cut a node off the DCS, off its peers, or off everything,
and heal it; plus the plain loopback network every other `pgha up` cluster runs on (``Loopback``).

Topology of cluster ID (the base port) on a private /24 derived from it (``subnet_for``; 5440: 10.21.64.0/24):

    pgha-ID-hub   bridge br0 10.a.b.1 (the router, `pgha -c ...` commands, HAProxy's connections to the nodes)
    pgha-ID-dcs   eth0 10.a.b.2       (etcd)                       veth eth0 <-> v-dcs on br0
    pgha-ID-nI    eth0 10.a.b.(10+I)  (the agent and PostgreSQL)   veth eth0 <-> v-nI on br0

Rules
1. Every address, link and route lives in a namespace this module created (named ``pgha-ID-*``): each ``ip``
   command runs with ``-n NS``, so nothing is ever added to the namespace pgha was started in. The state file
   records each namespace's identity (device and inode) once made; a namespace of that name with another
   identity belongs to someone else (another cluster on the same base port): ``foreign`` names them, ``up``
   refuses to use them and ``remove`` leaves them. ``remove`` deletes only this cluster's names; it is idempotent.
2. Every ``ip`` call has a timeout, and its failure is a ``NetnsError`` quoting the command and its stderr.
3. A cut is a blackhole route on both sides (neither direction passes); isolation is the node's link set down.
   ``heal_all`` undoes both everywhere; ``create`` on an existing topology heals it.
4. A thread moves into a namespace with setns(2) only inside ``inside``/``outside`` (it comes back on exit); the
   CLI's ``enter`` moves the process for good, before any other thread starts, and remembers where it came from,
   so that ``outside`` (HAProxy's start) still means the namespace the clients are in.
5. Linux and root only; anything else is a clear ``NetnsError`` before anything is created.
6. A node's PostgreSQL listens on every address of its own namespace (``listen_everywhere``): its own, and a
   virtual IP that vip-manager or keepalived adds to its link (tests/integration/test_vip.py); the probe of its
   agent then comes from that namespace's own loopback, which its pg_hba lets in.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
BRIDGE = "br0"
NODE_LINK = "eth0"  # the node's (and the DCS's) end of its veth, inside its own namespace
IP_TIMEOUT = 10.0


class NetnsError(Exception):
    pass


# --- the `ip` command (rule 2) ------------------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = ["ip", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=IP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(command)}` did not finish within {IP_TIMEOUT:.0f}s") from None
    except FileNotFoundError:
        raise NetnsError("the `ip` command (iproute2) is not installed") from None
    if check and result.returncode != 0:
        raise NetnsError(f"`{' '.join(command)}` failed: {result.stderr.strip() or f'exit {result.returncode}'}")
    return result


def check_supported() -> None:
    """Rule 5."""
    if not sys.platform.startswith("linux"):
        raise NetnsError("--netns needs Linux network namespaces")
    if os.geteuid() != 0:
        raise NetnsError("--netns creates network namespaces: run pgha as root")


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def identity(ns: str) -> str | None:
    """``device:inode`` of the namespace named ``ns`` (rule 1), None when there is none."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, ns))
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


# --- which namespace a thread is in (rule 4) ------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_local = threading.local()
ORIGIN_FD: int | None = None  # where the process was before `enter` moved it (the CLI), else None


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"cannot enter the network namespace {what}: {os.strerror(err)}")


def _open_ns(ns: str) -> int:
    try:
        return os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetnsError(f"network namespace {ns} does not exist ({e.strerror}): is the cluster up?") from None


def current_is(ns: str) -> bool:
    """Is this thread in the namespace ``ns``?"""
    try:
        here, there = os.stat("/proc/thread-self/ns/net"), os.stat(os.path.join(NETNS_DIR, ns))
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def enter(ns: str) -> None:
    """Move this thread (the CLI's main thread, before any other thread starts) into ``ns`` for good."""
    global ORIGIN_FD
    if current_is(ns):
        return
    fd = _open_ns(ns)
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, ns)
    except NetnsError:
        os.close(origin)
        raise
    finally:
        os.close(fd)
    if ORIGIN_FD is None:
        ORIGIN_FD = origin
    else:
        os.close(origin)


@contextlib.contextmanager
def _switched(fd: int, what: str) -> Iterator[None]:
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, what)
        stack = _local.__dict__.setdefault("origins", [])
        stack.append(back)
        try:
            yield
        finally:
            stack.pop()
            _setns(back, "this thread came from")
    finally:
        os.close(back)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """This thread in ``ns`` for the block; sockets and processes it opens there belong to ``ns``."""
    fd = _open_ns(ns)
    try:
        with _switched(fd, ns):
            yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def outside() -> Iterator[None]:
    """This thread back where the process (or, without ``enter``, this thread) was before any ``inside``."""
    origins = _local.__dict__.get("origins") or []
    fd = ORIGIN_FD if ORIGIN_FD is not None else (origins[0] if origins else None)
    if fd is None:
        yield
        return
    with _switched(fd, "pgha was started in"):
        yield


# --- the topology ---------------------------------------------------------------------------------------------
def subnet_for(base_port: int) -> str:
    """The cluster's private /24 (its first three octets), one per base port: 10.(P // 256).(P % 256)."""
    if not 0 < base_port < 65536:
        raise NetnsError(f"base port {base_port} is out of range")
    return f"10.{base_port // 256}.{base_port % 256}"


@dataclass(frozen=True)
class Topology:
    """The namespaces of one cluster (``cid``: its base port) and their addresses."""

    cid: str
    nodes: int
    subnet: str  # "10.a.b"
    netns = True

    @classmethod
    def for_cluster(cls, base_port: int, nodes: int) -> "Topology":
        return cls(str(base_port), nodes, subnet_for(base_port))

    # names and addresses
    @property
    def prefix(self) -> str:
        return f"pgha-{self.cid}-"

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    @property
    def dcs_ns(self) -> str:
        return f"{self.prefix}dcs"

    def node_ns(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    @property
    def namespaces(self) -> list[str]:
        return [self.hub, self.dcs_ns] + [self.node_ns(i) for i in range(self.nodes)]

    @property
    def hub_host(self) -> str:
        return f"{self.subnet}.1"

    @property
    def dcs_host(self) -> str:
        return f"{self.subnet}.2"

    def node_host(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    @property
    def client_net(self) -> str:
        """Who may connect to PostgreSQL (pg_hba): the whole /24 (peers, and HAProxy through the hub)."""
        return f"{self.subnet}.0/24"

    def _members(self) -> list[tuple[str, str, str]]:
        """(namespace, address, the hub end of its veth) for the DCS and every node."""
        return [(self.dcs_ns, self.dcs_host, "v-dcs")] + [(self.node_ns(i), self.node_host(i), f"v-n{i}")
                                                          for i in range(self.nodes)]

    def where(self, name: str) -> tuple[str, str]:
        """``dcs`` or a node's name (``node<i>``) -> (its namespace, its address)."""
        if name == "dcs":
            return self.dcs_ns, self.dcs_host
        if name.startswith("node") and name[4:].isdigit() and int(name[4:]) < self.nodes:
            i = int(name[4:])
            return self.node_ns(i), self.node_host(i)
        raise NetnsError(f"{name} is not a member of the namespaces of cluster {self.cid}")

    # commands run in the namespaces
    def node_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.node_ns(i)]

    def dcs_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.dcs_ns]

    def inside(self) -> contextlib.AbstractContextManager:
        """Where the cluster's addresses are all reachable: the hub."""
        return inside(self.hub)

    def outside(self) -> contextlib.AbstractContextManager:
        return outside()

    def record(self) -> dict:
        """What the state file keeps (``from_record`` reads it back; ``remove`` deletes these names only)."""
        return {"id": self.cid, "subnet": self.subnet, "namespaces": self.namespaces}

    @classmethod
    def from_record(cls, record: dict, nodes: int) -> "Topology":
        return cls(str(record["id"]), nodes, str(record["subnet"]))

    # create, heal, remove
    def create(self) -> None:
        """Every namespace, link and address that is missing; then everything healed (rule 3)."""
        check_supported()
        for ns in self.namespaces:
            if not exists(ns):
                ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        hub = self.hub
        if ip("-n", hub, "link", "show", BRIDGE, check=False).returncode != 0:
            ip("-n", hub, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", hub, "addr", "replace", f"{self.hub_host}/24", "dev", BRIDGE)
        ip("-n", hub, "link", "set", BRIDGE, "up")
        for ns, host, hub_end in self._members():
            if ip("-n", hub, "link", "show", hub_end, check=False).returncode != 0:
                if ip("-n", ns, "link", "show", NODE_LINK, check=False).returncode == 0:
                    ip("-n", ns, "link", "del", NODE_LINK)  # a half-made pair: start it again
                ip("-n", hub, "link", "add", hub_end, "type", "veth", "peer", "name", NODE_LINK, "netns", ns)
            ip("-n", hub, "link", "set", hub_end, "master", BRIDGE, "up")
            ip("-n", ns, "addr", "replace", f"{host}/24", "dev", NODE_LINK)
        self.heal_all()

    def heal_all(self) -> None:
        """No blackhole route left, every node's link up (rule 3)."""
        for ns, _, _ in self._members():
            routes = ip("-n", ns, "route", "show", "type", "blackhole").stdout.split()
            for dest in (w for w in routes if w[0].isdigit()):
                ip("-n", ns, "route", "del", "blackhole", dest, check=False)
            ip("-n", ns, "link", "set", NODE_LINK, "up")

    def identities(self) -> dict[str, str]:
        """Rule 1: what the state file keeps once the namespaces are made."""
        return {ns: ident for ns in self.namespaces if (ident := identity(ns)) is not None}

    def foreign(self, made: dict[str, str]) -> list[str]:
        """Namespaces with this cluster's names that it did not make (``made``: its recorded identities)."""
        return [ns for ns in self.namespaces if exists(ns) and made.get(ns) != identity(ns)]

    def remove(self, names: list[str] | None = None, made: dict[str, str] | None = None) -> list[str]:
        """Delete the namespaces (with their links, addresses and routes); those already gone are skipped. With
        ``made``, one whose identity is not the recorded one is left alone, and named in a ``NetnsError``."""
        removed, kept = [], []
        for ns in names if names is not None else self.namespaces:
            if not ns.startswith(self.prefix):  # rule 1: never a namespace that is not this cluster's
                raise NetnsError(f"refusing to delete {ns}: not a namespace of cluster {self.cid}")
            if not exists(ns):
                continue
            if made is not None and made.get(ns) != identity(ns):
                kept.append(ns)
                continue
            ip("netns", "delete", ns)
            removed.append(ns)
        if kept:
            raise NetnsError(f"left {', '.join(kept)} in place: not made by this cluster (removed: "
                             f"{', '.join(removed) or 'none'})")
        return removed

    # partitions
    def cut(self, a: str, b: str) -> None:
        """Nothing passes between members ``a`` and ``b`` (``dcs`` or node names), either way."""
        (ns_a, host_a), (ns_b, host_b) = self.where(a), self.where(b)
        ip("-n", ns_a, "route", "replace", "blackhole", f"{host_b}/32")
        ip("-n", ns_b, "route", "replace", "blackhole", f"{host_a}/32")

    def join(self, a: str, b: str) -> None:
        """Undo ``cut(a, b)``; a route already gone is fine."""
        (ns_a, host_a), (ns_b, host_b) = self.where(a), self.where(b)
        errors = []
        for ns, dest in ((ns_a, host_b), (ns_b, host_a)):
            result = ip("-n", ns, "route", "del", "blackhole", f"{dest}/32", check=False)
            if result.returncode != 0 and "No such process" not in result.stderr:
                errors.append(f"ip -n {ns} route del blackhole {dest}/32: {result.stderr.strip()}")
        if errors:
            raise NetnsError("; ".join(errors))

    def isolate(self, name: str) -> None:
        """``name``'s link down: it reaches no one, and no one reaches it."""
        ip("-n", self.where(name)[0], "link", "set", NODE_LINK, "down")

    def rejoin(self, name: str) -> None:
        ip("-n", self.where(name)[0], "link", "set", NODE_LINK, "up")


class Loopback:
    """The network of a plain `pgha up` cluster: everything on 127.0.0.1 in pgha's own namespace."""

    netns = False
    hub = ""
    dcs_host = "127.0.0.1"
    client_net = "127.0.0.1/32"

    def node_host(self, i: int) -> str:
        return "127.0.0.1"

    def node_prefix(self, i: int) -> list[str]:
        return []

    def dcs_prefix(self) -> list[str]:
        return []

    def inside(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def outside(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def create(self) -> None:
        pass

    def remove(self, names: list[str] | None = None) -> list[str]:
        return []


def listen_everywhere(config: dict, port: int) -> dict:
    """Rule 6, on a node configuration of `pgha up --netns` (layout.node_config): ``postgresql.listen``
    0.0.0.0:PORT, and 127.0.0.1 (the node namespace's own loopback: pgha's probe) in its pg_hba."""
    pg = config["postgresql"]
    hba = [line for line in pg.get("pg_hba", []) if "127.0.0.1/32" not in line.split()]
    pg["listen"] = f"0.0.0.0:{port}"
    pg["pg_hba"] = hba[:1] + ["host all all 127.0.0.1/32 scram-sha-256"] + hba[1:]
    return config


def network_for(base_port: int, nodes: int, state: dict, want_netns: bool) -> Topology | Loopback:
    """The cluster's network: its recorded namespaces, new ones when ``want_netns``, else loopback."""
    record = state.get("netns")
    if record:
        return Topology.from_record(record, nodes)
    if want_netns:
        if state:  # its data, configs and DCS keys name 127.0.0.1
            raise NetnsError("this directory holds a cluster made without --netns: choose another --dir")
        return Topology.for_cluster(base_port, nodes)
    return Loopback()


def enter_for_config(config_path: str) -> str | None:
    """The CLI's ``-c DIR/pgha.yml`` of a `pgha up --netns` cluster: move into its hub (where etcd, the REST APIs
    and PostgreSQL are reachable) and return the hub's name; None for any other config."""
    import json
    state_file = os.path.join(os.path.dirname(os.path.abspath(config_path)), "state.json")
    try:
        with open(state_file) as f:
            hub = f"pgha-{json.load(f)['netns']['id']}-hub"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if current_is(hub):
        return hub
    if os.geteuid() != 0:
        raise NetnsError(f"the cluster of {config_path} runs in network namespaces (`pgha up --netns`): run "
                         "pgha as root")
    if not exists(hub):
        raise NetnsError(f"the cluster of {config_path} runs in network namespaces and {hub} does not exist: "
                         f"start it with `pgha up --dir {os.path.dirname(os.path.abspath(config_path))}`")
    enter(hub)
    return hub
