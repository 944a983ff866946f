"""The verifier's target for a `pgha up --netns` cluster (``NetnsTarget``): a ``LocalTarget`` that can also cut
the network, for the faults partition-leader-dcs, partition-leader-replicas and isolate-leader.

Rules
1. It runs where every address of the cluster is reachable: the cluster's hub namespace. `pgha -c DIR/pgha.yml
   verify` enters it by itself (pgha.local.netns.enter_for_config); anywhere else the target refuses to start,
   saying so (the nodes' addresses exist only inside the cluster's namespaces).
2. ``partition(kind, ctx)`` acts on the leader the DCS names at that moment: ``leader-dcs`` cuts it off the DCS,
   ``leader-replicas`` off every other node (blackhole routes on both sides of each pair), ``isolate`` sets its
   link down (off everything: the DCS, its peers, HAProxy). It marks the fault, holds for ttl + 2 s (past the
   lease), bounded by the run's deadline, then heals, and waits until the cluster is healthy again.
3. A cut is always undone: in ``finally``, and at exit for a run interrupted mid-hold (``heal_pending``). Each
   undo is registered before its cut is made, so a cut that fails half-way is undone too.
4. Superuser connections to one node, and the multi-host fallback, use the node's namespace address.
"""

from __future__ import annotations

import atexit
import threading
from typing import Callable

from pgha.local.netns import NetnsError, Topology, current_is
from pgha.postgres.conf import conninfo
from pgha.verify.target import LocalTarget, TargetError, multi_host

_PENDING: list[Callable[[], None]] = []  # rule 3: the undo of every cut in place
_PENDING_LOCK = threading.Lock()


def heal_pending() -> list[str]:
    """Undo every cut still in place (newest first); returns the errors, never raises."""
    errors = []
    with _PENDING_LOCK:
        undos = list(reversed(_PENDING))
        _PENDING.clear()
    for undo in undos:
        try:
            undo()
        except NetnsError as e:
            errors.append(str(e))
    return errors


atexit.register(heal_pending)


class NetnsTarget(LocalTarget):
    """A `pgha up --netns` cluster, seen from its hub namespace (rule 1)."""

    kind = "pgha-up-netns"
    capabilities = LocalTarget.capabilities | {"netns"}

    def __init__(self, root: str) -> None:
        super().__init__(root)
        record = self._state().get("netns")
        if not record:
            raise TargetError(f"{root} holds a `pgha up` cluster made without --netns")
        self.topology = Topology.from_record(record, self.layout.nodes)
        if not current_is(self.topology.hub):
            raise TargetError(f"the cluster in {root} runs in network namespaces: run the verifier inside "
                              f"{self.topology.hub} (`pgha -c {self.layout.ctl_config} verify ...` enters it by "
                              "itself, as root)")

    # --- rule 4 --------------------------------------------------------------------------------------------
    def node_conninfo(self, name: str) -> str:
        i = self._index(name)
        return conninfo(host=self.topology.node_host(i), port=self.layout.pg_port(i), user="postgres",
                        dbname="postgres", passfile=self.layout.client_pgpass)

    def default_dsn(self) -> str:
        """HAProxy's read-write port (it listens on 127.0.0.1 in the hub too), else every node's address."""
        from pgha.procutil import pid_alive
        if pid_alive(self._state().get("haproxy_pid")):
            return super().default_dsn()
        return multi_host([(self.topology.node_host(i), self.layout.pg_port(i)) for i in range(self.layout.nodes)],
                          "postgres", "postgres", self.layout.client_pgpass)

    # --- rule 2 --------------------------------------------------------------------------------------------
    def partition(self, kind: str, ctx) -> None:
        partition_leader(self, self.topology, [self.layout.name(i) for i in range(self.layout.nodes)], kind, ctx)


def partition_leader(target, topo: Topology, names: list[str], kind: str, ctx) -> None:
    """Rule 2 on any cluster laid out by ``topo`` whose nodes are ``names`` (``node<i>``) and whose verifier
    target is ``target``, whatever its agents (pgha's ``NetnsTarget``; bench/'s Patroni in namespaces): cut,
    mark, hold ttl + 2 s, heal, wait healthy."""
    from pgha.verify.faults import FaultError, _heal, _leader
    leader = _leader(ctx)
    others = [name for name in names if name != leader]
    hold = target.ttl() + 2.0  # read before the cut: the DCS may be out of reach during it
    cuts: list[tuple[Callable[[], None], Callable[[], None]]]
    if kind == "leader-dcs":
        cuts = [_pair(topo, leader, "dcs")]
        what = f"cut {leader} off the DCS"
    elif kind == "leader-replicas":
        if not others:
            raise FaultError(f"{leader} has no peer to be cut off")
        cuts = [_pair(topo, leader, other) for other in others]
        what = f"cut {leader} off {', '.join(others)}"
    elif kind == "isolate":
        cuts = [(lambda: topo.isolate(leader), lambda: topo.rejoin(leader))]
        what = f"isolate {leader} (its link down)"
    else:
        raise FaultError(f"unknown partition {kind!r}: leader-dcs, leader-replicas or isolate")
    try:
        for act, undo in cuts:
            with _PENDING_LOCK:
                _PENDING.append(undo)
            act()
        ctx.mark(f"{what} for {hold:.0f}s (ttl + 2)")
        ctx.hold(hold)
    except NetnsError as e:
        raise FaultError(f"{what}: {e}") from None
    finally:
        errors = heal_pending()
    if errors:
        raise FaultError(f"healing after {what}: {'; '.join(errors)}")
    ctx.mark("healed")
    _heal(ctx)


def _pair(topo: Topology, a: str, b: str) -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: topo.cut(a, b)), (lambda: topo.join(a, b))
