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


# --- synchronous replication: the fake's acknowledgements and the acked-writes invariant ---------------------
def sync_cluster(**params) -> World:
    """cluster_of_three with synchronous replication on in the world's params (the checker's mode)."""
    return cluster_of_three(synchronous_mode="on", **params)


def test_a_write_is_acknowledged_once_its_synchronous_standby_has_it():
    world = sync_cluster()
    n1, n2, n3 = (world.nodes[n].pg for n in ("n1", "n2", "n3"))
    n1.set_sync_standby_names("n2")
    before = len(world.writes)
    end = n1.write(4096)
    assert len(world.writes) == before and [w.lsn for w in n1.pending] == [end]
    assert n3.pull() and n1.pending  # an asynchronous replica does not acknowledge
    assert n2.pull() and not n1.pending
    assert world.writes[-1].lsn == end and world.writes[-1].node == "n1"


def test_quorum_needs_k_of_the_listed_standbys():
    world = sync_cluster()
    n1, n2, n3 = (world.nodes[n].pg for n in ("n1", "n2", "n3"))
    n1.set_sync_standby_names("ANY 2 (n2,n3)")
    n1.write(100)
    assert n2.pull() and n1.pending
    assert n3.pull() and not n1.pending
    rows = {s.name: s for s in n1.local_state().standbys}
    assert {s.sync_state for s in rows.values()} == {"quorum"} and rows["n2"].flush_lsn == n1.lsn
    assert n1.local_state().sync_standby_names == "ANY 2 (n2,n3)"


def test_the_placeholder_blocks_and_emptying_the_setting_releases_the_waiters():
    from pgha.core.sync import PLACEHOLDER
    world = sync_cluster()
    n1, n2 = world.nodes["n1"].pg, world.nodes["n2"].pg
    n1.set_sync_standby_names(PLACEHOLDER)
    n1.write(100)
    assert n2.pull() and len(n1.pending) == 1
    n1.set_sync_standby_names("")  # PostgreSQL releases every waiting commit: they are acknowledged
    assert not n1.pending


def test_a_write_waiting_when_the_primary_crashes_is_never_acknowledged():
    world = sync_cluster()
    n1, n2 = world.nodes["n1"].pg, world.nodes["n2"].pg
    n1.set_sync_standby_names("n2")
    n2.stalled = True
    n1.write(100)
    acked = len(world.writes)
    n1.crash()
    n2.stalled = False
    assert not n1.pending and len(world.writes) == acked
    assert any("unacknowledged=1" in line for line in world.lines or ())


def test_the_setting_survives_a_restart_and_a_lagging_standby_stays_listed():
    world = sync_cluster()
    n1, n2 = world.nodes["n1"].pg, world.nodes["n2"].pg
    n1.set_sync_standby_names("n2")
    n1.stop("fast")
    n1.start(None, True, None)
    assert n1.local_state().sync_standby_names == "n2"
    n2.lagging = True
    n1.write(100)
    assert not n2.pull() and n1.pending
    assert [s.name for s in n1.local_state().standbys] == ["n2", "n3"]
    assert n2.local_state().streaming_from == "n1:5432"


def test_promoting_a_node_that_lacks_an_acknowledged_write_is_caught():
    world = sync_cluster()
    n1, n2, n3 = (world.nodes[n].pg for n in ("n1", "n2", "n3"))
    n1.set_sync_standby_names("n3")
    n1.write(4096)
    assert n3.pull() and not n1.pending  # acknowledged: n3 has it, n2 does not
    n1.crash()
    dcs = dcs_for(world, "n2")
    dcs.renew_lease()
    dcs.acquire_leader("n2")
    n2.promote()
    assert invariants(world) == ["acked-writes"]


def test_asynchronous_losses_are_counted_not_failed():
    world = cluster_of_three()
    n1, n2 = world.nodes["n1"].pg, world.nodes["n2"].pg
    n1.write(4096)  # acknowledged at once: no synchronous standby
    n1.crash()
    dcs = dcs_for(world, "n2")
    dcs.renew_lease()
    dcs.acquire_leader("n2")
    n2.promote()
    assert world.violations == [] and world.lost_writes() == 1


