"""PgBouncer in front of a local cluster (`pgha up --pgbouncer`): its files, its process, and the follower's.

Rules
1. PgBouncer refuses to run as root: it runs as PostgreSQL's account (osuser.py), in the foreground (no ``-d``)
   so the PID recorded is the one to end; its output goes to a log file opened by the caller. The follower
   (`pgha pgbouncer`) runs as the invoking user, like `pgha router`. Both detached, ended by PID.
2. The auth file holds, in clear, the passwords PgBouncer needs itself: the auth user's (``auth_user``, to run
   ``auth_query``: every other role is looked up in PostgreSQL, authquery.py) and the admin console's user's. 0600,
   owned by PgBouncer's account. PgBouncer speaks SCRAM both to clients and to PostgreSQL.
3. The configuration is generated once; afterwards only the follower changes it (its [databases] section).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from pgha.osuser import Account
from pgha.pgbouncer.authquery import AUTH_QUERY, AUTH_USER, check_name

DATABASES = ("postgres",)  # named entries; every other database name goes through the `*` entry


def pgbouncer_binary() -> str | None:
    """``PGHA_PGBOUNCER``, else ``pgbouncer`` on PATH, else /usr/sbin/pgbouncer (Debian's)."""
    for candidate in (os.environ.get("PGHA_PGBOUNCER"), shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def render_ini(host: str, port: int, listen_port: int, auth_file: str, admin_user: str = "postgres",
               auth_user: str | None = AUTH_USER) -> str:
    """``auth_user``: the role PgBouncer logs in as to look every other role up (auth_query); None: the auth file
    lists every role that may log in."""
    auth = "" if auth_user is None else \
        f"auth_user = {check_name(auth_user, 'auth_user')}\nauth_query = {AUTH_QUERY}\n"
    entries = "".join(f"{db} = host={host} port={port} dbname={db}\n" for db in DATABASES)
    return (
        "; PgBouncer for `pgha up --pgbouncer`. `pgha pgbouncer` keeps the host/port of the [databases] entries\n"
        "; on the leader; everything else in this file is left as it is.\n"
        "[databases]\n"
        f"{entries}"
        f"* = host={host} port={port}\n"
        "\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen_port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {auth_file}\n"
        f"{auth}"
        f"admin_users = {admin_user}\n"
        "pool_mode = transaction\n"
        "max_client_conn = 200\n"
        "default_pool_size = 20\n"
        "ignore_startup_parameters = extra_float_digits\n"
        "; a failed server login is retried after 1 s (PgBouncer's default is 15 s: too long next to a failover)\n"
        "server_login_retry = 1\n"
        "server_connect_timeout = 3\n"
        "query_wait_timeout = 60\n"
    )


def render_auth_file(users: list[tuple[str, str]]) -> str:
    """``"user" "password"`` lines; a ``"`` inside is doubled."""
    return "".join('"{}" "{}"\n'.format(u.replace('"', '""'), p.replace('"', '""')) for u, p in users)


_AUTH_LINE = re.compile(r'\s*"((?:[^"]|"")*)"\s+"((?:[^"]|"")*)"')


def parse_auth_file(text: str) -> dict[str, str]:
    """``render_auth_file`` read back (user -> password); lines that are not ``"user" "password"`` are skipped."""
    users = {}
    for line in text.splitlines():
        m = _AUTH_LINE.match(line)
        if m:
            users[m.group(1).replace('""', '"')] = m.group(2).replace('""', '"')
    return users


def start_pgbouncer(binary: str, ini: str, log_path: str, account: Account) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([binary, ini], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=account.env(), cwd="/",
                                **account.subprocess_kwargs())


def start_follower(ctl_config: str, ini: str, admin_dsn: str, log_path: str) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "pgha", "-c", ctl_config, "pgbouncer", "--ini", ini,
                                 "--admin-dsn", admin_dsn], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
