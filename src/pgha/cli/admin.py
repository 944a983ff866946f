"""`pgha query`, `pgha remove`, `pgha version`, and `list`'s watch loop (patronictl's texts and prompts)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import click

from pgha.cli import tables
from pgha.cli.ctl import Ctl
from pgha.cli.errors import CliError
from pgha.cli.listing import render
from pgha.cli.members import members_with_role, timestamp
from pgha.core.model import ClusterView, Member
from pgha.ports import DcsError
from pgha.postgres.conf import parse_conn_url


def watching(w: bool, watch: float | None, clear: bool = True) -> Iterator[int]:
    """patronictl's ``watching``: once, or every ``watch`` seconds (2 with -W) until interrupted."""
    if w and not watch:
        watch = 2
    if watch is not None and watch <= 0:
        raise CliError(f"--watch: expected a positive number of seconds, got {watch}")
    if watch and clear:
        click.clear()
    yielded = time.monotonic()
    yield 0
    while watch:
        time.sleep(max(0.0, watch - (time.monotonic() - yielded)))
        if clear:
            click.clear()
        yielded = time.monotonic()
        yield 0


def do_list(ctl: Ctl, names: tuple[str, ...], fmt: str, extended: bool, ts: bool, w: bool,
            watch: float | None) -> None:
    scopes = list(names) or ([ctl.target.scope] if ctl.target.scope else [])
    if not scopes:
        raise CliError("no cluster name: give one, or a config file with `scope`")
    try:
        for _ in watching(w, watch):
            if ts:
                click.echo(timestamp(0))
            for scope in scopes:
                click.echo(render(ctl.view(scope), scope, fmt, extended))
    except KeyboardInterrupt:
        pass


def do_version(ctl: Ctl, cluster_name: str | None, member_names: tuple[str, ...]) -> None:
    from pgha import PATRONI_COMPAT_VERSION, __version__
    click.echo(f"pgha version {__version__} (patronictl {PATRONI_COMPAT_VERSION} compatible)")
    if not cluster_name:
        return
    click.echo("")
    view = ctl.view(cluster_name)
    for m in sorted(view.members, key=lambda m: m.name):
        if not m.api_url or (member_names and m.name not in member_names):
            continue
        try:
            data = ctl.patroni_status(m, timeout=5)
        except CliError as e:
            click.echo(f"{m.name}: failed to get version: {e}")
            continue
        agent = data.get("patroni", {}).get("version") if isinstance(data.get("patroni"), dict) else None
        pgha = m.data.get("pgha_version")
        pg = data.get("server_version")
        pg_text = f" PostgreSQL {format_pg_version(pg)}" if isinstance(pg, int) and pg else ""
        click.echo(f"{m.name}: {'pgha ' + str(pgha) + ', ' if pgha else ''}Patroni {agent}{pg_text}")


def format_pg_version(version: int) -> str:
    if version < 100000:
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return f"{version // 10000}.{version % 100}"


def do_remove(ctl: Ctl, cluster_name: str, fmt: str) -> None:
    view = ctl.view(cluster_name)
    if fmt in ("pretty", "tsv", "json", "yaml", "yml"):
        click.echo(render(view, cluster_name, fmt))
    if click.prompt("Please confirm the cluster name to remove", type=str) != cluster_name:
        raise CliError("Cluster names specified do not match")
    message = "Yes I am aware"
    if click.prompt(f'You are about to remove all information in DCS for {cluster_name}, please type: "{message}"',
                    type=str) != message:
        raise CliError(f'You did not exactly type "{message}"')
    if view.leader:
        if click.prompt("This cluster currently is healthy. Please specify the leader name to continue") \
                != view.leader:
            raise CliError("You did not specify the current leader of the cluster")
    try:
        ctl.dcs(cluster_name).delete_cluster(timeout=10)
    except DcsError as e:
        raise CliError(f"cannot remove the cluster from the DCS: {e}") from None


def _query_member(view: ClusterView, role: str | None, member: str | None) -> Member | None:
    if member is not None:
        if role is not None:
            raise CliError("--role and --member are mutually exclusive options")
        return view.member(member)
    found = members_with_role(view, role or "leader")
    return sorted(found, key=lambda m: m.name)[0] if found else None


def do_query(ctl: Ctl, cluster_name: str | None, role: str | None, member: str | None, w: bool,
             watch: float | None, delimiter: str, command: str | None, p_file: Any, password: bool,
             username: str | None, dbname: str | None, fmt: str) -> None:
    import psycopg
    if p_file is not None:
        if command is not None:
            raise CliError("--file and --command are mutually exclusive options")
        sql = p_file.read().decode("utf-8")
    elif command is None:
        raise CliError("You need to specify either --command or --file")
    else:
        sql = command
    secret = click.prompt("Password", hide_input=True, type=str) if password else None
    scope = ctl.scope(cluster_name)
    view = ctl.view(scope)
    chosen = _query_member(view, role, member)
    conn = None
    for _ in watching(w, watch, clear=False):
        if chosen is None:
            what = f"member {member}" if member else f"role {role or 'leader'!r}"
            rows, columns = [[timestamp(0), f"No connection to {what} is available"]], None
        else:
            try:
                if conn is None or conn.closed:
                    conn = _connect(ctl, chosen, username, secret, dbname)
                if role in ("replica", "standby", "primary", "standby-leader"):
                    in_recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]
                    if in_recovery != (role in ("replica", "standby", "standby-leader")):
                        raise CliError(f"member {chosen.name} does not run as {role}")
                cur = conn.execute(sql.encode("utf-8"))
                columns = [d.name for d in cur.description] if cur.description else None
                rows = [list(r) for r in cur.fetchall()] if cur.description else []
            except psycopg.Error as e:
                if conn is not None:
                    conn.close()
                message = (getattr(e, "sqlstate", None) or str(e)).replace("\n", " ")
                rows, columns = [[timestamp(0), f"ERROR, SQLSTATE: {message}"]], None
        click.echo(tables.render(columns or [], rows, fmt, delimiter=delimiter) if columns or rows else "")


def _connect(ctl: Ctl, member: Member, username: str | None, password: str | None, dbname: str | None):
    import psycopg
    address = parse_conn_url(member.conn_url)
    if address is None:
        raise CliError(f"member {member.name} publishes no usable conn_url")
    t = ctl.target
    params: dict[str, Any] = {"host": address[0], "port": address[1], "user": username or t.username,
                              "dbname": dbname or t.dbname, "connect_timeout": 5,
                              "application_name": "pgha ctl", "autocommit": True}
    if password is not None:
        params["password"] = password
    elif t.pgpass:
        params["passfile"] = t.pgpass
    return psycopg.connect(**{k: v for k, v in params.items() if v is not None})
