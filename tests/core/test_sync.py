"""Synchronous replication in the pure core (core/sync.py): plain values in, actions out. No mocks.

The leader's tests walk the three-step change of synchronous_standby_names tick by tick, feeding each step's
outcome into the next observation as the shell would; a safety check after every tick asserts rule (*): the
sync key covers whatever synchronous_standby_names lets PostgreSQL acknowledge."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.core import actions as A
from pgha.core import sync
from pgha.core.decide import decide
from pgha.core.model import (ClusterView, DataDir, LeaseState, LocalState, Member, Observation, PeerStatus, PgRole,
                             Standby, SyncState)
from pgha.core.reasons import Reason
from pgha.core.settings import Memory, Settings

ME = "n1"
SYSID = "7300000000000000001"


def settings(mode: str = "on", **kw) -> Settings:
    return Settings(name=ME, ttl=10, loop_wait=1, retry_timeout=2, fence_margin=2, synchronous_mode=mode, **kw)


def member(name: str, lsn: int = 500, **tags) -> Member:
    return Member(name=name, conn_url=f"postgres://127.0.0.1:5{name[-1]}00/postgres", state="running",
                  role="replica", xlog_location=lsn, timeline=1, tags=tags)


def standby(name: str, flush: int = 500, state: str = "streaming") -> Standby:
    return Standby(name=name, state=state, sync_state="async", flush_lsn=flush)


def primary(ssn: str = "", standbys=(standby("n2"), standby("n3")), wal: int = 500) -> LocalState:
    return LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, running=True, role=PgRole.PRIMARY, timeline=1,
                      wal_position=wal, standbys=tuple(standbys), sync_standby_names=ssn)


def view(key: SyncState | None, members=(member("n2"), member("n3")), version: int = 7) -> ClusterView:
    return ClusterView(leader=ME, members=(member(ME),) + tuple(members), initialize=SYSID,
                       config={"ttl": 10}, history=(), sync=key, versions={"sync": version} if key else {})


def tick(cluster: ClusterView, local: LocalState, s: Settings, memory: Memory = Memory(), peers=()):
    o = Observation(now=1000.0, cluster=cluster, local=local, lease=LeaseState(valid_until=1010.0), peers=peers)
    return decide(o, memory, s)


def sync_actions(decision) -> list:
    return [a for a in decision.actions if isinstance(a, (A.WriteSync, A.SetSyncStandbyNames))]


def test_parse_and_render_round_trip():
    assert sync.parse("") == ((), 0)
    assert sync.parse("n2") == (("n2",), 1)
    assert sync.parse('2 ("n2","N3")') == (("n2", "n3"), 2)
    assert sync.parse("FIRST 1 (n2, n3)") == (("n2", "n3"), 1)
    assert sync.parse("ANY 1 (n2,n3)") == (("n2", "n3"), 1)
    assert sync.parse("*") is None
    assert sync.parse(sync.render((), 0, False, True)) == ((), 0)  # the placeholder acknowledges nothing
    assert sync.render(("n2",), 1, False, False) == "n2"
    assert sync.render(("n2", "n-3"), 2, False, False) == '2 (n2,"n-3")'
    assert sync.render(("n2", "n3"), 1, True, False) == "ANY 1 (n2,n3)"
    for text in ("n2", '2 (n2,"n-3")', "ANY 1 (n2,n3)"):
        names, k = sync.parse(text)
        assert sync.parse(sync.render(names, k, text.startswith("ANY"), False)) == (names, k)


def converge(s: Settings, local: LocalState, key: SyncState | None, members=(member("n2"), member("n3")),
             ticks: int = 8):
    """Run the leader's ticks, applying each action as the shell would, checking (*) after every one."""
    memory = Memory()
    version = 7
    for _ in range(ticks):
        d = tick(view(key, members, version), local, s, memory)
        memory = d.memory
        for a in sync_actions(d):
            if isinstance(a, A.WriteSync):
                assert a.version == (version if key else 0)
                key, version = SyncState(a.leader, tuple(sorted(a.voters)), a.quorum), version + 1
            else:
                local = replace(local, sync_standby_names=a.value)
        parsed = sync.parse(local.sync_standby_names)
        assert parsed is not None
        assert key is None or sync.covers(key, *parsed), (key, local.sync_standby_names)
        if not sync_actions(d):
            return key, local, d
    raise AssertionError("did not settle")


def test_mode_on_picks_one_standby_key_after_ssn():
    key, local, d = converge(settings("on"), primary(), None)
    assert local.sync_standby_names == "n2"
    assert key == SyncState(ME, ("n2",), 0)
    assert d.reason is Reason.LEADER_REFRESHED


