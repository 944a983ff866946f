"""Switchover, manual failover and operator requests in the pure core: plain values in, actions out. No mocks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.core import actions as A
from pgha.core.decide import decide
from pgha.core.model import Failover, Request, RequestKind
from pgha.core.reasons import Reason
from pgha.core.settings import Memory
from tests.core.test_decide import (EMPTY, ME, PRIMARY, REPLICA, SETTINGS, STOPPED_PRIMARY, cluster, member, obs)

NOW = 1_800_000_000.0  # wall clock of these observations


def streaming(m):
    return replace(m, data={"replication_state": "streaming"}) if m.state == "running" and not m.data else m


def leader_view(failover: Failover | None, members=None, version: int = 7):
    members = members if members is not None else [member("n2", lsn=500), member("n3", lsn=400)]
    members = [streaming(m) for m in members]
    return cluster(leader=ME, members=members, failover=failover, versions={"failover": version} if failover else {})


def run(view, local, **kw):
    decision = decide(obs(view, local, wall_now=NOW, **kw), Memory(), SETTINGS)
    return decision.actions, decision.reason


def upkeep_free(actions):
    return tuple(a for a in actions if not isinstance(a, A.SyncSlots))


HANDOVER = lambda target: (A.RefreshLeader(), A.Checkpoint(), A.StopPostgres(A.StopMode.FAST),  # noqa: E731
                           A.AwaitReplicated(5.0, target), A.ReleaseLeader())

LEADER_CASES = [
    ("switchover to a named, healthy candidate", Failover(ME, "n2"), None, HANDOVER("n2"), Reason.SWITCHOVER_DEMOTE),
    ("switchover without candidate: any healthy replica", Failover(ME, None), None, HANDOVER(None),
     Reason.SWITCHOVER_DEMOTE),
    ("failover request naming only a member, leader healthy: hand over to it", Failover(None, "n3"), None,
     HANDOVER("n3"), Reason.SWITCHOVER_DEMOTE),
    ("scheduled in the future: wait", Failover(ME, "n2", NOW + 60), None, (A.RefreshLeader(),),
     Reason.SWITCHOVER_SCHEDULED),
    ("scheduled within loop_wait: now", Failover(ME, "n2", NOW + 0.5), None, HANDOVER("n2"),
     Reason.SWITCHOVER_DEMOTE),
    ("scheduled long ago: discarded", Failover(ME, "n2", NOW - 60), None, (A.RefreshLeader(), A.ClearFailover(7)),
     Reason.SWITCHOVER_STALE),
    ("names another leader: discarded", Failover("n9", "n2"), None, (A.RefreshLeader(), A.ClearFailover(7)),
     Reason.SWITCHOVER_STALE),
    ("names me as the candidate: done, cleared", Failover(None, ME), None, (A.RefreshLeader(), A.ClearFailover(7)),
     Reason.SWITCHOVER_STALE),
    ("named candidate tagged nofailover: refused", Failover(ME, "n2"),
     [member("n2", lsn=500, nofailover=True), member("n3", lsn=500)], (A.RefreshLeader(), A.ClearFailover(7)),
     Reason.SWITCHOVER_NO_CANDIDATE),
    ("named candidate stopped: refused", Failover(ME, "n2"), [member("n2", lsn=500, state="stopped")],
     (A.RefreshLeader(), A.ClearFailover(7)), Reason.SWITCHOVER_NO_CANDIDATE),
    ("switchover: a streaming candidate's published lag does not count (the clean stop hands it all)",
     Failover(ME, "n2"), [member("n2", lsn=500 - 2 * 1048576)], HANDOVER("n2"), Reason.SWITCHOVER_DEMOTE),
    ("named candidate not streaming from me: refused", Failover(ME, "n2"),
     [replace(member("n2", lsn=500), data={"replication_state": "in archive recovery"})],
     (A.RefreshLeader(), A.ClearFailover(7)), Reason.SWITCHOVER_NO_CANDIDATE),
    ("no request: refresh only", None, None, (A.RefreshLeader(),), Reason.LEADER_REFRESHED),
]


@pytest.mark.parametrize("failover,members,expected,reason", [c[1:] for c in LEADER_CASES],
                         ids=[c[0] for c in LEADER_CASES])
def test_leader_acts_on_the_failover_key(failover, members, expected, reason) -> None:
    actions, got = run(leader_view(failover, members), PRIMARY)
    assert (upkeep_free(actions), got) == (expected, reason)


def no_leader_view(failover, members=None, version: int = 3):
    members = members if members is not None else [member("n2", lsn=500), member("n3", lsn=400)]
    return cluster(members=members, failover=failover, versions={"failover": version} if failover else {})


def test_named_candidate_races_without_the_lag_check_and_clears_the_key() -> None:
    behind = replace(REPLICA, wal_position=10)  # far behind n2: a normal election would make us wait
    actions, reason = run(no_leader_view(Failover(None, ME)), behind)
    assert (actions, reason) == ((A.AcquireLeader(), A.ClaimTimeline(2), A.Promote(2), A.ClearFailover(3)), Reason.FAILOVER_TO_ME)


def test_others_wait_for_the_running_named_candidate() -> None:
    ahead = replace(REPLICA, wal_position=10_000)  # most advanced, yet not the operator's choice
    actions, reason = run(no_leader_view(Failover("n9", "n2")), ahead)
    assert (actions, reason) == ((), Reason.FAILOVER_OTHER)


def test_old_leader_never_races_for_the_lock_it_gave_up() -> None:
    actions, reason = run(no_leader_view(Failover(ME, None)), STOPPED_PRIMARY)
    assert reason is Reason.STARTING_REPLICA
    assert actions == (A.StartPostgres(False, None),)  # read-only, until the new leader is known


def test_dead_named_candidate_falls_back_to_the_normal_election() -> None:
    view = no_leader_view(Failover("n9", "n2"), [member("n2", lsn=500, state="stopped"), member("n3", lsn=50)])
    actions, reason = run(view, replace(REPLICA, wal_position=500))
    assert (actions, reason) == ((A.AcquireLeader(), A.ClaimTimeline(2), A.Promote(2), A.ClearFailover(3)), Reason.RACE_WON)


def test_scheduled_request_whose_leader_died_does_not_block_the_election() -> None:
    view = no_leader_view(Failover("n9", "n2", NOW + 600))
    actions, reason = run(view, replace(REPLICA, wal_position=10_000))
    assert reason is Reason.RACE_WON


# --- operator requests --------------------------------------------------------------------------------------------

def req(kind: RequestKind, rid: int = 5) -> tuple[Request, ...]:
    return (Request(rid, kind),)


def test_restart_of_the_leader_keeps_the_lease_and_restarts_as_primary() -> None:
    actions, reason = run(leader_view(None), PRIMARY, requests=req(RequestKind.RESTART))
    assert reason is Reason.REQUEST_RESTART
    assert actions == (A.RefreshLeader(), A.StopPostgres(A.StopMode.FAST), A.StartPostgres(True, None),
                       A.Answer(5, 200, "restarted successfully"))


def test_restart_of_a_replica_comes_back_following_the_leader() -> None:
    view = cluster(leader="n2", members=[member("n2", lsn=500)])
    actions, _ = run(view, REPLICA, requests=req(RequestKind.RESTART))
    assert actions == (A.StopPostgres(A.StopMode.FAST), A.StartPostgres(False, "n2"),
                       A.Answer(5, 200, "restarted successfully"))


def test_restart_without_a_data_directory_fails() -> None:
    view = cluster(leader="n2", members=[member("n2", lsn=500)])
    actions, reason = run(view, EMPTY, requests=req(RequestKind.RESTART))
    assert (actions, reason) == ((A.Answer(5, 503, "restart failed"),), Reason.REQUEST_REFUSED)


@pytest.mark.parametrize("leader,text", [(ME, "I am the leader, can not reinitialize"),
                                         (None, "Cluster has no leader, can not reinitialize")])
def test_reinitialize_refused_on_the_leader_and_without_one(leader, text) -> None:
    local = PRIMARY if leader == ME else REPLICA
    actions, _ = run(cluster(leader=leader, members=[member("n2")]), local, requests=req(RequestKind.REINITIALIZE))
    assert actions == (A.Answer(5, 503, text),)


def test_reinitialize_a_replica_removes_its_data_then_clones() -> None:
    view = cluster(leader="n2", members=[member("n2", lsn=500)])
    actions, reason = run(view, REPLICA, requests=req(RequestKind.REINITIALIZE))
    assert reason is Reason.REQUEST_REINIT
    assert actions == (A.StopPostgres(A.StopMode.IMMEDIATE), A.RemoveDataDir(), A.Answer(5, 200, "reinitialize started"))
    follow_up, _ = run(view, EMPTY)
    assert follow_up == (A.Clone("n2"),)


def test_reload_is_answered_202() -> None:
    actions, _ = run(leader_view(None), PRIMARY, requests=req(RequestKind.RELOAD))
    assert actions == (A.ReloadPostgres(), A.Answer(5, 202, "reload scheduled"))


def test_requests_never_bypass_the_single_writer_rule() -> None:
    view = cluster(leader="n2", members=[member("n2", lsn=500)])
    actions, reason = run(view, PRIMARY, requests=req(RequestKind.RESTART))
    assert reason is Reason.LOCK_LOST_DEMOTE  # fenced first; the request waits for a later tick


# --- failsafe mode --------------------------------------------------------------------------------------------

FAILSAFE = replace(SETTINGS, failsafe_mode=True)


def test_failsafe_heartbeat_within_ttl_keeps_replicas_from_racing() -> None:
    view = cluster(members=[member("n2", lsn=50)])
    ahead = replace(REPLICA, wal_position=500)
    heard = decide(obs(view, ahead, failsafe_heard=995.0), Memory(), FAILSAFE)  # now is 1000, ttl 10
    assert (heard.actions, heard.reason) == ((), Reason.FAILSAFE_LEADER_ALIVE)
    stale = decide(obs(view, ahead, failsafe_heard=985.0), Memory(), FAILSAFE)
    assert stale.reason is Reason.RACE_WON
    off = decide(obs(view, ahead, failsafe_heard=995.0), Memory(), SETTINGS)  # failsafe_mode off: ignored
    assert off.reason is Reason.RACE_WON


def test_leader_keeps_the_failsafe_key_listing_every_member() -> None:
    members = [replace(member("n2"), api_url="http://127.0.0.1:8002/patroni"),
               replace(member(ME), api_url="http://127.0.0.1:8001/patroni")]
    decision = decide(obs(cluster(leader=ME, members=members), PRIMARY), Memory(), FAILSAFE)
    expected = A.WriteFailsafe((("n1", "http://127.0.0.1:8001/patroni"), ("n2", "http://127.0.0.1:8002/patroni")))
    assert expected in decision.actions
    written = cluster(leader=ME, members=members, failsafe=dict(expected.members))
    assert not any(isinstance(a, A.WriteFailsafe) for a in decide(obs(written, PRIMARY), Memory(), FAILSAFE).actions)
    turned_off = decide(obs(written, PRIMARY), Memory(), SETTINGS)
    assert A.WriteFailsafe(None) in turned_off.actions


def test_switchover_candidate_too_far_behind_after_the_leader_died_does_not_race() -> None:
    view = replace(no_leader_view(Failover("n9", ME)), status_optime=10 * 1048576)
    behind = replace(REPLICA, wal_position=100)
    actions, reason = run(view, behind)
    assert reason is Reason.RACE_TOO_FAR_BEHIND and not actions
    ahead = replace(REPLICA, wal_position=10 * 1048576)
    assert run(view, ahead)[1] is Reason.FAILOVER_TO_ME


def test_a_stopped_lock_holder_with_a_pending_request_abandons_it_and_restarts() -> None:
    actions, reason = run(leader_view(Failover(ME, "n2")), STOPPED_PRIMARY)
    assert (actions, reason) == ((A.RefreshLeader(), A.ClearFailover(7), A.StartPostgres(True)),
                                 Reason.LEADER_STARTING)


# --- pause --------------------------------------------------------------------------------------------------------

def paused_view(**kw):
    view = cluster(**kw)
    return replace(view, config={**view.config, "pause": True})


@pytest.mark.parametrize("view,local,expected,reason", [
    (paused_view(leader=ME, members=[member("n2")]), PRIMARY, (A.RefreshLeader(),), Reason.PAUSED),
    (paused_view(leader=ME, members=[member("n2")]), STOPPED_PRIMARY, (A.ReleaseLeader(),), Reason.PAUSED_RELEASE),
    (paused_view(members=[member("n2", lsn=10)]), replace(REPLICA, wal_position=900), (), Reason.PAUSED),
    (paused_view(members=[member("n2")]), PRIMARY, (A.AcquireLeader(),), Reason.LEADER_KEY_REACQUIRE),
    (paused_view(leader="n2", members=[member("n2")]), replace(REPLICA, running=False, role=None), (),
     Reason.PAUSED),
    (paused_view(leader="n3", members=[member("n3")]), REPLICA, (A.Follow("n3"),), Reason.FOLLOW_NEW_LEADER),
], ids=["leader refreshes only", "stopped leader releases", "no race without a leader",
        "running primary takes the free key", "stopped replica is not started", "replica still follows"])
def test_pause_stops_automatic_actions(view, local, expected, reason) -> None:
    decision = decide(obs(view, local, wall_now=NOW), Memory(), SETTINGS)
    assert (decision.actions, decision.reason) == (expected, reason)


def test_pause_allows_only_a_switchover_to_a_named_candidate() -> None:
    members = [streaming(member("n2", lsn=500))]
    named = replace(paused_view(leader=ME, members=members, failover=Failover(ME, "n2")), versions={"failover": 4})
    assert decide(obs(named, PRIMARY, wall_now=NOW), Memory(), SETTINGS).reason is Reason.SWITCHOVER_DEMOTE
    any_candidate = replace(named, failover=Failover(ME, None))
    assert decide(obs(any_candidate, PRIMARY, wall_now=NOW), Memory(), SETTINGS).reason is Reason.PAUSED


def test_promotion_claims_a_timeline_id_nobody_used_or_claimed() -> None:
    """Found by the simulator: a node promoted and died before publishing anything; the next promotion took
    the same id for a different history and pg_rewind then saw "same timeline" and repaired nothing."""
    claimed = replace(cluster(members=[member("n2", lsn=50)]), status_timeline=3)
    actions, reason = run(claimed, replace(REPLICA, wal_position=500))
    assert reason is Reason.RACE_WON
    assert actions[:3] == (A.AcquireLeader(), A.ClaimTimeline(4), A.Promote(4))
    newer_member = cluster(members=[member("n2", lsn=50, timeline=5)])
    assert run(newer_member, replace(REPLICA, wal_position=500, timeline=5))[0][1:3] == \
        (A.ClaimTimeline(6), A.Promote(6))
