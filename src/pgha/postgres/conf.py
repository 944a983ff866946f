"""Pure renderers for the files pgha owns in the data directory: postgresql.conf, pg_hba.conf, the pgpass file,
and the libpq connection strings it builds.

Rules
1. pgha owns postgresql.conf: initdb's original is kept as postgresql.base.conf and included first, then the
   parameters pgha manages, so ours win. Edits to postgresql.conf are overwritten (as with Patroni).
2. Parameters come from, in rising precedence: pgha's defaults, the DCS dynamic config, the local YAML. A few
   are always pgha's (listen_addresses, port, cluster_name, recovery settings): they decide how the cluster is
   wired, so the YAML's postgresql.listen and the member names govern them.
3. Passwords never go into postgresql.conf: replication connections read them from the pgpass file (0600).
4. A replica's upstream member name is recorded in a marker comment so an agent that restarts knows whom its
   PostgreSQL follows without asking it.
5. synchronous_standby_names, once the agent set it (sync mode, core/sync.py), is pgha's: it wins over the
   parameters and is recorded in a marker comment (as JSON) so an agent that restarts renders it again instead
   of silently dropping it (a primary running asynchronously while the sync key says a standby has everything).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

UPSTREAM_MARKER = "# pgha-upstream: "
SYNC_MARKER = "# pgha-synchronous-standby-names: "
_SYNC_PARAM = "synchronous_standby_names"

# Patroni's defaults for the parameters replication needs (spec section 3, "GUCs").
DEFAULT_PARAMETERS: dict[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "max_connections": 100,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "max_worker_processes": 8,
    "max_locks_per_transaction": 64,
    "max_prepared_transactions": 0,
    "wal_keep_size": "128MB",
    "wal_log_hints": "on",
    "track_commit_timestamp": "off",
}

# Set from the topology, never from user parameters.
_MANAGED = {"listen_addresses", "port", "cluster_name", "primary_conninfo", "primary_slot_name",
            "recovery_target_timeline", "hba_file", "ident_file", "data_directory", "config_file"}


def quote_guc(value: Any) -> str:
    if isinstance(value, bool):
        value = "on" if value else "off"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def quote_conninfo(value: Any) -> str:
    text = str(value)
    if text and re.fullmatch(r"[A-Za-z0-9_./:@+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(**params: Any) -> str:
    return " ".join(f"{k}={quote_conninfo(v)}" for k, v in params.items() if v is not None and v != "")


def slot_name(member: str) -> str:
    """Patroni's slot naming: lower case, anything outside [a-z0-9_] becomes '_'."""
    return re.sub(r"[^a-z0-9_]", "_", member.lower())


def merge_parameters(dynamic: Mapping[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(DEFAULT_PARAMETERS)
    for source in (dynamic, local):
        for key, value in source.items():
            if key not in _MANAGED and value is not None:
                merged[key] = value
    if merged.get("wal_level") == "hot_standby":
        merged["wal_level"] = "replica"
    return merged


def render_postgresql_conf(parameters: Mapping[str, Any], *, listen_addresses: str, port: int, cluster_name: str,
                           standby: Mapping[str, Any] | None, upstream: str | None,
                           sync_standby_names: str | None = None) -> str:
    """``standby`` holds primary_conninfo / primary_slot_name when the node runs as a replica, else None;
    ``sync_standby_names`` is the value the agent set (None: the parameters' own, if any)."""
    if sync_standby_names is not None:
        parameters = {k: v for k, v in parameters.items() if str(k).lower() != _SYNC_PARAM}
    lines = [
        "# Written by pgha; edits here are overwritten. Set parameters in the YAML (postgresql.parameters)",
        "# or in the cluster's dynamic configuration instead.",
        "include_if_exists 'postgresql.base.conf'",
        f"listen_addresses = {quote_guc(listen_addresses)}",
        f"port = {int(port)}",
        f"cluster_name = {quote_guc(cluster_name)}",
    ]
    lines += [f"{key} = {quote_guc(value)}" for key, value in sorted(parameters.items())]
    lines += _sync_lines(sync_standby_names)
    if standby is not None:
        lines.append("recovery_target_timeline = 'latest'")
        lines += [f"{key} = {quote_guc(value)}" for key, value in sorted(standby.items()) if value]
        lines.append(UPSTREAM_MARKER + (upstream or ""))
    return "\n".join(lines) + "\n"


def _sync_lines(value: str | None) -> list[str]:
    if value is None:
        return []
    return [SYNC_MARKER + json.dumps(value), f"{_SYNC_PARAM} = {quote_guc(value)}"]


def sync_from_conf(text: str | None) -> str | None:
    """The synchronous_standby_names the agent set, from its marker (None: it never set one here)."""
    for line in (text or "").splitlines():
        if line.startswith(SYNC_MARKER):
            try:
                value = json.loads(line[len(SYNC_MARKER):])
            except ValueError:
                return None
            return value if isinstance(value, str) else None
    return None


def with_sync_standby_names(text: str, value: str | None, own: Any = None) -> str:
    """``text`` (a postgresql.conf pgha rendered) with synchronous_standby_names set to ``value``, everything else
    kept: the line and its marker replace any earlier ones, in place of the first or before the replica block.
    ``value`` None gives the parameter back to the configuration: ``own`` (the parameters' value; None: unset)
    without a marker."""
    lines = text.splitlines()
    kept: list[str] = []
    at: int | None = None
    for line in lines:
        if line.startswith(SYNC_MARKER) or re.match(rf"^\s*{_SYNC_PARAM}\s*=", line, re.IGNORECASE):
            at = len(kept) if at is None else at
            continue
        kept.append(line)
    if at is None:
        at = next((i for i, line in enumerate(kept)
                   if line.startswith(("recovery_target_timeline =", UPSTREAM_MARKER))), len(kept))
    kept[at:at] = _sync_lines(value) if value is not None else \
        ([f"{_SYNC_PARAM} = {quote_guc(own)}"] if own is not None else [])
    return "\n".join(kept) + "\n"


def upstream_from_conf(text: str | None) -> str | None:
    for line in (text or "").splitlines():
        if line.startswith(UPSTREAM_MARKER):
            return line[len(UPSTREAM_MARKER):].strip() or None
    return None


def render_pg_hba(lines: list[str] | tuple[str, ...]) -> str:
    return "# Written by pgha from the configuration's pg_hba; edits here are overwritten.\n" + \
        "".join(line.rstrip("\n") + "\n" for line in lines)


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def render_pgpass(entries: list[tuple[str, str]]) -> str:
    """One ``*:*:*:user:password`` line per (user, password) with a password."""
    return "".join(f"*:*:*:{_pgpass_field(user)}:{_pgpass_field(pw)}\n" for user, pw in entries if pw)


def parse_conn_url(url: str) -> tuple[str, int] | None:
    """``postgres://host:port/db`` (Patroni's member conn_url) to (host, port)."""
    match = re.match(r"^postgres(?:ql)?://(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?", url or "")
    if not match:
        return None
    host = match.group(1).strip("[]")
    return host, int(match.group(2) or 5432)
