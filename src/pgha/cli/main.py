"""The `pgha` command line: one group, one small function per verb.

Operator verbs (list, dsn, ...) read the cluster from the DCS named by `-c FILE` (a Patroni or pgha YAML file,
or the DIR/pgha.yml that `pgha up` writes) or `--dcs-url`; the agent runs with `pgha run CONFIG`.
Failures print `Error: <reason>` on stderr and exit 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from pgha import __version__
from pgha.cli.errors import CliError
from pgha.cli.sim import sim
from pgha.cli.validate import validate


def _default_dir() -> str:
    import getpass
    return os.environ.get("PGHA_DIR") or f"/tmp/pgha-{getpass.getuser()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config-file", "config_file", envvar="PATRONICTL_CONFIG_FILE",
              help="cluster config: a Patroni/pgha YAML file, or DIR/pgha.yml written by `pgha up`")
@click.option("-d", "--dcs-url", "--dcs", "dcs_url", envvar="DCS_URL", help="etcd3://host:port/namespace")
@click.option("-k", "--insecure", is_flag=True, help="Allow connections to SSL sites without certs")
@click.version_option(__version__, prog_name="pgha")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, dcs_url: str | None, insecure: bool) -> None:
    """PostgreSQL high availability, compatible with Patroni."""
    ctx.obj = {"config_file": config_file, "dcs_url": dcs_url, "insecure": insecure}
    if config_file:  # DIR/pgha.yml of a `pgha up --netns` cluster: into its hub namespace, where it is reachable
        from pgha.local.netns import NetnsError, enter_for_config
        try:
            enter_for_config(config_file)
        except NetnsError as e:
            raise CliError(str(e)) from None


cli.add_command(validate)
cli.add_command(sim)
__import__("pgha.cli.router", fromlist=["register"]).register(cli)  # haproxy-config, router
__import__("pgha.cli.pgbouncer", fromlist=["register"]).register(cli)  # pgbouncer (follows the leader)
__import__("pgha.cli.etcd_v2_view", fromlist=["register"]).register(cli)  # etcd-v2-view (vip-manager 1.x)
__import__("pgha.cli.commands", fromlist=["register"]).register(cli)  # patronictl's verbs: list, switchover, ...
cli.add_command(__import__("pgha.cli.verify", fromlist=["verify"]).verify)  # pgha verify
cli.add_command(__import__("pgha.cli.check", fromlist=["check"]).check)  # pgha check primary|replica


@cli.command()
@click.argument("config")
def run(config: str) -> None:
    """Run the agent for one node, in the foreground (SIGTERM stops it cleanly)."""
    from pgha.agent.loop import Agent
    from pgha.config import ConfigError, load_config
    from pgha.dcs import dcs_from_config
    from pgha.osuser import AccountError, postgres_account

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        cfg, warnings = load_config(config)
        account = postgres_account()
    except (ConfigError, AccountError) as e:
        raise CliError(str(e)) from None
    for warning in warnings:
        logging.warning("%s", warning)
    dcs = dcs_from_config(cfg.dcs, namespace=cfg.namespace, scope=cfg.scope, ttl=30)
    from pgha.agent.fencer import Fencer
    from pgha.agent.watchdog import Watchdog
    from pgha.postgres.node import PostgresNode
    wd = cfg.raw.get("watchdog") or {}
    watchdog = Watchdog(cfg.watchdog_mode, wd.get("device", "/dev/watchdog"), wd.get("safety_margin", 5))
    from pgha.api import ApiServer, StatusBoard
    from pgha.api.writes import Control, WriteHandler
    from pgha.agent.peers import ask_all
    board = StatusBoard()
    agent = Agent(cfg, dcs, PostgresNode(cfg, account), fencer=Fencer(cfg.postgresql.data_dir), watchdog=watchdog,
                  board=board)
    agent.config_path = config
    verify = cfg.restapi.cafile or False  # reading a peer's status; its certificate is checked when a CA is set
    agent.ask_peers = lambda members, me: ask_all(members, me, timeout=0.5, verify=verify)
    api_dcs = dcs_from_config(cfg.dcs, namespace=cfg.namespace, scope=cfg.scope, ttl=30)
    control = Control(agent.intents, api_dcs, lambda: agent.settings.loop_wait,
                      lambda members: ask_all(members, "", timeout=2.0, verify=verify))
    api = ApiServer(cfg.restapi, board, scope=cfg.scope, name=cfg.name, handler=WriteHandler, control=control)
    try:
        api.start()
    except (OSError, ValueError) as e:
        raise CliError(f"restapi.listen {cfg.restapi.listen}: cannot serve the REST API: {e}") from None
    agent.api_scheme = api.scheme
    from pgha.agent.failsafe import confirm
    auth = (cfg.restapi.username, cfg.restapi.password) if cfg.restapi.username is not None else None
    agent.confirm_failsafe = lambda members, me, timeout: confirm(
        members, me, {"name": cfg.name, "api_url": f"{api.scheme}://{cfg.restapi.connect_address}/patroni"},
        timeout=timeout, auth=auth, verify=verify)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.shutdown.set())
    try:
        code = agent.run()
    finally:
        api.stop()
    sys.exit(code)


@cli.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--dir", "directory", default=_default_dir, show_default="/tmp/pgha-$USER",
              help="where the cluster lives (configs, data, logs)")
@click.option("--base-port", default=5440, show_default=True, type=click.IntRange(1024, 65000),
              help="PostgreSQL on P..P+N-1, REST API on P+100.., etcd on P+200")
@click.option("--timeout", default=300, show_default=True, type=click.IntRange(10, 3600))
@click.option("--dcs", "dcs_kind", type=click.Choice(["etcd", "zookeeper"]), default="etcd", show_default=True,
              help="the DCS the cluster runs on (its own instance, on port P+200)")
@click.option("--pgbouncer", is_flag=True, help="also PgBouncer on P+303 (transaction pooling), kept on the leader")
@click.option("--netns", is_flag=True,
              help="each node and etcd in a network namespace of its own (root, Linux), for `pgha verify`'s "
                   "partition faults; HAProxy stays on 127.0.0.1")
def up(nodes: int, directory: str, base_port: int, timeout: int, dcs_kind: str, pgbouncer: bool,
       netns: bool) -> None:
    """Start a local cluster: its own DCS, NODES PostgreSQL nodes with their agents, and HAProxy routing."""
    from pgha.cli.local import do_up
    do_up(nodes, directory, base_port, timeout, dcs_kind, pgbouncer=pgbouncer, netns=netns)


@cli.command()
@click.option("--dir", "directory", default=_default_dir, show_default="/tmp/pgha-$USER")
def down(directory: str) -> None:
    """Stop everything `pgha up` started in DIR (the data stays; `pgha up` again restarts it)."""
    from pgha.cli.local import do_down
    do_down(directory)


@cli.command()
@click.argument("cluster_names", nargs=-1)
@click.option("-r", "--role", type=click.Choice(["primary", "leader", "replica", "any"]), default="primary")
@click.option("-m", "--member", default=None, help="a member's name")
@click.pass_obj
def dsn(obj: dict, cluster_names: tuple[str, ...], role: str, member: str | None) -> None:
    """Print a libpq connection string for the primary, a replica, or a named member."""
    from pgha.cli.ctl import member_dsn
    click.echo(member_dsn(obj, cluster_names, role, member))


@cli.command()
@click.argument("member")
@click.option("-f", "--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty")
@click.pass_obj
def explain(obj: dict, member: str, fmt: str) -> None:
    """Say why MEMBER did (or did not) promote: its last decisions with their reason codes."""
    from pgha.cli.ctl import cluster_view
    from pgha.cli.history import render_explain
    _, view = cluster_view(obj, ())
    click.echo(render_explain(view, member, fmt))


def main() -> None:
    cli(prog_name="pgha")
