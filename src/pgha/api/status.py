"""The status contract between the agent and the REST API, and the pure renderings the API serves from it.

The agent builds one status per tick with ``build_status()`` and publishes it together with the DCS snapshot it
read (``StatusBoard.publish``). The API server only reads what was last published (``StatusSource``): a request
never touches PostgreSQL or the DCS, and never waits for the agent.

Rules
1. ``build_status()`` returns Patroni's ``GET /patroni`` JSON (spec section 2), field names and order as Patroni
   writes them, plus private fields under ``"_pgha"`` that the health rules need (health.py). ``public_status()``
   strips them; nothing private is ever sent.
2. PostgreSQL down: only ``state`` and ``role`` from PostgreSQL, then the flags (``pause``, ``cluster_unlocked``,
   ``dcs_last_seen``, ``tags``, ``database_system_identifier``, ``pending_restart``, ``patroni``). A state of
   ``running`` while PostgreSQL cannot be read is reported as ``unknown`` (Patroni does the same).
3. ``xlog`` is ``{location}`` for a primary, ``{received_location, replayed_location, replayed_timestamp,
   paused}`` otherwise. Optional flags (``pause``, ``cluster_unlocked``, ``pending_restart``) appear only when true.
4. ``cluster_json()`` is Patroni's ``GET /cluster`` (``cluster_as_json``) for a ``ClusterView``;
   ``metrics_text()`` is Patroni's ``GET /metrics`` (names, HELP/TYPE lines and order of docs/rest_api.rst).
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping, Protocol

from pgha import PATRONI_COMPAT_VERSION
from pgha.api.health import PRIVATE, parse_bytes
from pgha.cli.listing import format_lsn, sync_role
from pgha.core.model import ClusterView, Member
from pgha.postgres.conf import parse_conn_url


class StatusSource(Protocol):
    def status(self) -> Mapping[str, Any]:
        """The last published status (``build_status()``'s dict); never blocks."""

    def cluster(self) -> ClusterView | None:
        """The last DCS snapshot the agent read (None before the first successful read)."""


class StatusBoard:
    """A ``StatusSource`` the agent publishes to once per tick. One reference swap: readers always see a status
    and the snapshot published with it."""

    def __init__(self, status: Mapping[str, Any] | None = None, cluster: ClusterView | None = None) -> None:
        self._pair: tuple[Mapping[str, Any], ClusterView | None] = (dict(status or {}), cluster)

    def publish(self, status: Mapping[str, Any], cluster: ClusterView | None) -> None:
        self._pair = (status, cluster)

    def status(self) -> Mapping[str, Any]:
        return self._pair[0]

    def cluster(self) -> ClusterView | None:
        return self._pair[1]


# --- /patroni ----------------------------------------------------------------------------------------------------

def _xlog(role: str, xlog: Mapping[str, Any]) -> dict[str, Any]:
    if role == "primary":
        return {"location": xlog.get("location")}
    return {"received_location": xlog.get("received_location"), "replayed_location": xlog.get("replayed_location"),
            "replayed_timestamp": xlog.get("replayed_timestamp"), "paused": bool(xlog.get("paused", False))}


def _postgres_part(*, state: str, role: str, pg_running: bool, server_version: int | None,
                   postmaster_start_time: str | None, timeline: int | None, xlog: Mapping[str, Any],
                   replication: list[dict], replication_state: str | None, sync: str | None) -> dict[str, Any]:
    if not pg_running:
        return {"state": "unknown" if state == "running" else state, "role": role}
    out: dict[str, Any] = {"state": state, "postmaster_start_time": postmaster_start_time, "role": role,
                           "server_version": server_version, "xlog": _xlog(role, xlog)}
    if role == "replica" and sync in ("sync_standby", "quorum_standby"):
        out[sync] = True
    out["timeline"] = timeline
    if replication_state:
        out["replication_state"] = replication_state
    if replication:
        out["replication"] = [dict(r) for r in replication]
    return out


def build_status(*, name: str, scope: str, state: str, role: str, pg_running: bool, server_version: int | None,
                 postmaster_start_time: str | None, timeline: int | None, xlog: Mapping[str, Any],
                 replication: list[dict], replication_state: str | None, tags: Mapping[str, Any],
                 system_id: str | None, lock_holder: bool, cluster_unlocked: bool, dcs_last_seen: int | None,
                 pause: bool, pending_restart: bool, last_tick_wall: float, loop_wait: float, ttl: float,
                 maximum_lag_on_failover: int, status_optime: int | None, latest_end_lsn: int | None = None,
                 standby_cluster: bool = False,
                 pending_restart_reason: Mapping[str, Any] | None = None,
                 sync: str | None = None) -> dict[str, Any]:
    """One tick's status (rule 1). ``lock_holder``: the last successful lock refresh is less than ttl old.
    ``latest_end_lsn``: the WAL receiver's latest_end_lsn (the upstream's flush position), when known.
    ``dcs_last_seen``: epoch seconds of the last successful DCS read. ``sync``: ``sync_standby`` or
    ``quorum_standby`` when the sync key lists this member in that mode (listing.sync_role); Patroni's flag of
    that name is set only for a member running as a replica."""
    out = _postgres_part(state=state, role=role, pg_running=pg_running, server_version=server_version,
                         postmaster_start_time=postmaster_start_time, timeline=timeline, xlog=xlog,
                         replication=replication, replication_state=replication_state, sync=sync)
    if pause:
        out["pause"] = True
    if cluster_unlocked:
        out["cluster_unlocked"] = True
    out["dcs_last_seen"] = int(dcs_last_seen or 0)
    if tags:
        out["tags"] = dict(tags)
    if system_id:
        out["database_system_identifier"] = system_id
    if pending_restart:
        out["pending_restart"] = True
        out["pending_restart_reason"] = dict(pending_restart_reason or {})
    out["patroni"] = {"version": PATRONI_COMPAT_VERSION, "scope": scope, "name": name}
    out[PRIVATE] = {"lock_holder": bool(lock_holder), "last_tick_wall": last_tick_wall, "loop_wait": loop_wait,
                    "ttl": ttl, "maximum_lag_on_failover": maximum_lag_on_failover, "status_optime": status_optime,
                    "latest_end_lsn": latest_end_lsn, "pg_running": bool(pg_running),
                    "standby_cluster": bool(standby_cluster)}
    return out


def public_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status as sent: private fields removed."""
    return {k: v for k, v in status.items() if k != PRIVATE}


def identity(status: Mapping[str, Any], scope: str = "", name: str = "") -> tuple[str, str]:
    """(scope, name) from the status' ``patroni`` block, else the given defaults."""
    block = status.get("patroni")
    block = block if isinstance(block, Mapping) else {}
    return str(block.get("scope") or scope), str(block.get("name") or name)


# --- /cluster ----------------------------------------------------------------------------------------------------

_MEMBER_OPTIONAL = ("timeline", "pending_restart", "pending_restart_reason", "scheduled_restart", "tags", "site")


def _cluster_role(view: ClusterView, member: Member, standby: bool) -> str:
    if member.name != view.leader:
        return sync_role(view, member.name) or "replica"
    if standby:
        return "standby_leader"
    return "promoted" if member.data.get("role") == "promoted" else "leader"


def _lsn_fields(member: Member, cluster_lsn: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, key in (("receive_", "receive_lsn"), ("replay_", "replay_lsn"), ("", "xlog_location")):
        lsn = parse_bytes(member.data.get(key)) if member.data.get(key) is not None else None
        if not lsn:
            out[f"{prefix}lsn"] = out[f"{prefix}lag"] = "unknown"
        else:  # Patroni writes the lag first here
            out[f"{prefix}lag"] = cluster_lsn - lsn if cluster_lsn >= lsn else 0
            out[f"{prefix}lsn"] = format_lsn(lsn)
    return out


def _member_json(view: ClusterView, member: Member, standby: bool, cluster_lsn: int) -> dict[str, Any]:
    role = _cluster_role(view, member, standby)
    state = (member.data.get("replication_state", "") if role != "leader" else "") or member.data.get("state", "")
    out: dict[str, Any] = {"name": member.name, "role": role, "state": state,
                           "api_url": member.data.get("api_url")}
    address = parse_conn_url(member.conn_url)
    if address:
        out["host"], out["port"] = address
    out.update({k: member.data[k] for k in _MEMBER_OPTIONAL if k in member.data})
    if member.name != view.leader:
        out.update(_lsn_fields(member, cluster_lsn))
    return out


def cluster_json(view: ClusterView, scope: str) -> dict[str, Any]:
    """Patroni's ``GET /cluster`` body for one DCS snapshot."""
    config = view.config or {}
    standby = bool(config.get("standby_cluster"))
    cluster_lsn = view.status_optime or 0
    members = [_member_json(view, m, standby, cluster_lsn) for m in view.members]
    out: dict[str, Any] = {"members": sorted(members, key=lambda m: m["name"])}
    if config.get("pause"):
        out["pause"] = True
    out["scope"] = scope
    return out


# --- /metrics ----------------------------------------------------------------------------------------------------

# Patroni's PostgresqlState indexes (never renumbered upstream); any other state is -1.
PG_STATES = ("initdb", "initdb_failed", "custom_bootstrap", "custom_bootstrap_failed", "creating_replica",
             "running", "starting", "bootstrap_starting", "start_failed", "restarting", "restart_failed",
             "stopping", "stopped", "stop_failed", "crashed")
PG_STATE_VALUES = ("initializing new cluster", "initdb failed", "running custom bootstrap script",
                   "custom bootstrap failed", "creating replica", "running", "starting",
                   "starting after custom bootstrap", "start failed", "restarting", "restart failed", "stopping",
                   "stopped", "stop failed", "crashed")


def _epoch(value: Any) -> float | int:
    if not value:
        return 0
    try:
        moment = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric_values(status: Mapping[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(name, type, help, value) in Patroni's order."""
    xlog = status.get("xlog") if isinstance(status.get("xlog"), Mapping) else {}
    rows: list[tuple[str, str, str, Any]] = [
        ("version", "gauge", "Patroni semver without periods.",
         "".join(part.zfill(2) for part in PATRONI_COMPAT_VERSION.split("."))),
        ("postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise.",
         int(status.get("state") == "running")),
        ("postmaster_start_time", "gauge", "Epoch seconds since Postgres started.",
         _epoch(status.get("postmaster_start_time"))),
        ("primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.",
         int(status.get("role") == "primary")),
        ("xlog_location", "counter", "Current location of the Postgres transaction log, 0 if this node is not the "
         "leader.", xlog.get("location") or 0),
        ("standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 otherwise.",
         int(status.get("role") == "standby_leader")),
        ("replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.",
         int(status.get("role") == "replica")),
        ("sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise.",
         int(bool(status.get("sync_standby", False)))),
        ("quorum_standby", "gauge", "Value is 1 if this node is a quorum standby, 0 otherwise.",
         int(bool(status.get("quorum_standby", False)))),
        ("xlog_received_location", "counter", "Current location of the received Postgres transaction log, 0 if this "
         "node is not a replica.", xlog.get("received_location") or 0),
        ("xlog_replayed_location", "counter", "Current location of the replayed Postgres transaction log, 0 if this "
         "node is not a replica.", xlog.get("replayed_location") or 0),
        ("xlog_replayed_timestamp", "gauge", "Current timestamp of the replayed Postgres transaction log, 0 if null.",
         _epoch(xlog.get("replayed_timestamp"))),
        ("xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
         int(xlog.get("paused", False) is True)),
    ]
    return rows + _metric_values_tail(status)


def _metric_values_tail(status: Mapping[str, Any]) -> list[tuple[str, str, str, Any]]:
    version = status.get("server_version")
    version = version if isinstance(version, int) and not isinstance(version, bool) else 0
    rows: list[tuple[str, str, str, Any]] = []
    if version >= 90600:  # Patroni leaves these two out when PostgreSQL is down (no server_version)
        rows += [("postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise.",
                  int(status.get("replication_state") == "streaming")),
                 ("postgres_in_archive_recovery", "gauge", "Value is 1 if Postgres is replicating from archive, "
                  "0 otherwise.", int(status.get("replication_state") == "in archive recovery"))]
    return rows + [
        ("postgres_server_version", "gauge", "Version of Postgres (if running), 0 otherwise.", version),
        ("cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked.",
         int(bool(status.get("cluster_unlocked", 0)))),
        ("failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 if inactive.",
         int(bool(status.get("failsafe_mode_is_active", 0)))),
        ("postgres_timeline", "counter", "Postgres timeline of this node (if running), 0 otherwise.",
         status.get("timeline") or 0),
        ("dcs_last_seen", "gauge", "Epoch timestamp when DCS was last contacted successfully by Patroni.",
         status.get("dcs_last_seen", 0)),
        ("pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise.",
         int(bool(status.get("pending_restart")))),
        ("is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise.", int(bool(status.get("pause")))),
    ]


def metrics_text(status: Mapping[str, Any], scope: str, name: str) -> str:
    """Patroni's ``GET /metrics`` body (Prometheus text format)."""
    labels = f'{{scope="{_label(scope)}",name="{_label(name)}"}}'
    lines: list[str] = []
    for metric, kind, text, value in _metric_values(status):
        lines += [f"# HELP patroni_{metric} {text}", f"# TYPE patroni_{metric} {kind}",
                  f"patroni_{metric}{labels} {value}"]
    state = status.get("state")
    index = PG_STATE_VALUES.index(state) if state in PG_STATE_VALUES else -1
    lines += ["# HELP patroni_postgres_state Numeric representation of Postgres state.",
              "# Values: " + ", ".join(f"{i}={s}" for i, s in enumerate(PG_STATES)),
              "# TYPE patroni_postgres_state gauge", f"patroni_postgres_state{labels} {index}"]
    return "\n".join(lines) + "\n"
