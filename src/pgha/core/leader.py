"""The node whose name the leader key holds.

Rules
1. Every tick starts with RefreshLeader: the executor stops at its failure, so nothing after it runs on a lock
   we no longer hold (the next tick sees who holds it and demotes if needed).
2. A replica that holds the lock promotes only after that refresh succeeded in the same decision.
3. The lock holder repairs the permanent keys others rely on: ``initialize`` holds our system id, ``config``
   exists (only the leader re-seeds a missing config), and ``history`` records the timeline switch that made it
   leader, with the reason code of the decision that promoted it.
4. A running primary holding the lock acts on a switchover or failover request (switchover.py); otherwise it
   keeps synchronous replication as the dynamic config asks (sync.py), after the other upkeep.
5. A lock holder whose PostgreSQL stopped (a crash) restarts it in place, unless primary_start_timeout is 0;
   jobs.py hands the lock over if the start overruns primary_start_timeout.
"""

from __future__ import annotations

from dataclasses import replace

from pgha.core.actions import (RefreshLeader, ReleaseLeader, SetInitialize, StartPostgres, SyncSlots,
                               UpdateHistory, WriteConfig, WriteFailsafe)
from pgha.core import switchover, sync
from pgha.core.election import promotion
from pgha.core.jobs import has_healthy_replica
from pgha.core.model import Observation, PgRole
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def as_lock_holder(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    local = obs.local
    if not local.running:
        if settings.primary_start_timeout <= 0 and has_healthy_replica(obs, settings):
            # Patroni's primary_start_timeout = 0: never restart in place, fail over at once.
            return Decision((ReleaseLeader(),), memory, Reason.PRIMARY_START_TIMEOUT, detail="0s")
        as_primary = local.last_role is PgRole.PRIMARY
        abandon = switchover.abandon(obs)  # a handover that did not complete (switchover.py rule 6)
        return Decision((RefreshLeader(),) + abandon + (StartPostgres(as_primary=as_primary),), memory,
                        Reason.LEADER_STARTING)
    if local.role is PgRole.REPLICA:
        promoted = replace(memory, promoted_because=Reason.LEADER_PROMOTING)
        return Decision((RefreshLeader(),) + promotion(obs, settings), promoted, Reason.LEADER_PROMOTING)
    upkept = upkeep(obs, memory, settings)
    handover = switchover.as_leader(obs, memory, settings, upkept)
    if handover is not None:
        return handover
    steps, memory, change = sync.leader_steps(obs, memory, settings)
    if change:
        return Decision((RefreshLeader(),) + upkept + steps, memory, Reason.SYNC_CHANGE, detail=change)
    return Decision((RefreshLeader(),) + upkept + steps, memory, Reason.LEADER_REFRESHED)


def upkeep(obs: Observation, memory: Memory, settings: Settings) -> tuple:
    """What a running primary holding the lock keeps true each tick."""
    cluster = obs.cluster
    assert cluster is not None
    actions: list = []
    if obs.local.system_id and cluster.initialize != obs.local.system_id:
        actions.append(SetInitialize(obs.local.system_id))
    if cluster.config is None:
        actions.append(WriteConfig())
    timeline = obs.local.timeline
    if timeline and timeline > 1 and not any(_entry_timeline(e) == timeline - 1 for e in cluster.history):
        reason = memory.promoted_because.code if memory.promoted_because else "promoted"
        actions.append(UpdateHistory(reason))
    failsafe = _failsafe_members(obs, settings)
    if failsafe != (tuple(sorted(cluster.failsafe.items())) if cluster.failsafe is not None else None):
        actions.append(WriteFailsafe(failsafe))
    if settings.use_slots:
        others = tuple(sorted(m.name for m in cluster.members if m.name != settings.name))
        actions.append(SyncSlots(others))
    return tuple(actions)


def _failsafe_members(obs: Observation, settings: Settings) -> tuple[tuple[str, str], ...] | None:
    """Who must answer the primary's POST /failsafe while the DCS is gone: every member with a REST API."""
    if not settings.failsafe_mode:
        return None
    assert obs.cluster is not None
    return tuple(sorted((m.name, m.api_url) for m in obs.cluster.members if m.api_url))


def _entry_timeline(entry: tuple) -> int | None:
    try:
        return int(entry[0])
    except (IndexError, TypeError, ValueError):
        return None
