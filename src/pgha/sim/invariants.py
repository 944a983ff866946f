"""The properties every simulated schedule must keep, checked as the world changes.

1. ``single-writer``: at no instant do two nodes accept writes. Checked whenever a node starts accepting (its
   start is compared with every other node's open or late-stamped interval), so also between events: a primary
   whose lease has expired still counts as accepting until it is fenced.
2. ``lease-at-promotion``: a node that becomes primary (promote, or start as primary) holds the leader key at
   that moment, on a lease that has not run out by then (the moment is the node's local time: a promote at the
   end of a tick slowed by the DCS happens that much later than the acquire before it). A node starting the primary of a brand-new cluster (bootstrap) holds the ``initialize`` claim
   instead, and nobody else may hold the leader key.
3. ``lag-at-promotion``: the new primary is not behind an eligible replica (not nofailover, agent running and
   reaching the DCS, PostgreSQL running as a replica on the same WAL line) by more than
   ``maximum_lag_on_failover`` bytes. Asynchronous runs only: with synchronous replication the election is
   narrowed to the sync key's voters and the lag bound is waived for them (core/sync.py rule 5, as Patroni):
   what a synchronous standby lacks was never acknowledged. Invariant 6 replaces it there, and is stronger.
4. ``converge``: once every fault has healed, within ``3*ttl + 30`` seconds there is exactly one leader and every
   other node streams from it (``convergence_problems``).
5. ``agent-error``: the agent's tick never raises (the real loop would log and carry on; here it is a bug).
6. ``acked-writes``: with synchronous replication (``synchronous_mode`` on or quorum), no acknowledged write is
   ever lost: a node that becomes primary (promote, or start as primary) holds in its WAL every client write
   acknowledged so far, by whichever primary. (Asynchronous runs only count the writes the final leader lacks:
   ``World.lost_writes``.)

Known gap (expected failures, counted apart and never hiding the others): a former primary whose WAL diverged
from the new leader's (it wrote WAL no replica received before it stopped) cannot stream again until pg_rewind
runs, and with ``use_pg_rewind`` off nothing may repair it (Patroni behaves the same; the operator reclones).
With ``use_pg_rewind`` on, a diverged node is a failure like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgha.core.model import PgRole
from pgha.sim import wal

if TYPE_CHECKING:
    from pgha.sim.node import SimNode
    from pgha.sim.world import Write, World

def holds(history: wal.History, end: int, write: "Write") -> bool:
    """Does the WAL ``[0, end)`` with ``history`` hold this acknowledged write?"""
    return write.lsn <= end and wal.uid_at(history, write.lsn - 1) == write.uid


NEEDS_REWIND = "diverged from the leader's WAL and use_pg_rewind is off: nothing may repair it"
NOT_REWOUND = "diverged from the leader's WAL and was not rewound"


@dataclass(frozen=True)
class Violation:
    time: float
    invariant: str
    message: str
    expected: bool = False  # a known gap (see the module docstring), not a failure

    def render(self) -> str:
        tag = "EXPECTED (known gap)" if self.expected else "VIOLATION"
        return f"{self.time:8.3f} !!  {tag} {self.invariant}: {self.message}"


class Checker:
    def __init__(self, world: "World") -> None:
        self.world = world
        self.open: dict[str, float] = {}  # node -> since when it accepts writes
        self.last_end: dict[str, float] = {}  # node -> when it last stopped accepting (may lie ahead: late stamp)
        # (starter, start, other): a start stamped ahead of the world's time while ``other`` still accepts; it is
        # an overlap unless ``other`` stops before ``start`` (decided by ``stopped`` or ``step``)
        self.pending: list[tuple[str, float, str]] = []
        self.began: dict[str, float] = {}  # node -> when it last started accepting

    def became_primary(self, node: "SimNode", at: float, kind: str) -> None:
        self._single_writer(node, at)
        if kind == "bootstrap":
            self._bootstrap_claim(node)
        else:
            self._holds_lease(node, at)
            if not self.world.params.sync:
                self._not_behind(node, kind)
        if self.world.params.sync:
            self._keeps_acknowledged(node, kind, at)
        self.open[node.name] = self.began[node.name] = at

    def stopped(self, node: "SimNode", at: float) -> None:
        if self.open.pop(node.name, None) is not None:
            self.last_end[node.name] = at
        for starter, start, other in [p for p in self.pending if p[2] == node.name]:
            self.pending.remove((starter, start, other))
            if at > start:
                self._overlap(starter, start, other)

    def cut_short(self, node: "SimNode", at: float) -> bool:
        """A fence at ``at`` reached a PostgreSQL whose stop is stamped later (its agent still waited on the DCS
        before stopping it): it stopped accepting at ``at``. True when that moved the end."""
        end = self.last_end.get(node.name)
        if node.name in self.open or end is None or end <= at:
            return False
        self.last_end[node.name] = at
        return True

    def step(self) -> None:
        """After every world step: a pending start whose time has come while the other still accepts overlaps."""
        for starter, start, other in [p for p in self.pending if p[1] < self.world.now]:
            self.pending.remove((starter, start, other))
            if other in self.open:
                self._overlap(starter, start, other)

    def _overlap(self, starter: str, start: float, other: str) -> None:
        until = "" if other in self.open else f" until {self.last_end[other]:.3f}"
        self.world.violation("single-writer", f"{starter} starts accepting writes at {start:.3f} while {other} "
                             f"accepts them (since {self.began[other]:.3f}{until})")

    def _single_writer(self, node: "SimNode", at: float) -> None:
        for other in self.open:
            if other == node.name:
                continue
            if at <= self.world.now:
                self._overlap(node.name, at, other)
            else:
                self.pending.append((node.name, at, other))
        for other, end in self.last_end.items():
            if other != node.name and other not in self.open and max(self.began[other], at) < end:
                self._overlap(node.name, at, other)

    def _holds_lease(self, node: "SimNode", at: float) -> None:
        holder = self.world.leader_holder()
        if holder != node.name:
            self.world.violation("lease-at-promotion", f"{node.name} became primary while the leader key "
                                 f"{'is free' if holder is None else 'names ' + holder}")
            return
        expires = self.world.leader_lease_expiry()
        if expires is not None and expires <= at:
            self.world.violation("lease-at-promotion", f"{node.name} became primary at {at:.3f}, after the lease "
                                 f"under its leader key ran out ({expires:.3f})")

    def _bootstrap_claim(self, node: "SimNode") -> None:
        holder = self.world.leader_holder()
        if self.world.initialize_key() is None or holder not in (None, node.name):
            self.world.violation("lease-at-promotion", f"{node.name} bootstrapped a primary without the "
                                 f"initialize claim (leader key: {holder})")

    def _not_behind(self, node: "SimNode", kind: str) -> None:
        me = node.pg.data
        assert me is not None
        history, mine = me.history, me.lsn
        if kind == "promote":  # compare the WAL it had when it promoted, not the new timeline it just opened
            history, mine = history[:-1], history[-1].start
        limit = self.world.params.maximum_lag_on_failover
        for other in self.world.nodes.values():
            if other is node or not self._eligible(other):
                continue
            d = other.pg.data
            assert d is not None
            if wal.same_line(d.history, d.lsn, history, mine) and d.lsn - mine > limit:
                self.world.violation("lag-at-promotion", f"{node.name} became primary at lsn {mine} while "
                                     f"eligible replica {other.name} had {d.lsn} ({d.lsn - mine} bytes ahead; "
                                     f"maximum_lag_on_failover={limit})")

    def _keeps_acknowledged(self, node: "SimNode", kind: str, at: float) -> None:
        me = node.pg.data
        assert me is not None
        history, end = me.history, me.lsn
        if kind == "promote":  # the WAL it had when it promoted, not the new timeline it just opened
            history, end = history[:-1], history[-1].start
        missing = [w for w in self.world.writes if not holds(history, end, w)]
        if missing:
            w = missing[0]
            self.world.violation("acked-writes", f"{node.name} became primary ({kind}) at {at:.3f} at lsn {end} "
                                 f"without {len(missing)} acknowledged write(s); the first ends at lsn {w.lsn}, "
                                 f"written on {w.node} at {w.at:.3f} and acknowledged at {w.acked:.3f}")

    def _eligible(self, node: "SimNode") -> bool:
        return (not node.nofailover and node.state == "running" and self.world.store.reachable(node.name)
                and node.pg.running and node.pg.role is PgRole.REPLICA)


def convergence_problems(world: "World") -> list[tuple[str, str, bool]]:
    """(node, problem, expected) for every way the cluster is not "one leader, all others streaming from it"."""
    holder = world.leader_holder()
    if holder is None:
        return [("-", "nobody holds the leader key", False)]
    leader = world.nodes[holder]
    problems: list[tuple[str, str, bool]] = []
    if not leader.pg.accepting_writes:
        problems.append((holder, "holds the leader key but does not accept writes", False))
    for node in world.nodes.values():
        if node is not leader:
            problem = _replica_problem(node, leader)
            if problem is not None:
                problems.append((node.name,) + problem)
    return problems


def _replica_problem(node: "SimNode", leader: "SimNode") -> tuple[str, bool] | None:
    pg = node.pg
    if node.state != "running":
        return f"agent is {node.state}", False
    if pg.accepting_writes:
        return "accepts writes but is not the leader", False
    if not pg.running or pg.data is None:
        return "PostgreSQL is not running", False
    assert leader.pg.data is not None
    if not wal.can_catch_up(pg.data.history, pg.data.lsn, leader.pg.data.history):
        if node.world.params.use_pg_rewind:
            return NOT_REWOUND, False
        return NEEDS_REWIND, True
    if pg.upstream_host != leader.pg.host:
        return f"replicates from {pg.upstream_host or 'nobody'}, not from the leader", False
    if not pg.streaming():
        return "follows the leader but does not stream", False
    return None
