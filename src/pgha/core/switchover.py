"""Planned switchover and manual failover: what the ``failover`` key asks of each node.

An operator (POST /switchover, /failover, or the ctl) writes the key: ``leader`` names the node to step down (a
switchover), ``member`` the one to take over (a failover when no ``leader`` is named), ``scheduled_at`` when.

Rules
1. The lock holder acts only on a request that names it (or no leader) and is due: within loop_wait of
   ``scheduled_at``. One more than 1.5 x loop_wait late, or naming another leader, is void and deleted.
2. It steps down only towards a healthy candidate: a running replica streaming from it and allowed to fail
   over (the named member, else any); its published lag does not count, the clean stop hands it everything.
   With none the request is deleted.
3. Stepping down is a clean handover: CHECKPOINT while still serving (so the shutdown checkpoint is short), a
   fast stop, then the lock is released only once the candidate (or, with none named, a replica) has
   everything up to the shutdown checkpoint. Nothing acknowledged can be lost.
4. Without a leader a pending request decides who races: the named member takes the lock (a failover's without
   the lag check: the operator chose it; a switchover's within maximum_lag_on_failover of the leader's last
   published position, which a completed handover always is); others wait while the named member is running
   (and, for a switchover, within that bound); the old leader of a switchover never races for the lock it gave
   up while another healthy replica can take it.
6. A lock holder whose PostgreSQL is stopped while a request is pending did not complete the handover (the
   candidate never confirmed the shutdown checkpoint): the request is discarded and it starts again as
   primary, instead of trying and stopping again forever.
5. The new leader deletes the key once it holds the lock, after promoting (the promotion comes first: it is
   what clients wait for).
"""

from __future__ import annotations

import datetime

from pgha.core.actions import (AwaitReplicated, Checkpoint, ClearFailover, RefreshLeader, ReleaseLeader, StopMode,
                               StopPostgres)
from pgha.core import election, sync
from pgha.core.model import Failover, Member, Observation
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def as_leader(obs: Observation, memory: Memory, settings: Settings, upkeep: tuple) -> Decision | None:
    """Rules 1-3 for the lock holder running as primary; None when there is no request for it."""
    cluster = obs.cluster
    assert cluster is not None
    request = cluster.failover
    if request is None:
        return None
    clear = ClearFailover(cluster.versions.get("failover", 0))
    if request.leader not in (None, settings.name) or request.member == settings.name:
        why = f"it names {request.leader} as the leader" if request.member != settings.name else "I already lead"
        return Decision((RefreshLeader(), clear) + upkeep, memory, Reason.SWITCHOVER_STALE, detail=why)
    due = _due(request, obs.wall_now, settings.loop_wait)
    if due == "late":
        return Decision((RefreshLeader(), clear) + upkeep, memory, Reason.SWITCHOVER_STALE,
                        detail=f"it was scheduled for {_iso(request.scheduled_at)}")
    if due == "wait":
        return Decision((RefreshLeader(),) + upkeep, memory, Reason.SWITCHOVER_SCHEDULED,
                        detail=f"at {_iso(request.scheduled_at)}")
    # A candidate streaming from us receives everything at our clean stop (rule 3): the lag it last published
    # (up to a tick old, and behind by whatever we wrote since) does not matter here.
    candidates = healthy_candidates(obs, settings, check_lag=False, streaming=True)
    voters = sync.restricted_to(obs, settings)
    if voters is not None:  # sync mode: only a synchronous standby may take over (Patroni's 412 otherwise)
        candidates = [m for m in candidates if m.name.lower() in voters]
    if request.member is not None:
        candidates = [m for m in candidates if m.name == request.member]
    if not candidates:
        why = f"{request.member} is not a healthy candidate" if request.member else "no good candidates have been found"
        return Decision((RefreshLeader(), clear) + upkeep, memory, Reason.SWITCHOVER_NO_CANDIDATE, detail=why)
    target = request.member
    actions = (RefreshLeader(), Checkpoint(), StopPostgres(StopMode.FAST),
               AwaitReplicated(timeout=min(5.0, settings.ttl / 2), member=target), ReleaseLeader())
    return Decision(actions, memory, Reason.SWITCHOVER_DEMOTE, detail=target or "the healthiest replica")


