"""`pgha pgbouncer`: the daemon beside PgBouncer that points its [databases] at the leader (src/pgha/pgbouncer/).

It reads the cluster from the DCS named by `-c FILE` / `--dcs-url`, as the other operator verbs do.
`register(cli)` adds it to the `pgha` group (one line in main.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

from pgha.cli.errors import CliError


@click.command("pgbouncer")
@click.argument("cluster_names", nargs=-1)
@click.option("--ini", "ini_path", required=True, type=click.Path(dir_okay=False),
              help="PgBouncer's configuration file: only the host/port of its [databases] entries are changed")
@click.option("--admin-dsn", default="host=127.0.0.1 port=6432 user=pgbouncer", show_default=True,
              help="libpq connection string of PgBouncer's admin console (dbname=pgbouncer is implied)")
@click.option("--database", "databases", multiple=True,
              help="only this [databases] entry (repeatable; default: every entry)")
@click.option("--pause-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="seconds PAUSE may wait for transactions in flight before it is given up")
@click.option("--max-pause", default=30.0, show_default=True, type=click.FloatRange(1, 3600),
              help="seconds clients may be held in a switchover before RESUME whatever happens")
@click.option("--kill-after", default=2.0, show_default=True, type=click.FloatRange(0, 600),
              help="seconds after a leader change before databases still connected to the old leader are KILLed")
@click.pass_obj
def pgbouncer(obj: dict, cluster_names: tuple[str, ...], ini_path: str, admin_dsn: str, databases: tuple[str, ...],
              pause_timeout: float, max_pause: float, kill_after: float) -> None:
    """Follow the leader key: rewrite PgBouncer's [databases], RELOAD, and PAUSE/RESUME around switchovers
    (SIGTERM stops it)."""
    from pgha.cli.ctl import ctl_target
    from pgha.dcs import dcs_from_config
    from pgha.pgbouncer.admin import Admin
    from pgha.pgbouncer.follow import Bouncer
    from pgha.pgbouncer.ini import IniError, database_entries, split_lines
    from pgha.pgbouncer.files import read_ini
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        entries = database_entries(split_lines(read_ini(ini_path)))
    except (OSError, IniError) as e:
        raise CliError(f"{ini_path}: {e}") from None
    if not entries:
        raise CliError(f"{ini_path} has no [databases] entry to point at the leader")
    if not os.access(os.path.dirname(os.path.realpath(ini_path)), os.W_OK):
        raise CliError(f"cannot write in the directory of {ini_path} (the file is replaced atomically)")
    target = ctl_target(obj)
    scope = cluster_names[0] if cluster_names else target.scope
    if not scope:
        raise CliError("no cluster name: give one, or a config file with `scope`")
    dcs = dcs_from_config(target.dcs, namespace=target.namespace, scope=scope, ttl=30)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        Bouncer(dcs, Admin(admin_dsn), ini_path, frozenset(databases) or None, pause_timeout=pause_timeout,
                max_pause=max_pause, kill_after=kill_after).run(stop)
    finally:
        dcs.close(revoke=False)


def register(group: click.Group) -> None:
    group.add_command(pgbouncer)
