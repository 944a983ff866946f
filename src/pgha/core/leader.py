"""The node whose name the leader key holds.

Rules
1. Every tick starts with RefreshLeader: the executor stops at its failure, so nothing after it runs on a lock
   we no longer hold (the next tick sees who holds it and demotes if needed).
2. A replica that holds the lock promotes only after that refresh succeeded in the same decision.
3. The lock holder repairs the permanent keys others rely on: ``initialize`` holds our system id and ``config``
   exists (only the leader re-seeds a missing config).
"""

from __future__ import annotations

from pgha.core.actions import Promote, RefreshLeader, SetInitialize, StartPostgres, SyncSlots, WriteConfig
from pgha.core.model import Observation, PgRole
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def as_lock_holder(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    local = obs.local
    if not local.running:
        as_primary = local.last_role is PgRole.PRIMARY
        return Decision((RefreshLeader(), StartPostgres(as_primary=as_primary)), memory, Reason.LEADER_STARTING)
    if local.role is PgRole.REPLICA:
        return Decision((RefreshLeader(), Promote()), memory, Reason.LEADER_PROMOTING)
    return Decision((RefreshLeader(),) + upkeep(obs, settings), memory, Reason.LEADER_REFRESHED)


def upkeep(obs: Observation, settings: Settings) -> tuple:
    """What a running primary holding the lock keeps true each tick."""
    cluster = obs.cluster
    assert cluster is not None
    actions: list = []
    if obs.local.system_id and cluster.initialize != obs.local.system_id:
        actions.append(SetInitialize(obs.local.system_id))
    if cluster.config is None:
        actions.append(WriteConfig())
    if settings.use_slots:
        others = tuple(sorted(m.name for m in cluster.members if m.name != settings.name))
        actions.append(SyncSlots(others))
    return tuple(actions)
