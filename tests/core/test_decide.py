"""Table-driven tests of the pure decision core: plain values in, actions and reason codes out. No mocks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.core import actions as A
from pgha.core.decide import decide
from pgha.core.model import (ClusterView, DataDir, Job, JobKind, JobState, LeaseState, LocalState, Member,
                             Observation, PgRole)
from pgha.core.reasons import Reason
from pgha.core.settings import Memory, Settings

ME = "n1"
SETTINGS = Settings(name=ME, ttl=10, loop_wait=1, retry_timeout=2, fence_margin=2, use_pg_rewind=True,
                    primary_start_timeout=30)
SYSID = "7300000000000000001"


def member(name: str, lsn: int = 100, state: str = "running", timeline: int = 1, **tags) -> Member:
    return Member(name=name, conn_url=f"postgres://127.0.0.1:5{name[-1]}00/postgres", state=state,
                  role="replica", xlog_location=lsn, timeline=timeline, tags=tags)


def cluster(leader: str | None = None, initialize: str | None = SYSID, members=(), **kw) -> ClusterView:
    return ClusterView(leader=leader, members=tuple(members), initialize=initialize, config={"ttl": 10}, **kw)


EMPTY = LocalState(data_dir=DataDir.EMPTY)
PRIMARY = LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, running=True, role=PgRole.PRIMARY,
                     timeline=1, wal_position=500)
REPLICA = LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, running=True, role=PgRole.REPLICA,
                     timeline=1, wal_position=100, following="n2")
STOPPED_PRIMARY = LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, last_role=PgRole.PRIMARY,
                             wal_position=500, timeline=1)
STOPPED_REPLICA = LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, last_role=PgRole.REPLICA,
                             wal_position=100, timeline=1)
PRIMARY_DEMOTED = LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, running=True, role=PgRole.REPLICA,
                             timeline=1, wal_position=500, following="n2")
PRIMARY_TL2 = LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, running=True, role=PgRole.PRIMARY,
                         timeline=2, wal_position=900)
VALID = LeaseState(valid_until=1010.0)  # now is 1000: 10 s left, fence margin 2 s
EXPIRING = LeaseState(valid_until=1001.5)  # inside the fence margin


def obs(cluster_view, local, lease=VALID, now=1000.0, **kw) -> Observation:
    return Observation(now=now, cluster=cluster_view, local=local, lease=lease, **kw)


def job(kind: JobKind, state: JobState, detail: str = "") -> Job:
    return Job(kind, state, 990.0, detail)


def with_job(local: LocalState, j: Job) -> LocalState:
    from dataclasses import replace
    return replace(local, job=j)


CASES = [
    # (id, observation, expected actions, expected reason)
    ("fresh cluster: claim initialize then bootstrap",
     obs(cluster(initialize=None), EMPTY), (A.ClaimInitialize(), A.Bootstrap()), Reason.BOOTSTRAP_CLAIMED),
    ("someone else is bootstrapping",
     obs(cluster(initialize=""), EMPTY), (), Reason.WAIT_BOOTSTRAP),
    ("initialized, leaderless, empty data: wait",
     obs(cluster(), EMPTY), (), Reason.WAIT_LEADER),
    ("empty data with a leader: clone from it",
     obs(cluster(leader="n2", members=[member("n2")]), EMPTY), (A.Clone("n2"),), Reason.CLONE_STARTED),
    ("empty data but the key is mine: release it",
     obs(cluster(leader=ME), EMPTY), (A.ReleaseLeader(),), Reason.WAIT_LEADER),
    ("bootstrap running: wait",
     obs(cluster(initialize=""), with_job(EMPTY, job(JobKind.BOOTSTRAP, JobState.RUNNING))), (),
     Reason.BOOTSTRAP_RUNNING),
    ("bootstrap done: lock, initialize, config, then ack",
     obs(cluster(initialize=""), with_job(PRIMARY, job(JobKind.BOOTSTRAP, JobState.SUCCEEDED)), lease=LeaseState()),
     (A.AcquireLeader(), A.SetInitialize(SYSID), A.WriteConfig(), A.AckJob()), Reason.BOOTSTRAP_DONE),
    ("bootstrap failed: clean up and give the race back",
     obs(cluster(initialize=""), with_job(EMPTY, job(JobKind.BOOTSTRAP, JobState.FAILED, "initdb: boom"))),
     (A.StopPostgres(A.StopMode.IMMEDIATE), A.RemoveDataDir(), A.CancelInitialize(), A.AckJob()),
     Reason.BOOTSTRAP_FAILED),
    ("clone failed: remove the partial copy",
     obs(cluster(leader="n2"), with_job(EMPTY, job(JobKind.CLONE, JobState.FAILED))),
     (A.RemoveDataDir(), A.AckJob()), Reason.CLONE_FAILED),
    ("leader, running primary: refresh and keep slots",
     obs(cluster(leader=ME, members=[member(ME), member("n2"), member("n3")]), PRIMARY),
     (A.RefreshLeader(), A.SyncSlots(("n2", "n3"))), Reason.LEADER_REFRESHED),
    ("leader with initialize missing: repair it",
     obs(cluster(leader=ME, initialize=None), PRIMARY),
     (A.RefreshLeader(), A.SetInitialize(SYSID), A.SyncSlots(())), Reason.LEADER_REFRESHED),
    ("lock holder running as replica: refresh first, then promote",
     obs(cluster(leader=ME), REPLICA), (A.RefreshLeader(), A.ClaimTimeline(2), A.Promote(2)), Reason.LEADER_PROMOTING),
    ("lock holder whose start overran primary_start_timeout: stop it and hand the lock over",
     obs(cluster(leader=ME, members=[member(ME), member("n2")]),
         with_job(STOPPED_PRIMARY, job(JobKind.START, JobState.RUNNING, "as primary")), now=1400.0,
         lease=LeaseState(1410.0)),
     (A.StopPostgres(A.StopMode.IMMEDIATE), A.ReleaseLeader()), Reason.PRIMARY_START_TIMEOUT),
    ("lock holder starting within primary_start_timeout: keep refreshing",
     obs(cluster(leader=ME, members=[member(ME), member("n2")]),
         with_job(STOPPED_PRIMARY, job(JobKind.START, JobState.RUNNING, "as primary"))),
     (A.RefreshLeader(),), Reason.PRIMARY_STARTING),
    ("start as primary failed: hand the lock over",
     obs(cluster(leader=ME), with_job(STOPPED_PRIMARY, job(JobKind.START, JobState.FAILED, "boom"))),
     (A.ReleaseLeader(), A.AckJob()), Reason.START_FAILED_RELEASE),
    ("starting as primary but another node took the lock: stop",
     obs(cluster(leader="n2"), with_job(STOPPED_PRIMARY, job(JobKind.START, JobState.RUNNING, "as primary"))),
     (A.StopPostgres(A.StopMode.IMMEDIATE),), Reason.LOCK_LOST_DEMOTE),
    ("stopped former primary with a new leader: rewind from it first",
     obs(cluster(leader="n2", members=[replace(member("n2", timeline=2), role="primary")]), STOPPED_PRIMARY),
     (A.Rewind("n2"),), Reason.REWIND_STARTED),
    ("stopped former primary, the new leader has not published its timeline yet: wait",
     obs(cluster(leader="n2", members=[member("n2", timeline=1)]), STOPPED_PRIMARY), (), Reason.WAIT_LEADER_READY),
    ("stopped former primary, leader with the same timeline id: still through pg_rewind (ids can collide)",
     obs(cluster(leader="n2", members=[replace(member("n2", timeline=1), role="primary")]), STOPPED_PRIMARY),
     (A.Rewind("n2"),), Reason.REWIND_STARTED),
    ("running replica behind the fork point: just follow",
     obs(cluster(leader="n2", members=[member("n2", 900, timeline=2)], history=((1, 600, "race_won"),)),
         PRIMARY_DEMOTED),
     (), Reason.FOLLOWING),
    ("rewind failed: do not retry against the same leader",
     obs(cluster(leader="n2"), with_job(STOPPED_PRIMARY, job(JobKind.REWIND, JobState.FAILED, "x"))),
     (A.AckJob(),), Reason.REWIND_FAILED),
    ("new leader after a promotion: record the timeline switch in history",
     obs(cluster(leader=ME), PRIMARY_TL2), (A.RefreshLeader(), A.UpdateHistory("promoted"), A.SyncSlots(())),
     Reason.LEADER_REFRESHED),
    ("no leader, a stopped former primary on a timeline older than the cluster's newest: do not race",
     obs(cluster(history=((1, 50, "race_won"), (2, 80, "race_won"))), replace(STOPPED_PRIMARY, timeline=2)),
     (A.StartPostgres(False, None),), Reason.STARTING_REPLICA),
    ("no leader, same WAL as a member with a higher failover_priority: wait",
     obs(cluster(members=[member("n3", 100, failover_priority=5)]), REPLICA), (), Reason.RACE_LOWER_PRIORITY),
    ("lock holder stopped, was primary: start as primary after refresh",
     obs(cluster(leader=ME), STOPPED_PRIMARY), (A.RefreshLeader(), A.StartPostgres(True)),
     Reason.LEADER_STARTING),
    ("replica following the leader: nothing to do",
     obs(cluster(leader="n2"), REPLICA), (), Reason.FOLLOWING),
    ("replica pointed elsewhere: follow the new leader",
     obs(cluster(leader="n3"), REPLICA), (A.Follow("n3"),), Reason.FOLLOW_NEW_LEADER),
    ("stopped node with a leader: start as its replica",
     obs(cluster(leader="n2"), STOPPED_REPLICA), (A.StartPostgres(False, "n2"),), Reason.STARTING_REPLICA),
    ("primary while another holds the lock: demote at once",
     obs(cluster(leader="n2"), PRIMARY), (A.Demote(A.StopMode.IMMEDIATE, "n2"),), Reason.LOCK_LOST_DEMOTE),
    ("primary, DCS unreachable, lease still valid: hold",
     obs(None, PRIMARY, dcs_error="timeout"), (), Reason.DCS_UNREACHABLE_HOLD),
    ("primary, DCS unreachable, lease about to expire: fence",
     obs(None, PRIMARY, lease=EXPIRING), (A.Demote(A.StopMode.IMMEDIATE, None),), Reason.LEASE_EXPIRING_FENCE),
    ("primary, DCS unreachable, never held a lease: fence",
     obs(None, PRIMARY, lease=LeaseState()), (A.Demote(A.StopMode.IMMEDIATE, None),), Reason.LEASE_EXPIRING_FENCE),
    ("primary whose key vanished, lease valid: take it back",
     obs(cluster(leader=None, members=[member(ME)]), PRIMARY),
     (A.AcquireLeader(), A.SyncSlots(())), Reason.LEADER_KEY_REACQUIRE),
    ("primary whose key vanished, lease expiring: fence",
     obs(cluster(leader=None), PRIMARY, lease=EXPIRING), (A.Demote(A.StopMode.IMMEDIATE, None),),
     Reason.LEASE_EXPIRING_FENCE),
    ("replica, DCS unreachable: no action",
     obs(None, REPLICA, dcs_error="timeout"), (), Reason.DCS_UNREACHABLE),
    ("no leader, I am the most advanced replica: acquire then promote",
     obs(cluster(members=[member(ME, 100), member("n3", 90)]), REPLICA), (A.AcquireLeader(), A.ClaimTimeline(2), A.Promote(2)),
     Reason.RACE_WON),
    ("no leader, another member has more WAL: wait",
     obs(cluster(members=[member("n3", 150)]), REPLICA), (), Reason.RACE_BEHIND),
    ("no leader, the more advanced member is not running: race",
     obs(cluster(members=[member("n3", 150, state="stopped")]), REPLICA), (A.AcquireLeader(), A.ClaimTimeline(2), A.Promote(2)),
     Reason.RACE_WON),
    ("no leader, the more advanced member is nofailover: race",
     obs(cluster(members=[member("n3", 150, nofailover=True)]), REPLICA), (A.AcquireLeader(), A.ClaimTimeline(2), A.Promote(2)),
     Reason.RACE_WON),
    ("no leader, a member on a newer timeline: wait",
     obs(cluster(members=[member("n3", 50, timeline=2)]), REPLICA), (), Reason.RACE_BEHIND),
    ("no leader, too far behind the last known optime: wait",
     obs(cluster(status_optime=100 + 2 * 1048576), REPLICA), (), Reason.RACE_TOO_FAR_BEHIND),
    ("no leader, stopped former primary and healthiest: acquire then start as primary",
     obs(cluster(), STOPPED_PRIMARY), (A.AcquireLeader(), A.StartPostgres(True)), Reason.RACE_WON_PRIMARY),
    ("no leader, stopped replica: start read-only first",
     obs(cluster(), STOPPED_REPLICA), (A.StartPostgres(False, None),), Reason.STARTING_REPLICA),
    ("foreign data directory: exit",
     obs(cluster(initialize="7399999999999999999"), STOPPED_PRIMARY),
     (A.Exit("the data directory belongs to another cluster: its system id 7300000000000000001 differs from "
             "the cluster's initialize key 7399999999999999999; refusing to start"),), Reason.FOREIGN_DATA_DIR),
    ("shutdown as leader: clean stop, wait for a replica to have it all, then release",
     obs(cluster(leader=ME), PRIMARY, shutdown_requested=True),
     (A.StopPostgres(A.StopMode.FAST), A.AwaitReplicated(5.0), A.RevokeLease()), Reason.SHUTDOWN_HANDOVER),
    ("shutdown as leader with PostgreSQL already stopped: release",
     obs(cluster(leader=ME), STOPPED_PRIMARY, shutdown_requested=True), (A.RevokeLease(),), Reason.SHUTDOWN),
    ("shutdown as replica: only stop",
     obs(cluster(leader="n2"), REPLICA, shutdown_requested=True),
     (A.StopPostgres(A.StopMode.FAST), A.RevokeLease()), Reason.SHUTDOWN),
]


@pytest.mark.parametrize("observation, expected_actions, expected_reason",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(observation, expected_actions, expected_reason):
    decision = decide(observation, Memory(), SETTINGS)
    assert decision.reason is expected_reason
    assert decision.actions == expected_actions
    assert decision.memory.last_reason is expected_reason


def test_a_demoted_primary_whose_wal_went_past_the_fork_point_is_rewound():
    view = cluster(leader="n2", members=[member("n2", 900, timeline=2)], history=((1, 400, "race_won"),))
    decision = decide(obs(view, PRIMARY_DEMOTED), Memory(was_primary=True), SETTINGS)
    assert decision.reason is Reason.DIVERGED
    assert decision.actions == (A.StopPostgres(A.StopMode.FAST), A.Rewind("n2"))
    # An ordinary replica is judged only after it has not streamed for diverge_grace: a replica that is merely
    # reconnecting may report a stale timeline.
    fresh = decide(obs(view, PRIMARY_DEMOTED), Memory(), SETTINGS)
    assert fresh.reason is Reason.FOLLOWING and fresh.memory.unstreamed_since == 1000.0
    later = decide(obs(view, PRIMARY_DEMOTED, now=1000.0 + SETTINGS.diverge_grace), fresh.memory, SETTINGS)
    assert later.reason is Reason.DIVERGED


def test_was_primary_is_remembered_until_the_node_streams():
    memory = decide(obs(cluster(leader=ME), PRIMARY), Memory(), SETTINGS).memory
    assert memory.was_primary
    streaming = replace(REPLICA, streaming_from="127.0.0.1:5200")
    assert not decide(obs(cluster(leader="n2"), streaming), memory, SETTINGS).memory.was_primary


def test_a_rewind_that_could_not_reach_its_source_is_retried_without_repairs():
    failed = replace(job(JobKind.REWIND, JobState.FAILED, "rewind source unreachable"), retryable=True)
    settings = replace(SETTINGS, remove_data_directory_on_rewind_failure=True)
    decision = decide(obs(cluster(leader="n2"), with_job(STOPPED_PRIMARY, failed)), Memory(), settings)
    assert decision.actions == (A.AckJob(),) and decision.reason is Reason.JOB_RETRY
    assert decision.memory.rewind_failed_from is None


def test_peers_asked_directly_override_their_published_data():
    from pgha.core.model import PeerStatus
    view = cluster(members=[member("n3", 150)])  # published: n3 ahead of us (100)
    fresh = obs(view, REPLICA, peers=(PeerStatus("n3", True, wal_position=100, timeline=1, role="replica"),))
    assert decide(fresh, Memory(), SETTINGS).reason is Reason.RACE_WON  # it answered: no further ahead
    gone = obs(view, REPLICA, peers=(PeerStatus("n3", False),))
    assert decide(gone, Memory(), SETTINGS).reason is Reason.RACE_WON  # it does not answer: ignored
    primary = obs(view, REPLICA, peers=(PeerStatus("n3", True, wal_position=90, timeline=1, role="primary"),))
    assert decide(primary, Memory(), SETTINGS).reason is Reason.RACE_BEHIND  # still a primary out there
    assert decide(obs(view, REPLICA), Memory(), SETTINGS).reason is Reason.RACE_BEHIND  # not asked: published


def test_nofailover_node_neither_bootstraps_nor_races():
    settings = Settings(name=ME, nofailover=True)
    assert decide(obs(cluster(initialize=None), EMPTY), Memory(), settings).reason is Reason.NOT_ALLOWED_TO_BOOTSTRAP
    decision = decide(obs(cluster(), REPLICA), Memory(), settings)
    assert decision.reason is Reason.RACE_NOT_ALLOWED and decision.actions == ()


def test_every_promotion_is_preceded_by_a_lease_step():
    """Ordering contract: Promote / StartPostgres(primary) never come before AcquireLeader or RefreshLeader."""
    for _, observation, _, _ in CASES:
        actions = decide(observation, Memory(), SETTINGS).actions
        for i, action in enumerate(actions):
            if isinstance(action, A.Promote) or (isinstance(action, A.StartPostgres) and action.as_primary):
                assert any(isinstance(a, (A.AcquireLeader, A.RefreshLeader)) for a in actions[:i])


def test_no_running_primary_is_left_without_a_valid_lease_or_the_lock():
    """Single-writer rule over a grid of situations: a running primary either holds the lock (leader key names
    it and the DCS answered) with a refresh first, or has a valid lease and reacquires, or demotes."""
    leases = [VALID, EXPIRING, LeaseState()]
    views = [None, cluster(leader=ME), cluster(leader=None), cluster(leader="n2")]
    for lease in leases:
        for view in views:
            decision = decide(obs(view, PRIMARY, lease=lease), Memory(), SETTINGS)
            kinds = [type(a) for a in decision.actions]
            demotes = A.Demote in kinds
            keeps_lock = kinds[:1] in ([A.RefreshLeader], [A.AcquireLeader])
            holding_quietly = view is None and lease is VALID and not kinds
            assert demotes or keeps_lock or holding_quietly, (lease, view, decision)
            if view is not None and view.leader == "n2":
                assert demotes


def test_reasons_render_without_missing_fields():
    for reason in Reason:
        assert reason.render(me="n1", leader="n2", detail="x")


def test_the_winner_says_how_far_behind_the_old_primary_it_promotes():
    # REPLICA ends at 100; the old primary last published 4196 (0x1064): 4096 bytes are left behind
    behind = decide(obs(cluster(status_optime=4196), REPLICA), Memory(), SETTINGS)
    assert behind.reason is Reason.RACE_WON
    assert "4096 bytes behind" in behind.detail and "0/1064" in behind.detail and "0/64" in behind.detail
    level = decide(obs(cluster(status_optime=100), REPLICA), Memory(), SETTINGS)
    assert level.reason is Reason.RACE_WON and "not behind" in level.detail
    unknown = decide(obs(cluster(), REPLICA), Memory(), SETTINGS)
    assert unknown.reason is Reason.RACE_WON and "published no position" in unknown.detail
    assert "bytes behind" in behind.message(ME)