def test_ssn_is_set_before_the_key_names_the_standby():
    s = settings("on")
    first = tick(view(SyncState(ME)), primary(), s)
    assert sync_actions(first) == [A.SetSyncStandbyNames("n2")]  # the key names no voter yet: nobody promotes
    assert first.reason is Reason.SYNC_CHANGE


def test_key_narrows_only_once_the_new_standby_has_what_was_acknowledged_before():
    s = settings("on")
    local = primary(ssn="n2", standbys=(standby("n2", flush=400), standby("n3")), wal=500)
    d = tick(view(SyncState(ME)), local, s)
    assert sync_actions(d) == []  # n2 flushed 400 < 500 where the change took effect
    d = tick(view(SyncState(ME)), replace(local, standbys=(standby("n2", flush=500), standby("n3"))), s, d.memory)
    assert sync_actions(d) == [A.WriteSync(ME, ("n2",), 0, 7)]


def test_replacing_a_standby_widens_the_key_first():
    s = settings("on")
    local = primary(ssn="n2", standbys=(standby("n3"),))  # n2 gone
    d = tick(view(SyncState(ME, ("n2",), 0)), local, s)
    assert sync_actions(d) == [A.WriteSync(ME, ("n2", "n3"), 1, 7)]  # either must hear from the other
    key, local, _ = converge(s, local, SyncState(ME, ("n2",), 0))
    assert (key, local.sync_standby_names) == (SyncState(ME, ("n3",), 0), "n3")


def test_quorum_mode_lists_every_standby_any_k():
    key, local, _ = converge(settings("quorum"), primary(), None)
    assert local.sync_standby_names == "ANY 1 (n2,n3)"
    assert key == SyncState(ME, ("n2", "n3"), 1)


def test_two_sync_standbys_in_mode_on():
    key, local, _ = converge(settings("on", synchronous_node_count=2), primary(), None)
    assert (local.sync_standby_names, key) == ("2 (n2,n3)", SyncState(ME, ("n2", "n3"), 0))


def test_nosync_lagging_and_not_streaming_standbys_are_not_candidates():
    members = (member("n2", nosync=True), member("n3"), member("n4"))
    local = primary(standbys=(standby("n2"), standby("n3", flush=100), standby("n4", state="catchup")))
    key, local, _ = converge(settings("on", maximum_lag_on_syncnode=200), local, None, members)
    assert local.sync_standby_names == "" and key == SyncState(ME)


def test_sync_priority_wins_over_position():
    members = (member("n2"), member("n3", sync_priority=5))
    key, local, _ = converge(settings("on"), primary(standbys=(standby("n2", 500), standby("n3", 450))), None,
                             members)
    assert local.sync_standby_names == "n3"


def test_non_strict_fallback_empties_the_key_before_ssn():
    s = settings("on")
    d = tick(view(SyncState(ME, ("n2",), 0)), primary(ssn="n2", standbys=()), s)
    assert sync_actions(d) == [A.WriteSync(ME, (), 0, 7)]
    d = tick(view(SyncState(ME)), primary(ssn="n2", standbys=()), s, d.memory)
    assert sync_actions(d) == [A.SetSyncStandbyNames("")]
    assert "running asynchronously" in d.detail


def test_strict_keeps_the_last_standby_and_otherwise_the_placeholder():
    s = settings("on", synchronous_mode_strict=True)
    d = tick(view(SyncState(ME, ("n2",), 0)), primary(ssn="n2", standbys=()), s)
    assert sync_actions(d) == []  # writes wait for n2; n2 may still promote
    key, local, _ = converge(s, primary(standbys=()), None)
    assert local.sync_standby_names == sync.PLACEHOLDER and key == SyncState(ME)


def test_mode_off_deletes_the_key_then_gives_ssn_back_to_the_configuration():
    s = settings("off")
    d = tick(view(SyncState(ME, ("n2",), 0)), primary(ssn="n2"), s)
    assert [a for a in d.actions if isinstance(a, (A.DeleteSync, A.SetSyncStandbyNames))] == \
        [A.DeleteSync(7), A.SetSyncStandbyNames(None)]
    d = tick(view(None), primary(ssn="an operator's own"), s)
    assert sync_actions(d) == [] and d.reason is Reason.LEADER_REFRESHED  # left alone, as Patroni does


# --- election -----------------------------------------------------------------------------------------------

def replica_local(wal: int) -> LocalState:
    return LocalState(data_dir=DataDir.INITIALIZED, system_id=SYSID, running=True, role=PgRole.REPLICA,
                      timeline=1, wal_position=wal, following="n0", streaming_from="127.0.0.1:5000")


