"""patronictl's verbs as `pgha` subcommands, with patronictl's arguments and flags (spec section 5).

Thin click definitions: each one hands its arguments to the module that does the work (members.py, switch.py,
dynconf.py, admin.py, listing.py). ``register(cli)`` adds them to the `pgha` group.
"""

from __future__ import annotations

import click

from pgha.cli.ctl import Ctl
from pgha.cli.members import option_force, role_choice

FORMATS = click.Choice(["pretty", "tsv", "json", "yaml", "yml"])
option_format = click.option("--format", "-f", "fmt", help="Output format", default="pretty", type=FORMATS)
option_watch = click.option("-W", "w", is_flag=True, help="Auto update the screen every 2 seconds")
option_watchrefresh = click.option("-w", "--watch", type=float, help="Auto update the screen every X seconds")
arg_cluster_name = click.argument("cluster_name", required=False)


@click.command("list", help="List the members of a cluster: roles, states, lag")
@click.argument("cluster_names", nargs=-1)
@click.option("--extended", "-e", is_flag=True, help="Show some extra information")
@click.option("--timestamp", "-t", "ts", is_flag=True, help="Print timestamp")
@option_format
@option_watch
@option_watchrefresh
@click.pass_obj
def list_(obj: dict, cluster_names: tuple[str, ...], fmt: str, extended: bool, ts: bool, w: bool,
          watch: float | None) -> None:
    from pgha.cli.admin import do_list
    do_list(Ctl(obj), cluster_names, fmt, extended, ts, w, watch)


@click.command(help="Prints ASCII topology for given cluster")
@click.argument("cluster_names", nargs=-1)
@option_watch
@option_watchrefresh
@click.pass_obj
def topology(obj: dict, cluster_names: tuple[str, ...], w: bool, watch: float | None) -> None:
    from pgha.cli.admin import do_list
    do_list(Ctl(obj), cluster_names, "topology", False, False, w, watch)


@click.command(help="Switchover to a replica")
@arg_cluster_name
@click.option("--leader", "--primary", "leader", default=None, help="The name of the current leader")
@click.option("--candidate", default=None, help="The name of the candidate")
@click.option("--scheduled", default=None,
              help="Timestamp of a scheduled switchover in unambiguous format (e.g. ISO 8601)")
@option_force
@click.pass_obj
def switchover(obj: dict, cluster_name: str | None, leader: str | None, candidate: str | None, scheduled: str | None,
               force: bool) -> None:
    from pgha.cli.switch import do_failover
    do_failover(Ctl(obj), "switchover", cluster_name, candidate, force, leader, scheduled)


@click.command(help="Failover to a replica")
@arg_cluster_name
@click.option("--candidate", default=None, help="The name of the candidate")
@option_force
@click.pass_obj
def failover(obj: dict, cluster_name: str | None, candidate: str | None, force: bool) -> None:
    from pgha.cli.switch import do_failover
    do_failover(Ctl(obj), "failover", cluster_name, candidate, force)


@click.command(help="Restart cluster member")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@click.option("--role", "-r", type=role_choice, default="any", help="Restart only members with this role")
@click.option("--any", "p_any", is_flag=True, help="Restart a single member only")
@click.option("--scheduled", default=None,
              help="Timestamp of a scheduled restart in unambiguous format (e.g. ISO 8601)")
@click.option("--pg-version", "version", default=None,
              help="Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)")
@click.option("--pending", is_flag=True, help="Restart if pending")
@click.option("--timeout", help="Return error and fail over if necessary when restarting takes longer than this.")
@option_force
@click.pass_obj
def restart(obj: dict, cluster_name: str, member_names: tuple[str, ...], role: str, p_any: bool,
            scheduled: str | None, version: str | None, pending: bool, timeout: str | None, force: bool) -> None:
    from pgha.cli.members import do_restart
    do_restart(Ctl(obj), cluster_name, member_names, role, p_any, scheduled, version, pending, timeout, force)


@click.command(help="Reload cluster member configuration")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@click.option("--role", "-r", type=role_choice, default="any", help="Reload only members with this role")
@option_force
@click.pass_obj
def reload(obj: dict, cluster_name: str, member_names: tuple[str, ...], role: str, force: bool) -> None:
    from pgha.cli.members import do_reload
    do_reload(Ctl(obj), cluster_name, member_names, role, force)


@click.command(help="Reinitialize cluster member")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@option_force
@click.option("--from-leader", is_flag=True, help="Get basebackup from leader")
@click.option("--wait", is_flag=True, help="Wait until reinitialization completes")
@click.pass_obj
def reinit(obj: dict, cluster_name: str, member_names: tuple[str, ...], force: bool, from_leader: bool,
           wait: bool) -> None:
    from pgha.cli.members import do_reinit
    do_reinit(Ctl(obj), cluster_name, member_names, force, from_leader, wait)


@click.command(help="Discard scheduled events")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@click.argument("target", type=click.Choice(["restart", "switchover"]))
@click.option("--role", "-r", type=role_choice, default="any", help="Flush only members with this role")
@option_force
@click.pass_obj
def flush(obj: dict, cluster_name: str, member_names: tuple[str, ...], target: str, role: str,
          force: bool) -> None:
    from pgha.cli.members import do_flush
    do_flush(Ctl(obj), cluster_name, member_names, target, role, force)


