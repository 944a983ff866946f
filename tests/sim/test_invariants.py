"""The simulator's checks can fail, and its fakes behave the way the checks assume.

No mocks of the core: where a test needs a situation the agents would not produce, it drives the fake PostgreSQL
and the in-memory DCS by hand and looks at what the checker says.
"""

from __future__ import annotations

import inspect

import pytest
from click.testing import CliRunner

from pgha.cli.sim import sim
from pgha.core.model import Member
from pgha.dcs.memory import MemoryDcs
from pgha.ports import DcsError, PostgresPort
from pgha.sim import runner, wal
from pgha.sim.fakepg import FakePostgres
from pgha.sim.faults import Fault, Schedule
from pgha.sim.invariants import NEEDS_REWIND, NOT_REWOUND, convergence_problems
from pgha.sim.simdcs import SimDcs
from pgha.sim.wal import Segment
from pgha.sim.world import SCOPE, SimParams, World


def member(name: str) -> Member:
    return Member(name=name, conn_url=f"postgres://{name}:5432/postgres")


def dcs_for(world: World, name: str) -> MemoryDcs:
    return MemoryDcs(world.store, "/service", SCOPE, world.params.ttl, agent_id=name)


def cluster_of_three(**params) -> World:
    """n1 bootstrapped (under the initialize claim), n2 and n3 cloned from it and streaming; no agents."""
    world = World(SimParams(**params), seed=1, transcript=True)
    dcs_for(world, "n1").claim_initialize()
    n1 = world.nodes["n1"].pg
    n1.bootstrap((), None, ())
    for name in ("n2", "n3"):
        pg = world.nodes[name].pg
        pg.clone(member("n1"))
        pg.start(member("n1"), False, None)
    return world


def invariants(world: World) -> list[str]:
    return [v.invariant for v in world.violations]


# --- the freeze fault: the watchdog is what keeps the single writer -------------------------------------------
def freeze_leader(watchdog: bool) -> Schedule:
    return Schedule(7, SimParams(ttl=6, watchdog=watchdog), (Fault("freeze", "leader", 20.0, 20.0),))


def test_freeze_without_watchdog_breaks_single_writer():
    outcome = runner.run(freeze_leader(watchdog=False), transcript=True)
    assert [v.invariant for v in outcome.failures] == ["single-writer"]
    assert any("VIOLATION single-writer" in line for line in outcome.lines or ())


def test_freeze_with_watchdog_keeps_single_writer_and_converges():
    outcome = runner.run(freeze_leader(watchdog=True), transcript=True)
    assert outcome.ok and not outcome.expected, "\n".join(outcome.lines or ())
    assert any("fencer fires" in line for line in outcome.lines or ())


# --- the checker on hand-made situations ----------------------------------------------------------------------
def test_two_primaries_and_a_promotion_without_the_lease_are_caught():
    world = cluster_of_three()
    assert world.violations == []
    world.nodes["n2"].pg.promote()
    assert invariants(world) == ["single-writer", "lease-at-promotion"]


def test_a_promotion_with_the_lease_after_a_fence_is_fine():
    world = cluster_of_three()
    world.nodes["n1"].pg.crash("fence")
    dcs = dcs_for(world, "n2")
    dcs.renew_lease()
    assert dcs.acquire_leader("n2")
    world.nodes["n2"].pg.promote()
    assert world.violations == []


def test_a_late_stamped_stop_still_overlaps():
    world = cluster_of_three()
    world.nodes["n1"].pg.crash("crash", at=world.now + 3.0)  # a real agent would have got there 3 s later
    dcs = dcs_for(world, "n2")
    dcs.renew_lease()
    dcs.acquire_leader("n2")
    world.nodes["n2"].pg.promote()
    assert invariants(world) == ["single-writer"]


def test_promoting_far_behind_an_eligible_replica_is_caught():
    world = cluster_of_three()
    n1, n2, n3 = (world.nodes[n].pg for n in ("n1", "n2", "n3"))
    n2.stalled = True
    n1.write(2 * 1024 * 1024)
    assert n3.pull() and not n2.pull()
    n1.crash()
    world.nodes["n3"].state = "running"  # n3's agent is up and reaches the DCS: it is eligible
    dcs = dcs_for(world, "n2")
    dcs.renew_lease()
    dcs.acquire_leader("n2")
    n2.promote()
    assert invariants(world) == ["lag-at-promotion"]


@pytest.mark.parametrize("rewind, problem, expected", [(False, NEEDS_REWIND, True), (True, NOT_REWOUND, False)])
def test_a_diverged_node_is_a_known_gap_only_without_rewind(rewind, problem, expected):
    world = cluster_of_three(use_pg_rewind=rewind)
    n1, n2, n3 = (world.nodes[n].pg for n in ("n1", "n2", "n3"))
    n1.write(4096)  # n1 has WAL nobody received
    n1.crash()
    dcs = dcs_for(world, "n2")
    dcs.renew_lease()
    dcs.acquire_leader("n2")
    n2.promote()
    n3.follow(member("n2"))
    n1.start(member("n2"), False, None)
    for node in world.nodes.values():
        node.state = "running"
    assert convergence_problems(world) == [("n1", problem, expected)]


# --- the fakes ------------------------------------------------------------------------------------------------
def test_wal_prefix_divergence_and_rewind_point():
    tl1 = (Segment(1, 0, 1),)
    tl2 = tl1 + (Segment(2, 100, 2),)
    other_tl2 = tl1 + (Segment(2, 100, 3),)  # the same timeline id from another fork
    assert wal.is_prefix(tl1, 100, tl2, 150) and not wal.is_prefix(tl1, 120, tl2, 150)
    assert wal.can_catch_up(tl1, 120, tl1) and not wal.can_catch_up(tl1, 120, tl2)
    assert not wal.can_catch_up(other_tl2, 120, tl2)
    assert wal.rewind_point(tl1, tl2) == 100
    assert wal.rewind_point(other_tl2, tl2) is None  # pg_rewind goes by timeline ids: "same timeline"


def test_fake_postgres_implements_the_port():
    wanted = {name for name, _ in inspect.getmembers(PostgresPort, inspect.isfunction) if not name.startswith("_")}
    wanted |= set(getattr(PostgresPort, "__annotations__", {}))
    fake = FakePostgres("n1", "n1:5432", None, lambda: 0.0, lambda: 0.0, lambda: None)  # type: ignore[arg-type]
    assert sorted(name for name in wanted if not hasattr(fake, name)) == []


def test_slow_dcs_costs_time_and_fails_past_the_timeout():
    world = World(SimParams(), seed=1)
    latency = {"value": 0.5}
    dcs = SimDcs(dcs_for(world, "n1"), lambda: latency["value"], lambda: False, world.later)
    dcs.renew_lease(timeout=2.0)
    assert dcs.cost == 0.5
    latency["value"] = 3.0
    with pytest.raises(DcsError):
        dcs.snapshot(timeout=2.0)
    assert dcs.cost == 2.5


# --- runs ---------------------------------------------------------------------------------------------------------
def test_a_seed_replays_identically_with_or_without_its_transcript():
    first = runner.run_seed(1000007, transcript=True)
    again = runner.run_seed(1000007, transcript=True)
    fast = runner.run_seed(1000007)
    assert first.lines == again.lines and len(first.lines or ()) > 20
    assert (fast.steps, fast.sim_time, fast.failures) == (first.steps, first.sim_time, first.failures)


def test_replay_command_prints_transcript_and_itself():
    result = CliRunner().invoke(sim, ["--replay", "1000007"])
    assert "replay: pgha sim --replay 1000007" in result.output
    assert "agent started" in result.output
