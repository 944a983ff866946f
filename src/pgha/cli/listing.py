"""`pgha list` / `pgha topology`: the member table in patronictl 4.1's columns, as a table or JSON/YAML/TSV.

Pure rendering: rows are built from a ClusterView; nothing here reads the DCS.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

from pgha.cli import tables
from pgha.cli.tables import dump_yaml
from pgha.core.dynamic import DynamicConfig
from pgha.core.model import ClusterView, Member, lsn_text
from pgha.postgres.conf import parse_conn_url

SCRIPT_COLUMNS = ["Cluster", "Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN",
                  "Replay Lag"]


def format_lsn(value: Any) -> str:
    return lsn_text(value) if isinstance(value, int) else ""


def _lag_mb(leader_lsn: int | None, value: Any) -> int | str:
    if not isinstance(value, int) or leader_lsn is None:
        return ""
    return max(0, round((leader_lsn - value) / 1024 / 1024))


def _host(member: Member, show_port: bool) -> str:
    address = parse_conn_url(member.conn_url)
    if address is None:
        return ""
    return f"{address[0]}:{address[1]}" if show_port else address[0]


def sync_role(view: ClusterView, name: str) -> str | None:
    """``sync_standby`` / ``quorum_standby`` for a member the ``sync`` key lists (case-insensitively) while the
    cluster's dynamic config asks for synchronous mode ``on`` / ``quorum`` (not in a standby cluster); else None.
    Patroni's ``cluster_as_json``: the key alone decides, whatever the member's state."""
    config = view.config or {}
    if view.sync is None or not view.sync.lists(name) or config.get("standby_cluster"):
        return None
    mode = DynamicConfig.from_dict({"synchronous_mode": config.get("synchronous_mode", False)})[0].synchronous_mode
    return {"on": "sync_standby", "quorum": "quorum_standby"}.get(mode)


def role_name(view: ClusterView, member: Member) -> str:
    """patronictl's Role column: the /cluster role, words capitalised."""
    if member.name == view.leader:
        return "Standby Leader" if member.role == "standby_leader" else "Leader"
    return {"sync_standby": "Sync Standby", "quorum_standby": "Quorum Standby"}.get(
        sync_role(view, member.name) or "", "Replica")


def state_name(view: ClusterView, member: Member) -> str:
    if member.name != view.leader and member.state == "running":
        return str(member.data.get("replication_state") or "running")
    return member.state or "unknown"


def rows(view: ClusterView, scope: str) -> list[dict[str, Any]]:
    leader = view.member(view.leader) if view.leader else None
    leader_lsn = leader.xlog_location if leader else view.status_optime
    addresses = [parse_conn_url(m.conn_url) for m in view.members]
    hosts = [a[0] for a in addresses if a]
    show_port = any(a and a[1] != 5432 for a in addresses) or len(set(hosts)) != len(hosts)
    out = []
    for m in sorted(view.members, key=lambda m: m.name):
        is_leader = m.name == view.leader
        receive = None if is_leader else m.data.get("receive_lsn", m.xlog_location)
        replay = None if is_leader else m.data.get("replay_lsn", m.xlog_location)
        out.append({
            "Cluster": scope, "Member": m.name, "Host": _host(m, show_port), "Role": role_name(view, m),
            "State": state_name(view, m), "TL": m.timeline if m.timeline is not None else "",
            "Receive LSN": format_lsn(receive), "Receive Lag": _lag_mb(leader_lsn, receive),
            "Replay LSN": format_lsn(replay), "Replay Lag": _lag_mb(leader_lsn, replay),
        })
    return out


def _header(view: ClusterView, scope: str) -> str:
    if view.initialize:
        return f"{scope} ({view.initialize})"
    return f"{scope} (initializing)" if view.initialize == "" else f"{scope} (uninitialized)"


def _reason(value: Any, hide_long: bool) -> str:
    """patronictl's ``format_diff`` of ``pending_restart_reason``: ``param: old->new`` per line."""
    if not isinstance(value, Mapping):
        return ""
    lines = []
    for param, change in value.items():
        change = change if isinstance(change, Mapping) else {}
        full = f"{param}: {change.get('old_value', '')}->{change.get('new_value', '')}"
        lines.append(full if not hide_long or len(full) <= 50 else f"{param}: [hidden - too long]")
    return "\n".join(lines)