@click.command(help="Disable auto failover")
@arg_cluster_name
@click.option("--wait", is_flag=True, help="Wait until pause is applied on all nodes")
@click.pass_obj
def pause(obj: dict, cluster_name: str | None, wait: bool) -> None:
    from pgha.cli.dynconf import do_toggle_pause
    do_toggle_pause(Ctl(obj), cluster_name, True, wait)


@click.command(help="Resume auto failover")
@arg_cluster_name
@click.option("--wait", is_flag=True, help="Wait until pause is cleared on all nodes")
@click.pass_obj
def resume(obj: dict, cluster_name: str | None, wait: bool) -> None:
    from pgha.cli.dynconf import do_toggle_pause
    do_toggle_pause(Ctl(obj), cluster_name, False, wait)


@click.command("edit-config", help="Edit cluster configuration")
@arg_cluster_name
@click.option("--quiet", "-q", is_flag=True, help="Do not show changes")
@click.option("--set", "-s", "kvpairs", multiple=True,
              help="Set specific configuration value. Can be specified multiple times")
@click.option("--pg", "-p", "pgkvpairs", multiple=True,
              help="Set specific PostgreSQL parameter value. Shorthand for -s postgresql.parameters. "
                   "Can be specified multiple times")
@click.option("--apply", "apply_filename", help="Apply configuration from file. Use - for stdin.")
@click.option("--replace", "replace_filename",
              help="Apply configuration from file, replacing existing configuration. Use - for stdin.")
@option_force
@click.pass_obj
def edit_config(obj: dict, cluster_name: str | None, quiet: bool, kvpairs: tuple[str, ...],
                pgkvpairs: tuple[str, ...], apply_filename: str | None, replace_filename: str | None,
                force: bool) -> None:
    from pgha.cli.dynconf import do_edit_config
    do_edit_config(Ctl(obj), cluster_name, force, quiet, kvpairs, pgkvpairs, apply_filename, replace_filename)


@click.command("show-config", help="Show cluster configuration")
@arg_cluster_name
@click.pass_obj
def show_config(obj: dict, cluster_name: str | None) -> None:
    from pgha.cli.dynconf import do_show_config
    do_show_config(Ctl(obj), cluster_name)


@click.command(help="Query a PostgreSQL member")
@arg_cluster_name
@click.option("--format", "fmt", default="tsv", type=FORMATS, help="Output format (pretty, tsv, json, yaml)")
@click.option("--file", "-f", "p_file", type=click.File("rb"), help="Execute the SQL commands from this file")
@click.option("--password", is_flag=True, help="force password prompt")
@click.option("-U", "--username", type=str, help="database user name")
@option_watch
@option_watchrefresh
@click.option("--role", "-r", type=role_choice, default=None, help="The role of the query")
@click.option("--member", "-m", type=str, help="Query a specific member")
@click.option("--delimiter", default="\t", help="The column delimiter")
@click.option("--command", "-c", help="The SQL commands to execute")
@click.option("-d", "--dbname", type=str, help="database name to connect to")
@click.pass_obj
def query(obj: dict, cluster_name: str | None, fmt: str, p_file, password: bool, username: str | None, w: bool,
          watch: float | None, role: str | None, member: str | None, delimiter: str, command: str | None,
          dbname: str | None) -> None:
    from pgha.cli.admin import do_query
    do_query(Ctl(obj), cluster_name, role, member, w, watch, delimiter, command, p_file, password, username, dbname,
             fmt)


@click.command(help="Remove cluster from DCS")
@click.argument("cluster_name")
@option_format
@click.pass_obj
def remove(obj: dict, cluster_name: str, fmt: str) -> None:
    from pgha.cli.admin import do_remove
    do_remove(Ctl(obj), cluster_name, fmt)


@click.command(help="Output version of pgha and of the cluster's running agents")
@click.argument("cluster_name", required=False)
@click.argument("member_names", nargs=-1)
@click.pass_obj
def version(obj: dict, cluster_name: str | None, member_names: tuple[str, ...]) -> None:
    from pgha.cli.admin import do_version
    if cluster_name is None:
        from pgha import PATRONI_COMPAT_VERSION, __version__
        click.echo(f"pgha version {__version__} (patronictl {PATRONI_COMPAT_VERSION} compatible)")
        return
    do_version(Ctl(obj), cluster_name, member_names)


@click.command(help="Show the history of failovers/switchovers")
@arg_cluster_name
@option_format
@click.pass_obj
def history(obj: dict, cluster_name: str | None, fmt: str) -> None:
    from pgha.cli.history import render_history
    ctl = Ctl(obj)
    scope = ctl.scope(cluster_name)
    click.echo(render_history(ctl.view(scope), fmt))


COMMANDS = (list_, topology, switchover, failover, restart, reload, reinit, flush, pause, resume, edit_config,
            show_config, query, remove, version, history)


def register(cli: click.Group) -> None:
    for command in COMMANDS:
        cli.add_command(command)
