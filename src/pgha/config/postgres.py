"""Reading the ``postgresql`` section: addresses, data directory, binaries, roles and local settings.

Rules
1. Required: ``listen`` (``h1,h2:port``; the port defaults to 5432 as in Patroni), ``connect_address``
   (``host:port``, not a wildcard), ``data_dir`` and the replication role's ``username``.
2. The superuser defaults to ``postgres`` (no password) when not configured; ``rewind`` is optional.
3. Patroni's old layout is read too: without ``authentication``, roles come from ``postgresql.replication`` and
   ``postgresql.superuser``, ``use_pg_rewind`` becomes "is there a ``pg_rewind`` section", and ``pg_rewind``
   stands in for a missing superuser.
4. ``bin_dir`` absent or empty: the real directory of ``pg_ctl`` found on ``PATH``, else the newest
   ``/usr/lib/postgresql/<version>/bin``, else ``""`` (not an error here: the agent reports it when it needs it).
5. ``pgpass`` defaults to ``/tmp/pgpass_<name>``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from typing import Any, Mapping

from pgha.config.read import Reader, join
from pgha.config.schema import Auth, Postgresql
from pgha.config.sections import BASEBACKUP_FORBIDDEN, render_options
from pgha.config.sources import AUTH_PARAMS
from pgha.core.dynamic import freeze

CALLBACK_EVENTS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")
_PG_LIB_GLOB = "/usr/lib/postgresql/*/bin"


def read_postgresql(r: Reader, raw: Mapping[str, Any], name: str, env: Mapping[str, str]) -> Postgresql | None:
    pg = r.section(raw, "postgresql")
    listen = r.address(pg, "listen", "postgresql", connect=False, default_port=5432)
    connect = r.address(pg, "connect_address", "postgresql", connect=True)
    data_dir = r.string(pg, "data_dir", "postgresql", required=True, what="a path")
    roles = _read_roles(r, pg)
    local = _read_local(r, pg)
    bin_dir = r.string(pg, "bin_dir", "postgresql", what="a path")
    pgpass = r.string(pg, "pgpass", "postgresql", what="a path")
    if listen is None or connect is None or data_dir is None or roles is None:
        return None
    return Postgresql(
        listen=pg["listen"].strip(), listen_addresses=listen[0], port=listen[1],
        connect_address=pg["connect_address"].strip(), data_dir=data_dir,
        bin_dir=bin_dir or find_bin_dir(env), pgpass=pgpass or f"/tmp/pgpass_{name}", **roles, **local)


def _read_local(r: Reader, pg: Mapping[str, Any]) -> dict[str, Any]:
    base = "postgresql"
    params = r.section(pg, "parameters", base)
    methods = r.str_list(pg, "create_replica_methods", base, "a list of method names (strings)")
    return {
        "config_dir": r.string(pg, "config_dir", base, what="a path"),
        "parameters": freeze(dict(params)),
        "pg_hba": r.str_list(pg, "pg_hba", base, "a list of pg_hba.conf lines (strings)"),
        "use_unix_socket": bool(r.boolean(pg, "use_unix_socket", base, False)),
        "database": r.string(pg, "database", base, default="postgres") or "postgres",
        "pg_ctl_timeout": r.integer(pg, "pg_ctl_timeout", base, default=60, minimum=0),
        "remove_data_directory_on_rewind_failure":
            bool(r.boolean(pg, "remove_data_directory_on_rewind_failure", base, False)),
        "remove_data_directory_on_diverged_timelines":
            bool(r.boolean(pg, "remove_data_directory_on_diverged_timelines", base, False)),
        "callbacks": _read_callbacks(r, pg),
        "create_replica_methods": methods or ("basebackup",),
        "basebackup": render_options(r, pg.get("basebackup"), "postgresql.basebackup", BASEBACKUP_FORBIDDEN),
    }


def _read_callbacks(r: Reader, pg: Mapping[str, Any]) -> Mapping[str, str]:
    callbacks = r.section(pg, "callbacks", "postgresql")
    kept: dict[str, str] = {}
    for event, command in callbacks.items():
        if event not in CALLBACK_EVENTS or command is None or command == "":
            continue  # unknown events are listed in the "unknown keys" warning
        if isinstance(command, str):
            kept[str(event)] = command
        else:
            r.error(f"postgresql.callbacks.{event}", "expected a command line (string)", command)
    return freeze(kept)


# --- roles -----------------------------------------------------------------------------------------------------

def _read_roles(r: Reader, pg: Mapping[str, Any]) -> dict[str, Any] | None:
    """superuser, replication, rewind and use_pg_rewind, from ``authentication`` or Patroni's old layout."""
    legacy = "authentication" not in pg
    if legacy:
        roles = {k: (pg[k], join("postgresql", k)) for k in ("replication", "superuser") if k in pg}
        use_pg_rewind = "pg_rewind" in pg
    else:
        auth = r.section(pg, "authentication", "postgresql")
        base = "postgresql.authentication"
        roles = {k: (auth[k], join(base, k)) for k in ("replication", "superuser", "rewind") if k in auth}
        use_pg_rewind = r.boolean(pg, "use_pg_rewind", "postgresql", None)
    if "superuser" not in roles and "pg_rewind" in pg:
        roles["superuser"] = (pg["pg_rewind"], "postgresql.pg_rewind")
    base = "postgresql" if legacy else "postgresql.authentication"
    replication = _read_auth(r, roles.get("replication"), join(base, "replication"), None)
    superuser = _read_auth(r, roles.get("superuser"), join(base, "superuser"), "postgres")
    rewind = _read_auth(r, roles["rewind"], roles["rewind"][1], None) if "rewind" in roles else None
    if replication is None or superuser is None:
        return None
    return {"replication": replication, "superuser": superuser, "rewind": rewind, "use_pg_rewind": use_pg_rewind}


def _read_auth(r: Reader, entry: tuple[Any, str] | None, path: str, default_user: str | None) -> Auth | None:
    if entry is None or entry[0] is None:
        if default_user is not None:
            return Auth(username=default_user)
        r.error(join(path, "username"), "required, expected a role name (string)")
        return None
    value, path = entry
    if not isinstance(value, Mapping):
        r.error(path, "expected a mapping with username and password", value)
        return None
    required = default_user is None
    username = r.string(value, "username", path, required=required, default=default_user, what="a role name")
    fields = {k: r.string(value, k, path, what=_what(k)) for k in AUTH_PARAMS[1:]}
    return Auth(username=username, **fields) if username else None


def _what(key: str) -> str:
    return "a string (quote it in YAML if it looks like a number)" if "password" in key else "a string"


# --- binaries --------------------------------------------------------------------------------------------------

def find_bin_dir(env: Mapping[str, str]) -> str:
    """Where the PostgreSQL programs are: pg_ctl's real directory on PATH, else the newest Debian-style one."""
    search = env.get("PATH") if "PATH" in env else os.environ.get("PATH", os.defpath)
    found = shutil.which("pg_ctl", path=search)
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = [d for d in glob.glob(_PG_LIB_GLOB) if os.path.isfile(os.path.join(d, "pg_ctl"))]
    return max(candidates, key=_version_key, default="")


def _version_key(path: str) -> tuple[int, ...]:
    version = os.path.basename(os.path.dirname(path))
    return tuple(int(n) for n in re.findall(r"\d+", version)) or (0,)
