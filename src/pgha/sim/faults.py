"""Faults: what can go wrong in the simulated world, how each is applied and healed, and seeded random schedules.

Kinds (``KINDS``)
- ``kill``: node death; the agent and PostgreSQL are killed (immediate stop), the lease runs out. Heal: the node
  comes back, a new agent on the same data.
- ``pgcrash``: PostgreSQL crashes, the agent lives on; starting it fails for ``duration`` seconds.
- ``freeze``: the agent stops ticking (SIGSTOP, VM pause) for ``duration``; PostgreSQL runs on (the watchdog
  fences it, when enabled). Heal: it resumes where it was.
- ``cutoff``: the node cannot reach the DCS (its calls time out); replication between nodes still works.
- ``outage``: the DCS has no quorum: every call of every node times out. Heal: every lease gets a full TTL again.
- ``slow``: the DCS answers after ``latency`` seconds (one node, or ``*`` for all); calls whose timeout is shorter
  fail (simdcs.py).
- ``stop``: graceful stop of the agent (SIGTERM); it comes back after ``duration``.
- ``restart``: the agent process is killed (PostgreSQL runs on) and started again after ``duration``.
- ``stall``: a replica receives no WAL for ``duration`` (network to its upstream down) and falls behind.
- ``switchover``: an operator asks the leader to hand over (to ``member``, or the healthiest replica), writing
  the ``failover`` key as POST /switchover does; nothing to heal. Not an injury, but it must interleave safely
  with the others.
- ``lag``: a replica stays connected to its upstream but receives nothing for ``duration`` (slow disk or
  network): a synchronous standby that lags keeps commits waiting, and an asynchronous one gets ahead of it.
  Drawn only in synchronous schedules (``SYNC_KINDS``), so asynchronous schedules stay what they were.

Rules
1. A fault's target may be ``leader`` (whoever holds the leader key when the fault starts; the first node if
   nobody does) or ``replica`` (the first node that is not the leader), resolved when it is applied.
2. Faults may overlap; each heal undoes only its own fault, and ``heal_all`` at the end of the fault window
   clears whatever is left, so the convergence check starts from a healed world.
3. Schedules are a pure function of their seed (and the synchronous mode asked for: ``SYNC_MODES``). The
   synchronous settings and the extra ``lag`` faults come from a random stream of their own, so a seed's other
   faults, and its whole asynchronous schedule, are the same whatever the mode.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from pgha.sim.world import SimParams

if TYPE_CHECKING:
    from pgha.sim.node import SimNode
    from pgha.sim.world import World

WARMUP = 10.0  # the cluster forms before the first fault (bootstrap, clones and starts take under 9 s)
WINDOW = 30.0  # faults start within this many seconds after the warm-up

KINDS = ("kill", "pgcrash", "freeze", "cutoff", "outage", "slow", "stop", "restart", "stall", "switchover")
_WEIGHTS = (3, 2, 3, 3, 2, 2, 2, 2, 1, 2)
SYNC_KINDS = ("lag",)  # only in synchronous schedules (rule 3)
ALL_KINDS = KINDS + SYNC_KINDS
SYNC_MODES = ("off", "on", "quorum", "mixed")  # mixed: each schedule's seed picks off, on or quorum
STRICT_CHANCE = 0.3
LAG_CHANCE = 0.4
SYNCNODE_LAG_CHANCE = 0.25  # maximum_lag_on_syncnode set: a standby that far behind is not made synchronous
SYNCNODE_LAG = 256 * 1024  # bytes: about 2.5 s of client writes


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # a node name, "leader", "replica", or "*" (every node; outage and slow)
    at: float
    duration: float
    latency: float = 0.0  # slow only
    member: str = ""  # switchover only: the candidate ("" for the healthiest replica)

    @property
    def heals_at(self) -> float:
        return round(self.at + self.duration, 3)

    def describe(self) -> str:
        extra = f" latency={self.latency:.2f}s" if self.kind == "slow" else ""
        extra += f" to={self.member or 'any'}" if self.kind == "switchover" else ""
        return f"{self.kind} {self.target} at {self.at:.3f} for {self.duration:.3f}s{extra}"


@dataclass(frozen=True)
class Schedule:
    seed: int
    params: SimParams
    faults: tuple[Fault, ...]

    @property
    def last_heal(self) -> float:
        return max((f.heals_at for f in self.faults), default=WARMUP)

    def describe(self) -> list[str]:
        p = self.params
        lines = [f"schedule {self.seed}: {p.nodes} nodes, ttl={p.ttl} loop_wait={p.loop_wait} "
                 f"retry_timeout={p.retry_timeout} use_pg_rewind={p.use_pg_rewind} "
                 f"watchdog={'on' if p.watchdog else 'off'} nofailover={','.join(p.nofailover) or '-'}"
                 + p.describe_sync()]
        lines += [f"  fault: {f.describe()}" for f in self.faults]
        return lines


def generate(seed: int, watchdog: bool = True, sync_mode: str = "mixed") -> Schedule:
    rng = random.Random(f"schedule:{seed}")
    params = SimParams(ttl=rng.choice((5, 6, 8, 10)), watchdog=watchdog, use_pg_rewind=rng.random() < 0.75,
                       nofailover=("n3",) if rng.random() < 0.15 else ())
    count = rng.choice((1, 1, 2, 2, 3))
    faults = [_fault(rng, params) for _ in range(count)]
    params, extra = _synchronous(random.Random(f"sync:{seed}"), params, sync_mode)
    return Schedule(seed, params, tuple(sorted(faults + extra, key=lambda f: f.at)))


def _synchronous(rng: random.Random, params: SimParams, mode: str) -> tuple[SimParams, list[Fault]]:
    """The schedule's synchronous settings (rule 3), and its ``lag`` fault when it has one."""
    if mode not in SYNC_MODES:
        raise ValueError(f"synchronous mode {mode!r}: expected one of {', '.join(SYNC_MODES)}")
    chosen = rng.choice(("off", "on", "quorum"))
    strict = rng.random() < STRICT_CHANCE
    count = rng.choice((1, 2)) if params.nodes >= 3 else 1
    lag = rng.random() < LAG_CHANCE
    at, duration = round(WARMUP + rng.uniform(0, WINDOW), 3), round(rng.uniform(3, 30), 3)
    target = rng.choice(("replica", "n1", "n2", "n3"))
    syncnode_lag = SYNCNODE_LAG if rng.random() < SYNCNODE_LAG_CHANCE else -1
    mode = chosen if mode == "mixed" else mode
    if mode == "off":
        return params, []
    params = replace(params, synchronous_mode=mode, synchronous_mode_strict=strict, synchronous_node_count=count,
                     maximum_lag_on_syncnode=syncnode_lag)
    return params, [Fault("lag", target, at, duration)] if lag else []


