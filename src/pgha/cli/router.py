"""`pgha haproxy-config` and `pgha router`: HAProxy routing to the leader (rw) and the replicas (ro).

Both read the cluster from the DCS named by `-c FILE` / `--dcs-url`, as the other operator verbs do.
`register(cli)` adds them to the `pgha` group (one line in main.py).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from pgha.cli.errors import CliError

DEFAULT_SOCKET = "/run/haproxy/pgha.sock"


@click.command("haproxy-config")
@click.argument("cluster_names", nargs=-1)
@click.option("--rw-port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="port of the read-write listener (the leader)")
@click.option("--ro-port", default=5001, show_default=True, type=click.IntRange(1, 65535),
              help="port of the read-only listener (the replicas)")
@click.option("--stats-port", default=7000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--bind", "bind", default="127.0.0.1", show_default=True, help="address the listeners bind to")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="HAProxy's admin stats socket (for `pgha router`)")
@click.option("--inter", default="1s", show_default=True, help="health-check interval")
@click.option("--fall", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option("--rise", default=1, show_default=True, type=click.IntRange(1, 100))
@click.pass_obj
def haproxy_config(obj: dict, cluster_names: tuple[str, ...], rw_port: int, ro_port: int, stats_port: int,
                   bind: str, socket_path: str, inter: str, fall: int, rise: int) -> None:
    """Print an HAProxy configuration routing rw to the leader and ro to the replicas."""
    from pgha.cli.ctl import cluster_view
    from pgha.router.haproxy_config import Checks, RouterPorts, render, servers_from_view
    scope, view = cluster_view(obj, cluster_names)
    servers = servers_from_view(view)
    if not servers:
        raise CliError(f"cluster {scope} has no member with a usable conn_url and api_url")
    click.echo(render(servers, RouterPorts(rw_port, ro_port, stats_port, bind), socket_path,
                      Checks(inter=inter, fall=fall, rise=rise), scope=scope), nl=False)


@click.command("router")
@click.argument("cluster_names", nargs=-1)
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="HAProxy's admin stats socket")
@click.option("--rejoin-timeout", default=120, show_default=True, type=click.IntRange(1, 3600),
              help="seconds to watch an old leader for its return as a replica")
@click.pass_obj
def router(obj: dict, cluster_names: tuple[str, ...], socket_path: str, rejoin_timeout: int) -> None:
    """Follow the leader key and switch HAProxy's rw/ro routing at once (SIGTERM stops it)."""
    from pgha.cli.ctl import ctl_target
    from pgha.dcs import dcs_from_config
    from pgha.router.follow import Router
    from pgha.router.runtime import HaproxyRuntime
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", stream=sys.stderr)
    target = ctl_target(obj)
    scope = cluster_names[0] if cluster_names else target.scope
    if not scope:
        raise CliError("no cluster name: give one, or a config file with `scope`")
    dcs = dcs_from_config(target.dcs, namespace=target.namespace, scope=scope, ttl=30)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        Router(dcs, HaproxyRuntime(socket_path), rejoin_timeout=rejoin_timeout).run(stop)
    finally:
        dcs.close(revoke=False)


def register(group: click.Group) -> None:
    group.add_command(haproxy_config)
    group.add_command(router)
