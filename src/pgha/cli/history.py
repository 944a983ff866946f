"""`pgha history` (the DCS history key, as patronictl prints it) and `pgha explain MEMBER` (why that node did
what it did: its last distinct decisions, each with its reason code)."""

from __future__ import annotations

import json
from typing import Any

from pgha.cli import tables
from pgha.cli.errors import CliError
from pgha.cli.listing import format_lsn
from pgha.core.model import ClusterView

HISTORY_COLUMNS = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]


def history_rows(view: ClusterView) -> list[list[Any]]:
    rows = []
    for entry in view.history:
        entry = list(entry) + [""] * (5 - len(entry))
        rows.append([entry[0], entry[1], entry[2], entry[3], entry[4]])
    return rows


def _table(columns: list[str], rows: list[list[str]], title: str = "") -> str:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values: list[str]) -> str:
        return "|" + "|".join(f" {v.ljust(w)} " for v, w in zip(values, widths)) + "|"
    top = sep if not title else ("+ " + title + " ").ljust(len(sep) - 1, "-") + "+"
    return "\n".join([top, line(columns), sep] + [line(r) for r in rows] + [sep])


def render_history(view: ClusterView, fmt: str) -> str:
    """patronictl's ``history``: pretty (TL and LSN right-aligned), tsv, json or yaml."""
    rows = history_rows(view)
    if fmt == "pretty":
        rows = [[r[0], r[1], r[2], r[3] or "", r[4] or ""] for r in rows]
    return tables.render(HISTORY_COLUMNS, rows, fmt, right=("TL", "LSN"))


def render_explain(view: ClusterView, member_name: str, fmt: str) -> str:
    member = view.member(member_name)
    if member is None:
        raise CliError(f"member {member_name} is not in the cluster (it publishes while its agent runs)")
    decisions = member.data.get("pgha_decisions")
    if not isinstance(decisions, list):
        raise CliError(f"member {member_name} publishes no decisions (is it a pgha agent?)")
    if fmt == "json":
        return json.dumps({"member": member_name, "leader": view.leader, "decisions": decisions})
    role = "Leader" if member_name == view.leader else member.role
    head = (f"{member_name}: {role}, {member.state}, timeline {member.timeline}, "
            f"WAL {format_lsn(member.xlog_location) or 'unknown'}; leader: {view.leader or 'none'}")
    rows = [[str(d[0]), str(d[1]), str(d[2])] for d in decisions if isinstance(d, list) and len(d) == 3]
    return head + "\n" + _table(["Time", "Reason", "Decision"], rows)
