"""PgBouncer in front of a local cluster (`pgha up --pgbouncer`): its files, its process, and the follower's.

Rules
1. PgBouncer refuses to run as root: it runs as PostgreSQL's account (osuser.py), in the foreground (no ``-d``)
   so the PID recorded is the one to end; its output goes to a log file opened by the caller. The follower
   (`pgha pgbouncer`) runs as the invoking user, like `pgha router`. Both detached, ended by PID.
2. The auth file holds the superuser's password in clear (PgBouncer then speaks SCRAM both to clients and to
   PostgreSQL): 0600, owned by PgBouncer's account.
3. The configuration is generated once; afterwards only the follower changes it (its [databases] section).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from pgha.osuser import Account

DATABASES = ("postgres",)  # named entries; every other database name goes through the `*` entry


def pgbouncer_binary() -> str | None:
    """``PGHA_PGBOUNCER``, else ``pgbouncer`` on PATH, else /usr/sbin/pgbouncer (Debian's)."""
    for candidate in (os.environ.get("PGHA_PGBOUNCER"), shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def render_ini(host: str, port: int, listen_port: int, auth_file: str, admin_user: str = "postgres") -> str:
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
