"""The simulated world: one fake clock, one in-memory DCS, client traffic, and the nodes, driven by events.

Theory of operation
-------------------
Time is a number the world moves itself (``now``); nothing sleeps and nothing runs in a thread. Each step takes
whichever comes first: a world event from the heap (client writes and replication every ``WRITE_INTERVAL``,
job completions, fencer deadlines, faults and heals) or the earliest due tick of a running agent. A tick runs
whole at the world's time; what it waits on the DCS moves only that node's clock (node.py, simdcs.py), so what
its PostgreSQL does is stamped when a real agent would have done it. After every step, when the leader key
changed (lease expiries are applied then too, at most ``WRITE_INTERVAL`` late), each running agent's watch
reports it and wakes the agent shortly after, as the real DCS watch does.

Rules
1. Deterministic: one seeded ``random.Random`` for everything (write sizes, job durations, lost answers,
   replication hiccups); ties in time are broken by insertion order, nodes by name order.
2. The world only observes and injures: it never touches the DCS keys or the agents' decisions (except an
   operator's switchover request, written as the REST API writes it: faults.py).
3. A non-expected invariant violation stops the run (``failed``); the transcript then ends with it.
4. ``writes`` holds the *acknowledged* client writes only, in the order they were acknowledged: at once without
   synchronous replication, else when the primary's synchronous standbys have them (fakepg.py rule 7).
5. The synchronous settings of ``SimParams`` are part of the dynamic configuration every node bootstraps with
   (so the first leader writes them into the DCS ``config`` key); the mode is fixed for a whole run.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

from pgha.core.model import JobKind, PgRole
from pgha.dcs.keys import KeyLayout
from pgha.dcs.memory import MemoryStore
from pgha.core.model import PeerStatus
from pgha.sim.fakepg import FakePostgres, Pending
from pgha.sim.invariants import Checker, Violation, holds
from pgha.sim.node import SimNode, node_config
from pgha.sim.transcript import ErrorLog, action, line, lsn

WRITE_INTERVAL = 0.5  # client writes and replication happen this often
PULL_CHANCE = 0.85  # a replica receives the latest WAL at a given write interval with this probability
MAX_STEPS = 400_000  # a schedule taking more steps than this is running away (a tick loop at the same time)
SCOPE = "sim"
_STARTS = frozenset({"promote", "start-primary", "bootstrap"})
_STOPS = frozenset({"stop-fast", "stop-immediate", "crash", "kill", "fence"})
_PROBE = "~checker"  # an agent id nobody uses: asks whether the DCS has quorum


@dataclass(frozen=True)
class SimParams:
    nodes: int = 3
    ttl: int = 6
    loop_wait: float = 1.0
    retry_timeout: float = 2.0
    maximum_lag_on_failover: int = 1048576
    watchdog: bool = True
    use_pg_rewind: bool = True
    nofailover: tuple[str, ...] = ()
    write_max: int = 96 * 1024  # bytes of one client write, at most (about 100 KiB/s on average)
    synchronous_mode: str = "off"  # off | on | quorum (core/sync.py)
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    maximum_lag_on_syncnode: int = -1  # bytes; <= 0: no limit (a lagging standby stays synchronous)

    def names(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]

    @property
    def sync(self) -> bool:
        """Synchronous replication on (``on`` or ``quorum``): no acknowledged write may be lost."""
        return self.synchronous_mode in ("on", "quorum")

    def describe_sync(self) -> str:
        """The synchronous settings for a schedule's first line ("" when off, so asynchronous runs read as
        before)."""
        if not self.sync:
            return ""
        text = (f" synchronous_mode={self.synchronous_mode} strict={'on' if self.synchronous_mode_strict else 'off'}"
                f" synchronous_node_count={self.synchronous_node_count}")
        return text + (f" maximum_lag_on_syncnode={self.maximum_lag_on_syncnode}"
                       if self.maximum_lag_on_syncnode > 0 else "")

    def dcs_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"ttl": self.ttl, "loop_wait": self.loop_wait, "retry_timeout": self.retry_timeout,
                                  "maximum_lag_on_failover": self.maximum_lag_on_failover,
                                  "postgresql": {"use_pg_rewind": self.use_pg_rewind}}
        if self.synchronous_mode != "off":
            config.update(synchronous_mode=self.synchronous_mode,
                          synchronous_mode_strict=self.synchronous_mode_strict,
                          synchronous_node_count=self.synchronous_node_count)
            if self.maximum_lag_on_syncnode > 0:
                config["maximum_lag_on_syncnode"] = self.maximum_lag_on_syncnode
        return config


@dataclass
class Write:
    """An acknowledged client write: made at ``at`` on ``node``, its WAL ending at ``lsn`` on segment ``uid``,
    acknowledged at ``acked``."""

    at: float
    node: str
    uid: int
    lsn: int
    acked: float = 0.0


class World:
    def __init__(self, params: SimParams, seed: int, transcript: bool = False) -> None:
        self.params = params
        self.now = 0.0
        self.rng = random.Random(seed)
        self.store = MemoryStore(lambda: self.now)
        self.keys = KeyLayout.of("/service", SCOPE)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._uids = itertools.count(1)
        self.checker = Checker(self)
        self.violations: list[Violation] = []
        self.failed = False
        self.outages = 0  # how many outage faults hold the DCS down
        self.steps = 0
        self.writes: list[Write] = []
        self.lines: list[str] | None = [] if transcript else None
        self._errors = ErrorLog() if transcript else None
        self._last_tick: dict[str, tuple] = {}
        self._during_tick: list[str] = []  # what PostgreSQL did during a tick, printed after the tick's line
        self._leader_revision = 0
        self.nodes: dict[str, SimNode] = {}
        self._by_host: dict[str, FakePostgres] = {}
        for name in params.names():
            tags = {"nofailover": True} if name in params.nofailover else {}
            node = SimNode(self, name, node_config(name, SCOPE, params.dcs_config(), tags), params.watchdog)
            self.nodes[name] = node
            self._by_host[node.pg.host] = node.pg
        self.schedule(0.0, self._traffic)

    # --- services for the nodes and the fake PostgreSQL (fakepg.PgNet) ----------------------------------------
    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (at, next(self._seq), fn))

    def later(self, delay: float) -> Callable[[Callable[[], None]], None]:
        return lambda fn: self.schedule(self.now + delay, fn)

    def coin(self) -> bool:
        return self.rng.random() < 0.5

    def job_duration(self, kind: JobKind) -> float:
        low, high = {JobKind.BOOTSTRAP: (2.0, 4.0), JobKind.CLONE: (1.0, 3.0)}.get(kind, (0.5, 2.0))
        return round(self.rng.uniform(low, high), 3)

    def pg_at(self, host: str) -> FakePostgres | None:
        return self._by_host.get(host)

    def new_uid(self) -> int:
        return next(self._uids)

    def new_system_id(self) -> str:
        return str(self.rng.randrange(7_000_000_000_000_000_000, 7_400_000_000_000_000_000))

    def fence_in_force(self, pg: FakePostgres) -> bool:
        return any(f.enforcing for f in self.nodes[pg.name].fencers)

    def flush_replicas(self, pg: FakePostgres) -> frozenset[str]:
        sent = set()
        for replica in self.downstream(pg):
            replica.pull(force=True)  # a clean shutdown waits until every standby confirmed it all, even a slow one
            sent.add(replica.name)
        return frozenset(sent)

    def downstream(self, pg: FakePostgres) -> list[FakePostgres]:
        return [node.pg for node in self.nodes.values() if node.pg.upstream_host == pg.host and node.pg.streaming()]

    def acknowledged(self, pg: FakePostgres, write: Pending) -> None:
        self.writes.append(Write(write.at, pg.name, write.uid, write.lsn, self.now))

    def ask_peers(self, members: tuple, me: str) -> tuple[PeerStatus, ...]:
        """What the other members' REST APIs answer (agent/peers.py): the status each agent published at the end
        of its last tick; nothing from a machine that is off, an agent that is down or frozen (its API is part of
        the agent process), or one that has not ticked yet."""
        answers = []
        for member in members:
            if member.name == me or not member.api_url:
                continue
            node = self.nodes.get(member.name)
            status = node.published if node is not None and node.state == "running" else None
            if status is None:
                answers.append(PeerStatus(member.name, reachable=False))
            else:
                answers.append(PeerStatus(member.name, reachable=True, wal_position=status[0], timeline=status[1],
                                          role=status[2]))
        return tuple(answers)

    def on_pg(self, pg: FakePostgres, event: str, at: float, detail: str = "") -> None:
        node = self.nodes[pg.name]
        if self.lines is not None:
            extra = f" {detail}" if detail else ""
            text = line(at, pg.name, f"pg {event}{extra} tl={pg.timeline} lsn={lsn(pg.lsn)}")
            (self._during_tick if node.in_tick else self.lines).append(text)
        if event in _STARTS:
            self.checker.became_primary(node, at, event)
        elif event in _STOPS:
            self.checker.stopped(node, at)

    # --- reading the DCS as the checker ------------------------------------------------------------------------
    def leader_holder(self) -> str | None:
        if self.store.reachable(_PROBE):
            self.store.key_revision(self.keys.leader)  # applies lease expiry, as any call would
        entry = self.store.get(self.keys.leader)
        return entry.value if entry is not None else None

    def leader_lease_expiry(self) -> float | None:
        """When the lease under the leader key runs out (None: no key, or a DCS without quorum, where nothing
        expires)."""
        entry = self.store.get(self.keys.leader)
        lease = self.store.lease(entry.lease) if entry is not None and entry.lease else None
        if lease is None or not self.store.reachable(_PROBE):
            return None
        return lease.expires_at

    def initialize_key(self) -> str | None:
        entry = self.store.get(self.keys.initialize)
        return entry.value if entry is not None else None

    # --- recording ------------------------------------------------------------------------------------------
    def note(self, node: SimNode | None, text: str, at: float | None = None) -> None:
        if self.lines is not None:
            text = line(self.now if at is None else at, node.name if node else "--", text)
            ticking = node is not None and node.in_tick
            (self._during_tick if ticking else self.lines).append(text)

    def violation(self, invariant: str, message: str, expected: bool = False) -> None:
        v = Violation(self.now, invariant, message, expected)
        self.violations.append(v)
        if self.lines is not None:
            ticking = any(node.in_tick for node in self.nodes.values())
            (self._during_tick if ticking else self.lines).append(v.render())
        if not expected:
            self.failed = True

    def record_tick(self, node: SimNode, agent: Any, cost: float) -> None:
        if self.lines is None:
            return
        self._record_decision(node, agent, cost)
        self.lines.extend(self._during_tick)
        self._during_tick.clear()

    def _record_decision(self, node: SimNode, agent: Any, cost: float) -> None:
        if self.lines is None or agent.last_decision is None:
            return
        decision, done = agent.last_decision
        acts = " ".join(action(a) for a in decision.actions)
        errors = self._errors.drain() if self._errors else []
        key = (decision.reason, acts, done, errors[-1] if errors and not done else "")
        if key == self._last_tick.get(node.name):
            return
        self._last_tick[node.name] = key
        text = f"{decision.reason.code} {acts}".rstrip()
        if not done:
            text += " -> FAILED" + (f": {errors[-1]}" if errors else "")
        if cost >= 0.05:
            text += f" (DCS took {cost:.2f}s)"
        self.lines.append(line(self.now, node.name, text))

    def start_recording(self) -> None:
        if self._errors is not None:
            self._errors.install()

    def stop_recording(self) -> None:
        if self._errors is not None:
            self._errors.remove()

    # --- the loop ---------------------------------------------------------------------------------------------
    def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        """Process every step due at or before ``end`` (or until ``stop()`` holds after a step)."""
        while not self.failed:
            t_event = self._events[0][0] if self._events else math.inf
            node = self._due_node()
            t_node = node.next_tick if node is not None and node.next_tick is not None else math.inf
            if min(t_event, t_node) > end:
                break
            if t_event <= t_node:
                self.now = max(self.now, t_event)
                heapq.heappop(self._events)[2]()
            else:
                self.now = max(self.now, t_node)
                assert node is not None
                node.tick()
            self._after_step()
            if stop is not None and stop():
                return
        if not self.failed:
            self.now = max(self.now, end)

    def _due_node(self) -> SimNode | None:
        best = None
        for node in self.nodes.values():
            if node.state == "running" and node.next_tick is not None:
                if best is None or node.next_tick < best.next_tick:  # type: ignore[operator]
                    best = node
        return best

    def _after_step(self) -> None:
        self.steps += 1
        if self.checker.pending:
            self.checker.step()
        if self.steps > MAX_STEPS:
            self.violation("runaway", f"more than {MAX_STEPS} steps: some agent keeps ticking without waiting")
        if not self.store.reachable(_PROBE):
            return  # no quorum: no watch event reaches anyone
        revision = self.store.key_revision(self.keys.leader)  # applies lease expiry, as the DCS would
        if revision != self._leader_revision:
            self._leader_revision = revision
            for node in self.nodes.values():
                node.watch()

    def _traffic(self) -> None:
        for node in self.nodes.values():
            pg = node.pg
            if pg.running and pg.role is PgRole.REPLICA and self.rng.random() < PULL_CHANCE:
                pg.pull()
        for node in self.nodes.values():
            if node.pg.accepting_writes:
                # acknowledged() when it is; write() also releases older waiting writes that standbys which
                # connected since already hold
                node.pg.write(self.rng.randint(1, self.params.write_max))
        self.schedule(self.now + WRITE_INTERVAL, self._traffic)

    # --- summaries --------------------------------------------------------------------------------------------
    def lost_writes(self) -> int:
        """Acknowledged writes the current leader's WAL does not hold (asynchronous replication loses some).
        Without a leader (or its data) nothing is counted here: the convergence check reports that run."""
        holder = self.leader_holder()
        data = self.nodes[holder].pg.data if holder else None
        if data is None:
            return 0
        return sum(1 for w in self.writes if not holds(data.history, data.lsn, w))

    def pending_writes(self) -> int:
        """Client writes still waiting for their synchronous standbys, on every primary."""
        return sum(len(node.pg.pending) for node in self.nodes.values())

    def describe(self) -> str:
        parts = []
        for node in self.nodes.values():
            pg = node.pg
            role = pg.role.value if pg.role else ("stopped" if pg.data else "empty")
            parts.append(f"{node.name}: agent {node.state}, pg {role} tl={pg.timeline} lsn={lsn(pg.lsn)}")
        return "; ".join(parts) + f"; leader key: {self.leader_holder() or '-'}"