def test_the_synchronous_settings_reach_the_core():
    world = World(SimParams(synchronous_mode="quorum", synchronous_mode_strict=True, synchronous_node_count=2), 1)
    node = world.nodes["n1"]
    node.start_agent()
    settings = node.agent.settings
    assert (settings.synchronous_mode, settings.synchronous_mode_strict, settings.synchronous_node_count) == \
        ("quorum", True, 2)


def test_every_mode_is_drawn_and_the_asynchronous_schedule_does_not_depend_on_it():
    from pgha.sim import faults
    modes = {faults.generate(runner.schedule_seed(1, k)).params.synchronous_mode for k in range(30)}
    assert modes == {"off", "on", "quorum"}
    for k in range(10):
        seed = runner.schedule_seed(1, k)
        off, on = faults.generate(seed, sync_mode="off"), faults.generate(seed, sync_mode="on")
        assert off.params.synchronous_mode == "off" and on.params.synchronous_mode == "on"
        assert [f for f in on.faults if f.kind != "lag"] == list(off.faults)


def test_replay_names_the_sync_mode_it_ran_with():
    result = CliRunner().invoke(sim, ["--replay", "1000007", "--sync-mode", "quorum"])
    assert "synchronous_mode=quorum" in result.output
    assert "replay: pgha sim --replay 1000007 --sync-mode quorum" in result.output


# --- core bugs the simulator found (issue #7): strict xfails, to turn into passing tests when fixed ------------
def _script(*commands: str) -> str:
    from pgha.sim.script import run_script
    actual, _ = run_script("\n\n".join(f"{c}\n----" for c in commands) + "\n")
    return actual


def test_a_nofailover_voter_ahead_of_the_candidate_stops_its_promotion():
    # quorum ANY 1 (n2, n3), n3 nofailover; n2 lags, so n3 alone acknowledges; the leader dies
    out = _script("setup seed=1 ttl=6 sync=quorum nofailover=n3", "run 20s", "lag n2 for=20s", "run 3s",
                  "kill leader", "run 25s")
    assert "VIOLATION acked-writes" not in out, out


def test_a_switchover_to_an_asynchronous_replica_cannot_bypass_the_sync_key():
    # mode on, n2 synchronous; n3 cut from replication (behind); the leader freezes with a switchover to n3 pending
    out = _script("setup seed=1 ttl=6 sync=on", "run 18s", "stall n3 for=12s", "run 2s", "freeze n1 for=20s",
                  "switchover leader to=n3", "run 25s")
    assert "VIOLATION acked-writes" not in out, out


def test_a_pending_switchover_does_not_deadlock_a_synchronous_cluster():
    # mode on, n3 nofailover; n2 is cut off for a while, so n3 becomes the synchronous standby (the only voter)
    out = _script("setup seed=1 ttl=6 sync=on nofailover=n3", "run 20s", "stall n2 for=5s", "run 10s",
                  "freeze n1 for=15s", "switchover leader", "run 20s", "converge")
    assert "converged: yes" in out, out


def test_a_failed_promotion_after_taking_the_sync_key_does_not_deadlock():
    outcome = runner.run_seed(2001472, sync_mode="on")  # ClaimTimeline times out after WriteSync(n2, no voter)
    assert outcome.ok, [v.message for v in outcome.failures]


def test_a_switchover_to_a_lagging_voter_cannot_bypass_the_voter_comparison():
    # quorum ANY 1 (n2, n3); n2 lags (connected, receiving nothing), so n3 alone acknowledges; the leader freezes
    # with a switchover to n2 pending
    out = _script("setup seed=1 ttl=6 sync=quorum", "run 20s", "lag n2 for=20s", "run 2s", "freeze n1 for=20s",
                  "switchover leader to=n2", "run 20s")
    assert "VIOLATION acked-writes" not in out, out


def test_a_switchover_to_a_voter_behind_another_does_not_deadlock():
    # quorum ANY 1 (n2, n3); n2 lags for a while (n3 alone acknowledges); a switchover to n2 is asked and the
    # leader's machine dies at once, for good
    out = _script("setup seed=1 ttl=6 sync=quorum", "run 20s", "lag n2 for=10s", "run 2s",
                  "switchover leader to=n2", "kill n1", "run 60s", "check leader")
    assert "leader: none" not in out, out
    assert "switchover_stale ClearFailover" in out, out
