"""Maintenance mode (``pause: true`` in the DCS config, `pgha pause`): pgha stops acting on PostgreSQL on its own.

Patroni's rules (docs/pause.rst), as they apply here:
1. No automatic promotion, start or stop: a stopped PostgreSQL stays stopped, a leaderless cluster stays
   leaderless unless a running primary takes the key (it already accepts writes; taking the key is only honest).
2. The lock holder keeps refreshing while its PostgreSQL runs as primary; it releases the key when it does not
   (stopped by the operator, or running as a replica).
3. Replicas still follow the leader (primary_conninfo is repointed), but are not rewound or recloned.
4. Operator requests still work: restart and reinitialize (requests.py), and a switchover to a named candidate.

Not changed by pause: the single-writer rule (decide.py rule 2). Patroni leaves a primary without a valid lock
alone while paused; pgha still fences it, because two writers are never acceptable and, with automatic
promotion off, the fence only fires when the lease really runs out.
"""

from __future__ import annotations

from pgha.core import switchover
from pgha.core import election
from pgha.core.actions import AcquireLeader, Follow, RefreshLeader, ReleaseLeader
from pgha.core.model import DataDir, Observation, PgRole
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def paused(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    cluster = obs.cluster
    assert cluster is not None
    local = obs.local
    holder = cluster.leader
    primary = local.running and local.role is PgRole.PRIMARY
    if holder == settings.name:
        if not primary:
            return Decision((ReleaseLeader(),), memory, Reason.PAUSED_RELEASE)
        handover = _named_switchover(obs, memory, settings)
        if handover is not None:
            return handover
        return Decision((RefreshLeader(),), memory, Reason.PAUSED, detail="the leader with the lock")
    if holder is None:
        if primary:
            return Decision((AcquireLeader(),), memory, Reason.LEADER_KEY_REACQUIRE)
        gate = switchover.race_gate(obs, settings)
        if gate is not None and gate[0] == "race" and local.running:
            return Decision((AcquireLeader(),) + election.promotion(obs, settings) + switchover.clear_after_race(obs), memory,
                            Reason.FAILOVER_TO_ME)
        return Decision((), memory, Reason.PAUSED, detail="no leader; automatic failover is off")
    if local.running and local.role is PgRole.REPLICA and local.data_dir is DataDir.INITIALIZED \
            and local.following != holder:
        return Decision((Follow(holder),), memory, Reason.FOLLOW_NEW_LEADER, leader=holder)
    return Decision((), memory, Reason.PAUSED, leader=holder, detail=f"following ({holder})" if local.running
                    else "PostgreSQL is not running")


def _named_switchover(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    """Rule 4: only a request naming its candidate is carried out while paused."""
    request = obs.cluster.failover if obs.cluster is not None else None
    if request is None or request.member is None:
        return None
    return switchover.as_leader(obs, memory, settings, ())
