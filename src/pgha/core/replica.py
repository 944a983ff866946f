"""A node that does not hold the leader key: follow the leader, or race for the lock when there is none.

Rules
1. With a leader: run as a replica streaming from it (start, or repoint a running replica). A running primary
   never reaches here; decide.py demotes it first.
2. Without a leader: only a node allowed to fail over (not nofailover) and not behind any other running member
   (election.py) races; the atomic create of the leader key settles ties. The race winner promotes in the same
   decision, after the acquire.
3. A primary whose key vanished while its lease is still valid takes the key back (decide.py already fenced
   it if the lease is not valid).
"""

from __future__ import annotations

from pgha.core import election
from pgha.core.actions import AcquireLeader, Follow, Promote, StartPostgres
from pgha.core.leader import upkeep
from pgha.core.model import Observation, PgRole
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def follow(obs: Observation, memory: Memory, settings: Settings, holder: str) -> Decision:
    local = obs.local
    if not local.running:
        return Decision((StartPostgres(False, holder),), memory, Reason.STARTING_REPLICA, leader=holder)
    if local.following != holder:
        return Decision((Follow(holder),), memory, Reason.FOLLOW_NEW_LEADER, leader=holder)
    return Decision((), memory, Reason.FOLLOWING, leader=holder)


def no_leader(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    local = obs.local
    if local.running and local.role is PgRole.PRIMARY:
        return Decision((AcquireLeader(),) + upkeep(obs, settings), memory, Reason.LEADER_KEY_REACQUIRE)
    verdict = election.judge(obs, settings)
    if verdict is not None:
        reason, detail = verdict
        if not local.running:
            return Decision((StartPostgres(False, None),), memory, Reason.STARTING_REPLICA, detail=detail)
        return Decision((), memory, reason, detail=detail)
    if not local.running:
        if local.last_role is PgRole.PRIMARY:
            return Decision((AcquireLeader(), StartPostgres(True)), memory, Reason.RACE_WON_PRIMARY)
        return Decision((StartPostgres(False, None),), memory, Reason.STARTING_REPLICA)
    return Decision((AcquireLeader(), Promote()), memory, Reason.RACE_WON)
