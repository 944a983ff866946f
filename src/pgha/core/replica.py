"""A node that does not hold the leader key: follow the leader, or race for the lock when there is none.

Rules
1. With a leader: run as a replica streaming from it (start, or repoint a running replica). A running primary
   never reaches here; decide.py demotes it first.
2. Rejoin: a stopped former primary is rewound from the leader before it starts as a replica (pg_rewind finds
   out itself whether the histories diverged); a demoted primary running as a replica that does not stream and
   whose WAL went past the point where the leader's timeline forked off ours (the ``history`` key) has diverged
   and is stopped and rewound; so is a replica that has not streamed for diverge_grace (it can hold WAL the
   old leader sent that the new leader never had, e.g. a nofailover replica ahead of the winner). Without
   use_pg_rewind, remove_data_directory_on_diverged_timelines makes it clone afresh instead.
3. Without a leader: a pending switchover/failover request names who races (switchover.race_gate); else only a node allowed to fail over (not nofailover) and not behind any other running member
   (election.py) races; the atomic create of the leader key settles ties. The race winner promotes in the same
   decision, after the acquire.
4. A primary whose key vanished while its lease is still valid takes the key back (decide.py already fenced
   it if the lease is not valid).
"""

from __future__ import annotations

from dataclasses import replace

from pgha.core import election, switchover
from pgha.core.actions import (AcquireLeader, Follow, RemoveDataDir, Rewind, StartPostgres, StopMode,
                               StopPostgres)
from pgha.core.leader import upkeep
from pgha.core.model import Observation, PgRole
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def follow(obs: Observation, memory: Memory, settings: Settings, holder: str) -> Decision:
    local = obs.local
    if not local.running:
        if local.last_role is PgRole.PRIMARY and settings.use_pg_rewind and memory.rewind_failed_from != holder:
            return _rejoin_former_primary(obs, memory, holder)
        return Decision((StartPostgres(False, holder),), memory, Reason.STARTING_REPLICA, leader=holder)
    divergence = diverged_from(obs, holder) if _suspect(obs, memory, settings) else None
    if divergence is not None:
        return _diverged(memory, settings, holder, divergence)
    if local.following != holder:
        return Decision((Follow(holder),), memory, Reason.FOLLOW_NEW_LEADER, leader=holder)
    return Decision((), memory, Reason.FOLLOWING, leader=holder)


def _suspect(obs: Observation, memory: Memory, settings: Settings) -> bool:
    """Worth checking for divergence: a replica that does not stream and either ran as primary, or has not
    streamed for diverge_grace (it may hold WAL an old leader sent that the new leader never had). The grace
    keeps a replica that is merely reconnecting, whose reported timeline may lag its replay, from being judged."""
    if obs.local.streaming_from is not None:
        return False
    if memory.was_primary:
        return True
    since = memory.unstreamed_since
    return since is not None and obs.now - since >= settings.diverge_grace


def _rejoin_former_primary(obs: Observation, memory: Memory, holder: str) -> Decision:
    """pg_rewind reads the leader's timeline from its control file, which a promotion updates only at the
    checkpoint the new leader runs right after promoting; the leader publishes its new timeline once that is
    done. Rewinding earlier would find "no rewind required" and leave us diverged."""
    assert obs.cluster is not None
    leader = obs.cluster.member(holder)
    mine = obs.local.timeline
    if leader is None or leader.role != "primary" or leader.timeline is None or mine is None:
        return Decision((), memory, Reason.WAIT_LEADER_READY, leader=holder)
    # Always through pg_rewind, even when the leader's timeline id is not newer than ours: two nodes that
    # promoted without seeing each other pick the same id for different histories. pg_rewind compares the
    # histories themselves (where each timeline began) and does nothing when they agree.
    return Decision((Rewind(holder),), memory, Reason.REWIND_STARTED, leader=holder)


def _diverged(memory: Memory, settings: Settings, holder: str, detail: str) -> Decision:
    if settings.use_pg_rewind and memory.rewind_failed_from != holder:
        return Decision((StopPostgres(StopMode.FAST), Rewind(holder)), memory, Reason.DIVERGED, leader=holder,
                        detail=detail)
    if settings.remove_data_directory_on_diverged_timelines:
        return Decision((StopPostgres(StopMode.IMMEDIATE), RemoveDataDir()), memory, Reason.DIVERGED_RECLONE,
                        leader=holder)
    return Decision((), memory, Reason.DIVERGED, leader=holder, detail=detail + "; nothing allowed to repair it")


def diverged_from(obs: Observation, holder: str) -> str | None:
    """Why this replica's WAL cannot continue on the leader's timeline, or None when it can (or we cannot tell).

    The leader's ``history`` says at which LSN each of its timelines ended; a replica still on an older timeline
    whose WAL goes past that point holds changes the leader never had."""
    cluster, local = obs.cluster, obs.local
    assert cluster is not None
    leader = cluster.member(holder)
    mine, position = local.timeline, local.wal_position
    if leader is None or leader.timeline is None or mine is None or position is None or leader.timeline <= mine:
        return None
    for entry in cluster.history:
        try:
            timeline, switch_lsn = int(entry[0]), int(entry[1])
        except (IndexError, TypeError, ValueError):
            continue
        if timeline == mine and position > switch_lsn:
            return f"timeline {mine} ended at {switch_lsn} on the leader, my WAL goes to {position}"
    return None


def no_leader(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    local = obs.local
    if local.running and local.role is PgRole.PRIMARY:
        return Decision((AcquireLeader(),) + upkeep(obs, memory, settings), memory, Reason.LEADER_KEY_REACQUIRE)
    gate = switchover.race_gate(obs, settings)
    if gate is not None and gate[0] == "race" and local.running:
        won = replace(memory, promoted_because=Reason.FAILOVER_TO_ME)
        return Decision((AcquireLeader(),) + election.promotion(obs, settings) + switchover.clear_after_race(obs), won,
                        Reason.FAILOVER_TO_ME)
    if gate is not None and gate[0] == "abandon":
        return Decision(switchover.clear_after_race(obs), memory, Reason.SWITCHOVER_STALE, detail=gate[1])
    verdict = (Reason.FAILOVER_OTHER, gate[1]) if gate is not None and gate[0] == "wait" else None
    verdict = verdict or election.judge(obs, settings)
    if verdict is not None:
        reason, detail = verdict
        if not local.running:
            return Decision((StartPostgres(False, None),), memory, Reason.STARTING_REPLICA, detail=detail)
        return Decision((), memory, reason, detail=detail)
    if not local.running:
        if local.last_role is PgRole.PRIMARY:
            return Decision((AcquireLeader(), StartPostgres(True)), memory, Reason.RACE_WON_PRIMARY)
        return Decision((StartPostgres(False, None),), memory, Reason.STARTING_REPLICA)
    won = replace(memory, promoted_because=Reason.RACE_WON)
    return Decision((AcquireLeader(),) + election.promotion(obs, settings) + switchover.clear_after_race(obs), won,
                    Reason.RACE_WON, detail=election.wal_gap(obs))