def _scheduled_restart(value: Any) -> str:
    if not isinstance(value, Mapping) or not value.get("schedule"):
        return ""
    text = str(value["schedule"])
    return text + (f" if version < {value['postgres_version']}" if value.get("postgres_version") else "")


def _extra_columns(view: ClusterView, extended: bool) -> list[str]:
    """patronictl's optional columns: always with -e, else when some member has a value for them."""
    present = {"Pending restart": "pending_restart", "Pending restart reason": "pending_restart_reason",
               "Scheduled restart": "scheduled_restart", "Tags": "tags"}
    return [c for c, key in present.items() if extended or any(m.data.get(key) for m in view.members)]


def topology_order(view: ClusterView, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """patronictl's ``topology_sort``: the leader, then each replica under the member it replicates from
    (``replicatefrom`` tag naming another replica), its name indented by ``+ `` per level."""
    by_name = {r["Member"]: r for r in data}
    replicas = {r["Member"] for r in data if r["Member"] != view.leader}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in data:
        if r["Member"] == view.leader:
            continue
        member = view.member(r["Member"])
        parent = (member.tags or {}).get("replicatefrom") if member else None
        parent = parent if parent and parent != r["Member"] and parent in replicas else view.leader
        children.setdefault(parent, []).append(r)
    out: list[dict[str, Any]] = []

    def walk(row: dict[str, Any] | None, name: str | None, level: int, seen: set[str]) -> None:
        if row is not None:
            out.append(dict(row, Member=("  " * (level - 1) + "+ " if level else "") + row["Member"]))
        for child in children.get(name, []):
            if child["Member"] not in seen:
                walk(child, child["Member"], level + 1, seen | {child["Member"]})
    walk(by_name.get(view.leader or ""), view.leader, 0, set())
    return out


def service_info(view: ClusterView) -> list[str]:
    """The lines under the table: maintenance mode, a scheduled switchover."""
    info = []
    if view.paused:
        info.append("Maintenance mode: on")
    failover = view.failover
    if failover is not None and failover.scheduled_at is not None:
        at = datetime.datetime.fromtimestamp(failover.scheduled_at).astimezone().isoformat()
        text = f"Switchover scheduled at: {at}"
        for label, value in (("from", failover.leader), ("to", failover.member)):
            if value:
                text += f"\n{label:>24}: {value}"
        info.append(text)
    return info


def render(view: ClusterView, scope: str, fmt: str, extended: bool = False) -> str:
    """The member list in patronictl 4.1's shape; ``fmt``: pretty, topology, tsv, json, yaml (yml)."""
    data = rows(view, scope)
    extra = _extra_columns(view, extended)
    for r in data:
        member = view.member(r["Member"])
        assert member is not None
        tags = member.data.get("tags")
        r["Pending restart"] = "*" if member.data.get("pending_restart") else ""
        r["Pending restart reason"] = _reason(member.data.get("pending_restart_reason"),
                                              fmt in ("pretty", "topology"))
        r["Scheduled restart"] = _scheduled_restart(member.data.get("scheduled_restart"))
        r["Tags"] = (dump_yaml(tags, fmt != "pretty").strip() if fmt in ("pretty", "topology", "tsv") else tags) \
            if tags else ""
    if fmt == "topology":
        data = topology_order(view, data)
    columns = SCRIPT_COLUMNS + extra
    table_rows = [[r[c] for c in columns] for r in data]
    title = f" Cluster: {_header(view, scope)} "
    if fmt not in ("pretty", "topology"):
        return tables.render(columns, table_rows, fmt, title=title)
    shown = ["Lag" if c in ("Receive Lag", "Replay Lag") else c for c in columns[1:]]
    text = tables.pretty(shown, [r[1:] for r in table_rows], ("Receive LSN", "Replay LSN", "Lag", "TL"), title)
    info = service_info(view)
    return text + ("\n " + "\n ".join(info) if info else "")


def render_table(view: ClusterView, scope: str) -> str:
    """The pretty member table with its footer (what `pgha up` prints)."""
    return render(view, scope, "pretty")
