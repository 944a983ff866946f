"""What the agent publishes for the REST API each tick: Patroni's /patroni document (api/status.py).

Built from this tick's observation and the probe's extras (``pending_restart_reason``: the settings waiting
for a restart); the flags Patroni also puts in the member data (pending restart, pause) are handed to member.py.
The API's handlers only ever read the last published document (api/status.StatusBoard); they never ask
PostgreSQL or the DCS themselves.
"""

from __future__ import annotations

from typing import Any, Mapping

from pgha.agent.member import member_role, member_state, note_status, status_flags
from pgha.api.status import build_status
from pgha.cli.listing import sync_role
from pgha.core.model import ClusterView, LocalState, PgRole
from pgha.core.settings import Settings


def _xlog(local: LocalState, extras: Mapping[str, Any]) -> dict[str, Any]:
    if local.role is PgRole.PRIMARY:
        return {"location": local.wal_position}
    return {"received_location": local.receive_lsn, "replayed_location": local.replay_lsn,
            "replayed_timestamp": extras.get("replayed_timestamp"), "paused": bool(extras.get("paused"))}


def api_status(cfg: Any, settings: Settings, local: LocalState, extras: Mapping[str, Any],
               cluster: ClusterView | None, lock_holder: bool, dcs_last_seen: float | None,
               now_wall: float) -> dict[str, Any]:
    running = local.running and local.role is not None
    role = "primary" if local.role is PgRole.PRIMARY else member_role(local)
    replication_state = None
    if local.role is PgRole.REPLICA:
        replication_state = "streaming" if local.streaming_from else "in archive recovery"
    config = cluster.config if cluster is not None and cluster.config else {}
    pending = dict(extras.get("pending_restart_reason") or {}) if running else {}
    note_status(cfg, status_flags(pending, bool(config.get("pause"))))
    return build_status(
        name=cfg.name, scope=cfg.scope, state=member_state(local), role=role, pg_running=running,
        server_version=extras.get("server_version"), postmaster_start_time=extras.get("postmaster_start_time"),
        timeline=local.timeline, xlog=_xlog(local, extras), replication=list(extras.get("replication") or []),
        replication_state=replication_state, tags=dict(cfg.tags or {}), system_id=local.system_id,
        lock_holder=lock_holder, cluster_unlocked=cluster is not None and cluster.leader is None,
        dcs_last_seen=int(dcs_last_seen) if dcs_last_seen else None, pause=bool(config.get("pause")),
        pending_restart=bool(pending), pending_restart_reason=pending, last_tick_wall=now_wall,
        loop_wait=settings.loop_wait, ttl=settings.ttl,
        maximum_lag_on_failover=settings.maximum_lag_on_failover,
        status_optime=cluster.status_optime if cluster is not None else None,
        latest_end_lsn=extras.get("latest_end_lsn"),
        sync=sync_role(cluster, cfg.name) if cluster is not None else None)
