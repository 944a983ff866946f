"""`pgha list`: the member table in patronictl 4.1's columns, as a table or JSON/YAML/TSV for scripts.

Pure rendering: rows are built from a ClusterView; nothing here reads the DCS.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from pgha.core.model import ClusterView, Member
from pgha.postgres.conf import parse_conn_url

COLUMNS = ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag", "Replay LSN", "Lag"]
SCRIPT_COLUMNS = ["Cluster", "Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN",
                  "Replay Lag"]


def format_lsn(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _lag_mb(leader_lsn: int | None, value: Any) -> int | str:
    if not isinstance(value, int) or leader_lsn is None:
        return ""
    return max(0, round((leader_lsn - value) / 1024 / 1024))


def _host(member: Member, show_port: bool) -> str:
    address = parse_conn_url(member.conn_url)
    if address is None:
        return ""
    return f"{address[0]}:{address[1]}" if show_port else address[0]


def role_name(view: ClusterView, member: Member) -> str:
    if member.name == view.leader:
        return "Standby Leader" if member.role == "standby_leader" else "Leader"
    return "Replica"


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


def render_table(view: ClusterView, scope: str) -> str:
    data = rows(view, scope)
    cells = [[str(r[k]) for k in ("Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag",
                                   "Replay LSN", "Replay Lag")] for r in data]
    widths = [max([len(COLUMNS[i])] + [len(c[i]) for c in cells]) for i in range(len(COLUMNS))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    title = f"+ Cluster: {_header(view, scope)} "
    top = title + sep[len(title):] if len(title) < len(sep) else title + "+"

    def line(values: list[str], numeric: set[int]) -> str:
        return "|" + "|".join(f" {v.rjust(w) if i in numeric else v.ljust(w)} "
                              for i, (v, w) in enumerate(zip(values, widths))) + "|"

    out = [top, line(COLUMNS, set()), sep] + [line(c, {4, 6, 8}) for c in cells] + [sep]
    if view.config and view.config.get("pause"):
        out.append(" Maintenance mode: on")
    return "\n".join(out)


def render(view: ClusterView, scope: str, fmt: str) -> str:
    if fmt == "pretty":
        return render_table(view, scope)
    data = [{k: r[k] for k in SCRIPT_COLUMNS} for r in rows(view, scope)]
    if fmt == "json":
        return json.dumps(data)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    return "\n".join(["\t".join(SCRIPT_COLUMNS)] + ["\t".join(str(r[k]) for k in SCRIPT_COLUMNS) for r in data])