def _fault(rng: random.Random, params: SimParams) -> Fault:
    kind = rng.choices(KINDS, _WEIGHTS)[0]
    at = round(WARMUP + rng.uniform(0, WINDOW), 3)
    ttl = params.ttl
    duration = {"kill": (3, 30), "pgcrash": (0, 8), "freeze": (1, 3 * ttl), "cutoff": (1, 3 * ttl),
                "outage": (1, 2 * ttl), "slow": (3, 20), "stop": (1, 20), "restart": (0.5, 6),
                "stall": (5, 30), "switchover": (0, 0)}[kind]
    target = "replica" if kind == "stall" else rng.choice(("leader", "leader", "n1", "n2", "n3"))
    if kind == "outage" or (kind == "slow" and rng.random() < 0.5):
        target = "*"
    latency = round(rng.uniform(0.2, 3.0), 3) if kind == "slow" else 0.0
    member = rng.choice(("", "n1", "n2", "n3")) if kind == "switchover" else ""
    if kind == "switchover":
        target = "leader"
    return Fault(kind, target, at, round(rng.uniform(*duration), 3), latency, member)


# --- applying and healing ---------------------------------------------------------------------------------
def resolve(world: "World", target: str) -> list["SimNode"]:
    if target == "*":
        return list(world.nodes.values())
    holder = world.leader_holder()
    if target == "leader":
        return [world.nodes[holder] if holder else next(iter(world.nodes.values()))]
    if target == "replica":
        others = [n for n in world.nodes.values() if n.name != holder]
        return others[:1]
    return [world.nodes[target]]


