"""Running schedules: one with its transcript (replay), or thousands across worker processes.

A schedule runs in three phases: warm-up (the cluster bootstraps, no faults), the fault window (faults applied
and healed at their times), then convergence: every leftover fault is healed and the world runs until it has
been converged ("one leader, all others streaming from it") for ``ttl + 2`` seconds, or until the bound
``3*ttl + 30`` seconds passes, when the convergence problems left are reported.

Rules
1. Schedule ``k`` of a run with base seed ``S`` has the seed ``S * 1_000_000 + k``; ``pgha sim --replay SEED``
   runs that one schedule again with its transcript. Same seed, same run: nothing reads real time or threads.
2. Logging is silenced while a schedule runs (the agent logs a line per tick); the transcript records the
   executor's errors instead.
3. Workers return only small summaries; transcripts are made again in the parent for the failing seeds.
4. The synchronous mode of each schedule (``faults.SYNC_MODES``; ``mixed`` lets each seed pick) is part of its
   identity: a replay must ask for the same mode as the run that printed the seed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from pgha.sim import faults
from pgha.sim.faults import Fault, Schedule
from pgha.sim.invariants import Violation, convergence_problems
from pgha.sim.world import World

SEED_STRIDE = 1_000_000
PROBE_EVERY = 1.0
SETTLE = 5.0  # converged for this long (five loop_waits) ends the run


def schedule_seed(base: int, k: int) -> int:
    return base * SEED_STRIDE + k


@dataclass
class Outcome:
    seed: int
    failures: list[Violation]
    expected: list[Violation]
    sim_time: float
    steps: int
    lost_writes: int
    kinds: tuple[str, ...]
    lines: list[str] | None = None
    mode: str = "off"  # synchronous_mode of the schedule
    strict: bool = False
    acked_writes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    logger = logging.getLogger("pgha")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(schedule: Schedule, transcript: bool = False) -> Outcome:
    world = World(schedule.params, schedule.seed, transcript)
    with quiet():
        world.start_recording()
        try:
            _run(world, schedule)
        finally:
            world.stop_recording()
    failures = [v for v in world.violations if not v.expected]
    expected = [v for v in world.violations if v.expected]
    lines = None
    if world.lines is not None:
        lines = schedule.describe() + world.lines + [f"end at {world.now:.3f}: {world.describe()}"]
    p = schedule.params
    return Outcome(schedule.seed, failures, expected, world.now, world.steps, world.lost_writes(),
                   tuple(sorted({f.kind for f in schedule.faults})), lines, p.synchronous_mode,
                   p.sync and p.synchronous_mode_strict, len(world.writes))


def _run(world: World, schedule: Schedule) -> None:
    for node in world.nodes.values():
        node.start_agent()
    for fault in schedule.faults:
        world.schedule(fault.at, lambda f=fault: _inflict(world, f))
    world.run_until(schedule.last_heal)
    if world.failed:
        return
    world.note(None, "HEAL everything left; convergence check starts")
    faults.heal_all(world)
    converge(world)


def _inflict(world: World, fault: Fault) -> None:
    world.schedule(fault.heals_at, faults.apply(world, fault))


def converge(world: World) -> bool:
    """Run until converged for ``SETTLE`` s (True), or report what is left at ``3*ttl + 30`` s (False).

    A world whose only problems are known gaps (diverged nodes with ``use_pg_rewind`` off, which nothing may
    repair) for ``SETTLE`` s is reported at once: divergence never heals by itself."""
    ttl = world.params.ttl
    deadline = world.now + 3 * ttl + 30
    state: dict[str, float | None] = {"converged": None, "gaps": None, "done": None}

    def probe() -> None:
        problems = convergence_problems(world)
        known = bool(problems) and all(expected for _, _, expected in problems)
        state["converged"] = None if problems else _since(state["converged"], world.now)
        state["gaps"] = _since(state["gaps"], world.now) if known else None
        for key in ("converged", "gaps"):
            since = state[key]
            if since is not None and world.now - since >= SETTLE:
                state["done"] = 1.0 if key == "converged" else 0.0
        world.schedule(world.now + PROBE_EVERY, probe)

    world.schedule(world.now, probe)
    world.run_until(deadline, stop=lambda: state["done"] is not None)
    if state["done"] == 1.0 or world.failed:
        return state["done"] == 1.0
    for node, problem, expected in convergence_problems(world):
        world.violation("converge", f"{node}: {problem} ({world.now - deadline + 3 * ttl + 30:.0f}s after the "
                        f"last heal)", expected)
    return False


def _since(since: float | None, now: float) -> float:
    return now if since is None else since


# --- many schedules ---------------------------------------------------------------------------------------------
@dataclass
class ModeSummary:
    """The schedules of one synchronous mode."""

    schedules: int = 0
    strict: int = 0
    failed: int = 0
    acked_writes: int = 0
    lost_writes: int = 0


@dataclass
class Summary:
    schedules: int = 0
    failed: list[Outcome] = field(default_factory=list)
    expected: Counter = field(default_factory=Counter)  # fault kinds of schedules with only expected problems
    with_expected: list[int] = field(default_factory=list)
    sim_time: float = 0.0
    steps: int = 0
    lost_writes: int = 0
    modes: dict[str, ModeSummary] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.schedules += 1
        self.sim_time += outcome.sim_time
        self.steps += outcome.steps
        self.lost_writes += outcome.lost_writes
        mode = self.modes.setdefault(outcome.mode, ModeSummary())
        mode.schedules += 1
        mode.strict += outcome.strict
        mode.failed += bool(outcome.failures)
        mode.acked_writes += outcome.acked_writes
        mode.lost_writes += outcome.lost_writes
        if outcome.failures:
            self.failed.append(outcome)
        elif outcome.expected:
            self.with_expected.append(outcome.seed)
            self.expected.update(outcome.kinds)


def run_seed(seed: int, watchdog: bool = True, transcript: bool = False, sync_mode: str = "mixed") -> Outcome:
    return run(faults.generate(seed, watchdog, sync_mode), transcript)


def _worker(args: tuple[int, bool, str]) -> Outcome:
    seed, watchdog, sync_mode = args
    return run_seed(seed, watchdog, sync_mode=sync_mode)


def run_many(count: int, base: int, workers: int = 0, watchdog: bool = True, sync_mode: str = "mixed") -> Summary:
    jobs = [(schedule_seed(base, k), watchdog, sync_mode) for k in range(count)]
    workers = workers or os.cpu_count() or 1
    summary = Summary()
    if workers <= 1:
        for job in jobs:
            summary.add(_worker(job))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for outcome in pool.imap_unordered(_worker, jobs, chunksize=64):
                summary.add(outcome)
    summary.failed.sort(key=lambda o: o.seed)
    summary.with_expected.sort()
    return summary