def leaderless(key: SyncState | None, members) -> ClusterView:
    return ClusterView(leader=None, members=tuple(members), initialize=SYSID, config={"ttl": 10}, sync=key,
                       status_optime=900, versions={"sync": 3})


def test_only_a_voter_promotes_even_behind_an_async_replica():
    key = SyncState("n0", ("n1",), 0)
    cluster = leaderless(key, (member(ME, 500), member("n2", 800)))
    d = tick(cluster, replica_local(500), settings("on"))
    assert isinstance(d.actions[0], A.AcquireLeader), d.reason  # n2 is ahead but async; no lag bound for n1
    assert d.actions[1:3] == (A.WriteSync(ME, (), 0, 3), A.SetSyncStandbyNames(""))
    off = tick(replace(cluster, members=(member(ME, 800), member("n2", 800))),
               replace(replica_local(800), sync_standby_names="n2"), settings("off"))
    assert A.SetSyncStandbyNames(None) in off.actions  # no value left from a sync mode blocks the new primary
    other = tick(cluster, replica_local(800), replace(settings("on"), name="n2"))
    assert other.reason is Reason.RACE_NOT_SYNC and not other.actions


def test_quorum_candidate_needs_to_hear_from_the_others():
    key = SyncState("n0", ("n1", "n2", "n3"), 1)
    members = (member(ME, 500), member("n2", 500), member("n3", 500))
    d = tick(leaderless(key, members), replica_local(500), settings("quorum"))
    assert d.reason is Reason.RACE_NO_QUORUM  # nobody answered this tick
    peers = (PeerStatus("n2", True, 500, 1, "replica"), PeerStatus("n3", False))
    d = tick(leaderless(key, members), replica_local(500), settings("quorum"), peers=peers)
    assert isinstance(d.actions[0], A.AcquireLeader)
    ahead = (PeerStatus("n2", True, 600, 1, "replica"),)
    d = tick(leaderless(key, members), replica_local(500), settings("quorum"), peers=ahead)
    assert d.reason is Reason.RACE_BEHIND


def test_an_empty_key_or_mode_off_does_not_restrict():
    members = (member(ME, 500), member("n2", 500))
    assert isinstance(tick(leaderless(None, members), replica_local(500), settings("on")).actions[0],
                      A.AcquireLeader)
    key = SyncState("n0", ("n2",), 0)
    assert isinstance(tick(leaderless(key, members), replica_local(500), settings("off")).actions[0],
                      A.AcquireLeader)


@pytest.mark.parametrize("mode", ["on", "quorum"])
def test_switchover_only_to_a_voter(mode):
    from pgha.core.model import Failover
    members = (replace(member("n2"), data={"replication_state": "streaming"}),
               replace(member("n3"), data={"replication_state": "streaming"}))
    cluster = replace(view(SyncState(ME, ("n2",), 0), members), failover=Failover(leader=ME, member="n3"))
    d = tick(cluster, primary(ssn="n2"), settings(mode))
    assert d.reason is Reason.SWITCHOVER_NO_CANDIDATE


def test_a_switchover_candidate_behind_another_voter_drops_the_request_once_its_leader_is_gone():
    """The others wait for a named candidate; one that may not promote (another voter has more WAL) deletes the
    request so the synchronous election can pick that voter, instead of everybody waiting for ever."""
    from pgha.core.model import Failover
    key = SyncState("n0", ("n1", "n2"), 1)
    members = (member(ME, 500), member("n2", 600))
    cluster = replace(leaderless(key, members), failover=Failover(leader="n0", member=ME),
                      versions={"sync": 3, "failover": 11})
    peers = (PeerStatus("n2", True, 600, 1, "replica"),)
    d = tick(cluster, replica_local(500), settings("quorum"), peers=peers)
    assert (d.actions, d.reason) == ((A.ClearFailover(11),), Reason.SWITCHOVER_STALE)
    assert "n2 is ahead" in d.detail
    other = tick(cluster, replica_local(600), replace(settings("quorum"), name="n2"), peers=peers)
    assert other.reason is Reason.FAILOVER_OTHER  # until the request is gone
    after = tick(replace(cluster, failover=None), replica_local(600), replace(settings("quorum"), name="n2"),
                 peers=(PeerStatus(ME, True, 500, 1, "replica"),))
    assert isinstance(after.actions[0], A.AcquireLeader), after.reason
    level = tick(cluster, replica_local(600), settings("quorum"), peers=peers)  # not behind: it takes over
    assert isinstance(level.actions[0], A.AcquireLeader), level.reason
