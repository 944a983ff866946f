"""Operator requests from the REST API (restart, reload, reinitialize): what this node does about each.

Rules
1. One request per tick, oldest first; each is answered exactly once by an ``Answer`` action, last in its
   decision, with Patroni's code and text (spec section 2). A request whose actions fail is decided again.
2. Requests never bypass safety: they are looked at after the single-writer rule and only when no background
   job runs (decide.py orders the rules), and a restart of the leader keeps refreshing its lease first.
3. A restart keeps the role: the lock holder restarts as primary, a replica as a replica of the leader.
4. Reinitialize: refused on the leader and when there is no leader to clone from (Patroni's 503 texts); else the
   data directory goes and the node clones afresh from the leader on the next ticks.
"""

from __future__ import annotations

from pgha.core.actions import (Answer, RefreshLeader, ReloadPostgres, RemoveDataDir, StartPostgres, StopMode,
                               StopPostgres)
from pgha.core.model import DataDir, Observation, PgRole, Request, RequestKind
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def handle(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    if not obs.requests:
        return None
    request = obs.requests[0]
    if request.kind is RequestKind.RELOAD:
        return Decision((ReloadPostgres(), Answer(request.id, 202, "reload scheduled")), memory,
                        Reason.REQUEST_RELOAD)
    if request.kind is RequestKind.RESTART:
        return _restart(obs, memory, settings, request)
    return _reinitialize(obs, memory, settings, request)


def _restart(obs: Observation, memory: Memory, settings: Settings, request: Request) -> Decision:
    cluster = obs.cluster
    assert cluster is not None
    holder = cluster.leader
    local = obs.local
    as_primary = holder == settings.name and (local.role is PgRole.PRIMARY or
                                               (not local.running and local.last_role is PgRole.PRIMARY))
    if local.data_dir is not DataDir.INITIALIZED:
        return _refuse(memory, request, 503, "restart failed")
    if not as_primary and local.role is PgRole.PRIMARY:
        return _refuse(memory, request, 503, "restart failed")  # a primary without the lock: decide.py demotes it
    actions: tuple = (RefreshLeader(),) if as_primary else ()
    if local.running:
        actions += (StopPostgres(StopMode.FAST),)
    upstream = None if as_primary else holder
    actions += (StartPostgres(as_primary, upstream), Answer(request.id, 200, "restarted successfully"))
    return Decision(actions, memory, Reason.REQUEST_RESTART, leader=holder)


def _reinitialize(obs: Observation, memory: Memory, settings: Settings, request: Request) -> Decision:
    cluster = obs.cluster
    assert cluster is not None
    if cluster.leader == settings.name:
        return _refuse(memory, request, 503, "I am the leader, can not reinitialize")
    if cluster.leader is None:
        return _refuse(memory, request, 503, "Cluster has no leader, can not reinitialize")
    actions = (StopPostgres(StopMode.IMMEDIATE), RemoveDataDir(), Answer(request.id, 200, "reinitialize started"))
    return Decision(actions, memory, Reason.REQUEST_REINIT, leader=cluster.leader)


def _refuse(memory: Memory, request: Request, code: int, text: str) -> Decision:
    return Decision((Answer(request.id, code, text),), memory, Reason.REQUEST_REFUSED,
                    detail=f"{request.kind.value}: {text}")