def apply(world: "World", fault: Fault) -> Callable[[], None]:
    """Inflict ``fault`` now; returns the function that heals it."""
    nodes = resolve(world, fault.target)
    names = ",".join(n.name for n in nodes)
    until = f" (heals at {fault.heals_at:.3f})" if fault.duration != math.inf else ""
    world.note(None, f"FAULT {fault.kind} {names}"
                     + (f" latency={fault.latency:.2f}s" if fault.kind == "slow" else "") + until)
    heal = _APPLY[fault.kind](world, nodes, fault)

    def healed() -> None:
        world.note(None, f"HEAL {fault.kind} {names}")
        heal()
    return healed


def _each(nodes: list["SimNode"], fn: Callable[["SimNode"], None]) -> Callable[[], None]:
    def run() -> None:
        for node in nodes:
            fn(node)
    return run


def _kill(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    _each(nodes, lambda n: n.kill())()
    return _each(nodes, lambda n: n.start_agent())


def _pgcrash(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    for node in nodes:
        node.pg.crash()
        node.pg.broken_until = max(node.pg.broken_until, fault.heals_at)
    return lambda: None


def _freeze(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    frozen = [n for n in nodes if n.state == "running"]
    _each(frozen, lambda n: n.freeze())()
    return _each(frozen, lambda n: n.thaw())


def _cutoff(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    for node in nodes:
        node.cut += 1
        world.store.set_reachable(node.name, False)

    def heal() -> None:
        for node in nodes:
            node.cut -= 1
            if node.cut == 0:
                world.store.set_reachable(node.name, True)
    return heal


def _outage(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    world.outages += 1
    world.store.set_outage(True)

    def heal() -> None:
        world.outages -= 1
        if world.outages == 0:
            world.store.set_outage(False)
    return heal


def _slow(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    before = {node.name: node.latency for node in nodes}
    for node in nodes:
        node.latency = max(node.latency, fault.latency)
    return _each(nodes, lambda n: setattr(n, "latency", before[n.name]))


def _stop(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    stopping = [n for n in nodes if n.request_stop()]
    return _each(stopping, lambda n: n.start_agent())


def _restart(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    killed = [n for n in nodes if n.state != "down"]
    _each(killed, lambda n: n.kill_agent())()
    return _each(killed, lambda n: n.start_agent())


def _stall(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    for node in nodes:
        node.stall += 1
        node.pg.stalled = True

    def heal() -> None:
        for node in nodes:
            node.stall -= 1
            node.pg.stalled = node.stall > 0
    return heal


def _switchover(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    """The operator's request, as POST /switchover writes it (only while the DCS answers, like the REST API)."""
    holder = world.leader_holder()
    if holder is not None and world.store.reachable("operator"):
        value = {"leader": holder, **({"member": fault.member} if fault.member else {})}
        world.store.put(world.keys.failover, json.dumps(value, separators=(",", ":")))
    return lambda: None


def _lag(world: "World", nodes: list["SimNode"], fault: Fault) -> Callable[[], None]:
    for node in nodes:
        node.lag += 1
        node.pg.lagging = True

    def heal() -> None:
        for node in nodes:
            node.lag -= 1
            node.pg.lagging = node.lag > 0
    return heal


_APPLY = {"kill": _kill, "pgcrash": _pgcrash, "freeze": _freeze, "cutoff": _cutoff, "outage": _outage,
          "slow": _slow, "stop": _stop, "restart": _restart, "stall": _stall, "switchover": _switchover, "lag": _lag}


def heal_all(world: "World") -> None:
    """The end of the fault window: whatever is still broken is mended."""
    world.store.set_outage(False)
    world.outages = 0
    for node in world.nodes.values():
        node.cut, node.stall, node.lag, node.latency = 0, 0, 0, 0.0
        world.store.set_reachable(node.name, True)
        node.pg.stalled = node.pg.lagging = False
        node.pg.broken_until = min(node.pg.broken_until, world.now)
        node.thaw()
        node.start_agent()