def healthy_candidates(obs: Observation, settings: Settings, check_lag: bool,
                       streaming: bool = False) -> list[Member]:
    """Running replicas allowed to fail over; with ``check_lag``, within maximum_lag_on_failover of our WAL; with
    ``streaming``, streaming from us (so our clean shutdown hands them the shutdown checkpoint)."""
    cluster = obs.cluster
    assert cluster is not None
    mine = obs.local.wal_position
    out = []
    for member in cluster.members:
        if member.name == settings.name or member.nofailover or member.state != "running":
            continue
        if member.role not in ("replica", "sync_standby", "quorum_standby"):
            continue
        if streaming and (member.data or {}).get("replication_state") != "streaming":
            continue
        if check_lag and (member.xlog_location is None or
                          (mine is not None and mine - member.xlog_location > settings.maximum_lag_on_failover)):
            continue
        out.append(member)
    return out


def race_gate(obs: Observation, settings: Settings) -> tuple[str, str] | None:
    """Rule 4, for a node without a leader: ("race", "") to take the lock as the named candidate, ("wait",
    detail) to leave it to another, ("abandon", detail) to delete a request the named candidate (us) cannot carry
    out while the others wait for it, None when the request changes nothing (the normal election decides)."""
    cluster = obs.cluster
    assert cluster is not None
    request = cluster.failover
    if request is None or _due(request, obs.wall_now, settings.loop_wait) != "now":
        return None  # a scheduled switchover whose leader died: the normal election replaces it
    if request.member == settings.name and not settings.nofailover:
        if request.leader is not None and sync.enabled(settings):
            verdict = election.judge(obs, settings)
            if verdict is not None and verdict[1].endswith(election.AHEAD):
                # The others wait for us, and we may not promote: another voter has more. The request goes, and
                # the synchronous election (which picks that voter) decides.
                return "abandon", f"its leader {request.leader} is gone and {verdict[1]} of me (the candidate)"
            if verdict is not None:
                return None  # sync mode: a switchover whose leader died before handing over gives no licence
        if request.leader is None or _within_lag(obs.local.wal_position, obs, settings):
            return "race", ""
        return None  # a switchover whose leader died before handing over: the normal election decides
    named = cluster.member(request.member) if request.member else None
    voters = sync.restricted_to(obs, settings)
    if named is not None and voters is not None and named.name.lower() not in voters:
        named = None  # sync mode: it may not promote, so nobody waits for it
    if named is not None and named.state == "running" and not named.nofailover and \
            (request.leader is None or _within_lag(named.xlog_location, obs, settings)):
        return "wait", named.name
    others = [m for m in healthy_candidates(obs, settings, False) if voters is None or m.name.lower() in voters]
    if request.member is None and request.leader == settings.name and others:
        return "wait", "another replica"
    return None


def _within_lag(position: int | None, obs: Observation, settings: Settings) -> bool:
    """Not behind the leader's last published position by more than maximum_lag_on_failover. A switchover's
    candidate passes trivially once the leader handed over (it has everything); one whose leader died first is
    held to the same bound as any failover. An explicit failover (no leader named) is the operator's choice."""
    optime = obs.cluster.status_optime if obs.cluster is not None else None
    if optime is None:
        return True
    return position is not None and optime - position <= settings.maximum_lag_on_failover


def abandon(obs: Observation) -> tuple:
    """Rule 6: the ClearFailover of a stopped lock holder with a request pending for it."""
    cluster = obs.cluster
    assert cluster is not None
    request = cluster.failover
    if request is None or request.leader not in (None, obs.cluster.leader) or \
            (request.scheduled_at is not None and request.scheduled_at > obs.wall_now):
        return ()
    return (ClearFailover(cluster.versions.get("failover", 0)),)


def clear_after_race(obs: Observation) -> tuple:
    """Rule 5: the ClearFailover the race winner appends after its promotion, when a request is pending."""
    cluster = obs.cluster
    if cluster is None or cluster.failover is None:
        return ()
    return (ClearFailover(cluster.versions.get("failover", 0)),)


def _due(request: Failover, wall_now: float, loop_wait: float) -> str:
    if request.scheduled_at is None:
        return "now"
    ahead = request.scheduled_at - wall_now
    if ahead > loop_wait:
        return "wait"
    if ahead < -1.5 * loop_wait:
        return "late"
    return "now"


def _iso(moment: float | None) -> str:
    if moment is None:
        return "now"
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(timespec="seconds")
