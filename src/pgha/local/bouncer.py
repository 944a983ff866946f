"""PgBouncer and its follower for a local cluster (`pgha up --pgbouncer`), started after routing.

Moved out of cluster.py (whose rules 1 and 6 apply): PgBouncer runs as PostgreSQL's account, its follower
`pgha pgbouncer` as pgha; both are recorded by PID in DIR/state.json and ended by that PID (``stop``); every wait
is bounded; PgBouncer missing is an error, as it was asked for.

Authentication (pgha/pgbouncer/authquery.py): the role ``pgbouncer`` with a generated password, the function
``pgbouncer.get_auth`` on the leader, and ``auth_user``/``auth_query`` in pgbouncer.ini, so any role created in
PostgreSQL later logs in through PgBouncer. The auth file holds only the auth user (its password is kept there,
and reused by the next ``up``) and the superuser (the admin console's user).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from typing import TYPE_CHECKING, Any

from pgha.core.model import ClusterView
from pgha.fsutil import read_text, write_atomic
from pgha.pgbouncer import authquery
from pgha.pgbouncer.authquery import AUTH_USER
from pgha.procutil import pid_alive, stop_pid

if TYPE_CHECKING:
    from pgha.local.cluster import LocalCluster


def start(cluster: "LocalCluster", view: ClusterView, state: dict[str, Any]) -> None:
    from pgha.local.cluster import UpError
    from pgha.pgbouncer import process as bouncer
    from pgha.router import process
    from pgha.router.haproxy_config import servers_from_view
    layout = cluster.layout
    binary = bouncer.pgbouncer_binary()
    if binary is None:
        raise UpError("PgBouncer is not installed (no pgbouncer binary; Debian: apt-get install pgbouncer)")
    state["pgbouncer"] = True
    cluster._save_state(state)
    leader = next((s for s in servers_from_view(view) if s.name == view.leader), None)
    if leader is None:
        raise UpError(f"the leader {view.leader} has no usable conn_url")
    password = cluster._secrets()["superuser"]
    auth_password = _auth_user_password(layout.pgbouncer_auth_file)
    write_atomic(layout.pgbouncer_auth_file, bouncer.render_auth_file([("postgres", password),
                                                                       (AUTH_USER, auth_password)]),
                 mode=0o600, chown=cluster.account.chown)
    _ensure_auth_query(cluster, view, password, auth_password)
    if not os.path.exists(layout.pgbouncer_ini):  # rule 3 of pgbouncer/process.py: written once
        write_atomic(layout.pgbouncer_ini, bouncer.render_ini(leader.host, leader.port, layout.pgbouncer_port,
                                                              layout.pgbouncer_auth_file), mode=0o644)
    elif "auth_query" not in (read_text(layout.pgbouncer_ini) or ""):
        cluster.say(f"note: {layout.pgbouncer_ini} predates auth_query (only the roles of its auth file log in); "
                    "remove it while PgBouncer is down to have it written again")
    log_path = layout.path("pgbouncer.log")
    admin_dsn = (f"host=127.0.0.1 port={layout.pgbouncer_port} user=postgres "
                 f"passfile={layout.client_pgpass} connect_timeout=3")
    try:
        if not pid_alive(state.get("pgbouncer_pid")):
            proc = bouncer.start_pgbouncer(binary, layout.pgbouncer_ini, log_path, cluster.account)
            state["pgbouncer_pid"] = proc.pid
            cluster._save_state(state)
        process.wait_until(lambda: _admin_answers(admin_dsn), 15, "PgBouncer's admin console",
                           lambda: pid_alive(state["pgbouncer_pid"]), log_path)
        if not pid_alive(state.get("pgbouncer_follower_pid")):
            proc = bouncer.start_follower(layout.ctl_config, layout.pgbouncer_ini, admin_dsn,
                                          layout.path("pgbouncer-follower.log"))
            state["pgbouncer_follower_pid"] = proc.pid
            cluster._save_state(state)
        url = (f"postgres://postgres@127.0.0.1:{layout.pgbouncer_port}/postgres?passfile={layout.client_pgpass}")
        process.wait_until(lambda: _reaches_primary(url, leader.port), 30,
                           f"PgBouncer -> the leader {view.leader}",
                           lambda: pid_alive(state["pgbouncer_follower_pid"]),
                           layout.path("pgbouncer-follower.log"))
    except (process.RouterError, OSError, subprocess.SubprocessError) as e:
        raise UpError(f"pgbouncer: {e}") from None
    cluster.say(f"PgBouncer (transaction pooling) -> the leader: psql '{url}'")


def _auth_user_password(auth_file: str) -> str:
    """The auth user's password the auth file already holds (a cluster started before), else a new one."""
    from pgha.pgbouncer.process import parse_auth_file
    try:
        with open(auth_file) as f:
            found = parse_auth_file(f.read()).get(AUTH_USER)
    except FileNotFoundError:
        found = None
    return found or secrets.token_urlsafe(18)


def _ensure_auth_query(cluster: "LocalCluster", view: ClusterView, superuser_password: str,
                       auth_password: str, timeout: float = 30.0) -> None:
    """The role, schema and function on the leader (authquery.ensure), retried on the current leader until a
    deadline: the leader may change under `up`."""
    from pgha.local.cluster import UpError
    from pgha.router.haproxy_config import servers_from_view
    deadline, error = time.monotonic() + timeout, ""
    while True:
        leader = next((s for s in servers_from_view(view) if s.name == view.leader), None) if view else None
        if leader is not None:
            try:
                authquery.ensure({"host": leader.host, "port": leader.port, "user": "postgres",
                                  "password": superuser_password}, auth_password)
                return
            except authquery.AuthSetupError as e:
                error = str(e)
        if time.monotonic() > deadline:
            raise UpError(f"pgbouncer: {error or 'no leader'}")
        time.sleep(0.5)
        dcs = cluster.dcs()
        try:
            view = cluster.snapshot(dcs)
        finally:
            dcs.close(revoke=False)


def stop(state: dict[str, Any]) -> list[str]:
    stopped = []
    for key, what in (("pgbouncer_follower_pid", "pgbouncer follower"), ("pgbouncer_pid", "pgbouncer")):
        if pid_alive(state.get(key)):
            stop_pid(state[key], timeout=10)
            stopped.append(what)
        state.pop(key, None)
    return stopped


def _admin_answers(dsn: str) -> bool:
    from pgha.pgbouncer.admin import Admin, AdminError
    admin = Admin(dsn, timeout=2)
    try:
        return bool(admin.command("SHOW VERSION"))
    except AdminError:
        return False
    finally:
        admin.close()


def _reaches_primary(url: str, port: int) -> bool:
    import psycopg
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()
            return row == (False, port)
    except psycopg.Error:
        return False
