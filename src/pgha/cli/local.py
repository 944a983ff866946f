"""`pgha up` and `pgha down`: the local cluster commands' output."""

from __future__ import annotations

import os

import click

from pgha.cli.errors import CliError
from pgha.cli.listing import render_table
from pgha.local.layout import SCOPE, Layout, read_state


def _say(line: str) -> None:
    click.echo(line, err=False)


def do_up(nodes: int, directory: str, base_port: int, timeout: int, dcs_kind: str = "etcd",
          pgbouncer: bool = False, netns: bool = False) -> None:
    from pgha.local.cluster import LocalCluster, UpError
    from pgha.local.etcd import EtcdMissing
    from pgha.local.zookeeper import ZooKeeperMissing
    from pgha.osuser import AccountError
    layout = _layout(directory, nodes, base_port)
    try:
        local = LocalCluster(layout, say=_say, dcs_kind=dcs_kind, pgbouncer=pgbouncer, netns=netns)
        view = local.up(timeout=timeout)
    except (UpError, EtcdMissing, ZooKeeperMissing, AccountError) as e:
        raise CliError(str(e)) from None
    click.echo(render_table(view, SCOPE))
    if local.net.netns:
        _netns_help(local, view)
        return
    leader_port = base_port + int(view.leader.removeprefix("node"))
    ports = ",".join(str(layout.pg_port(i)) for i in range(layout.nodes))
    hosts = ",".join("127.0.0.1" for _ in range(layout.nodes))
    auth = f"user=postgres dbname=postgres passfile={layout.client_pgpass}"
    click.echo("\nConnect:")
    click.echo(f"  primary:   psql \"host=127.0.0.1 port={leader_port} {auth}\"")
    click.echo(f"  any node:  psql \"host={hosts} port={ports} {auth} target_session_attrs=read-write\"")
    if local.pgbouncer:
        click.echo(f"  pgbouncer: psql \"host=127.0.0.1 port={layout.pgbouncer_port} {auth}\"  (the leader, pooled)")
    click.echo(f"  members:   pgha -c {layout.ctl_config} list")
    click.echo(f"  dsn:       pgha -c {layout.ctl_config} dsn --role primary|replica")
    click.echo(f"  stop:      pgha down --dir {layout.root}")


def _layout(directory: str, nodes: int, base_port: int) -> Layout:
    root = os.path.abspath(directory)
    state = read_state(Layout(root, nodes, base_port))
    # An existing cluster keeps its shape: the directory remembers how it was made.
    nodes = state.get("nodes", nodes)
    base_port = state.get("base_port", base_port)
    return Layout(root, nodes, base_port)


def _netns_help(local, view) -> None:
    """`pgha up --netns`: the nodes' addresses exist only in the cluster's namespaces; 127.0.0.1 is HAProxy."""
    layout, net = local.layout, local.net
    auth = f"user=postgres dbname=postgres passfile={layout.client_pgpass}"
    click.echo(f"\nNetwork namespaces: {', '.join(net.namespaces)} (subnet {net.client_net}; etcd on "
               f"{net.dcs_host}, node i on {net.subnet}.(10+i))")
    click.echo("Connect:")
    click.echo(f"  primary:   psql \"host=127.0.0.1 port={layout.rw_port} {auth}\"  (HAProxy, rw)")
    click.echo(f"  replicas:  psql \"host=127.0.0.1 port={layout.ro_port} {auth}\"  (HAProxy, ro)")
    i = int(view.leader.removeprefix("node"))
    click.echo(f"  a node:    ip netns exec {net.hub} psql \"host={net.node_host(i)} port={layout.pg_port(i)} {auth}\"")
    click.echo(f"  members:   pgha -c {layout.ctl_config} list   (as root: it enters {net.hub} by itself)")
    click.echo(f"  faults:    pgha -c {layout.ctl_config} verify --fault partition-leader-dcs --fault isolate-leader")
    click.echo(f"  stop:      pgha down --dir {layout.root}   (also removes the namespaces)")


def do_down(directory: str) -> None:
    from pgha.local.cluster import LocalCluster, UpError
    root = os.path.abspath(directory)
    state = read_state(Layout(root, 0, 0))
    if not state:
        raise CliError(f"no cluster started by `pgha up` in {root}")
    layout = Layout(root, state.get("nodes", 0), state.get("base_port", 0))
    try:
        stopped = LocalCluster(layout, say=_say).down()
    except UpError as e:
        raise CliError(str(e)) from None
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
