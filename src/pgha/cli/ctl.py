"""What the operator verbs share: finding the cluster's DCS from `-c FILE` / `--dcs-url`, reading it, and
turning members into connection strings."""

from __future__ import annotations

from typing import Any

from pgha.cli.errors import CliError
from pgha.core.model import ClusterView, Member
from pgha.ports import DcsError
from pgha.postgres.conf import conninfo, parse_conn_url


def ctl_target(obj: dict[str, Any]):
    from pgha.config import ConfigError, load_ctl_config
    try:
        return load_ctl_config(obj.get("config_file"), obj.get("dcs_url"))
    except ConfigError as e:
        raise CliError(str(e)) from None


def cluster_view(obj: dict[str, Any], names: tuple[str, ...]) -> tuple[str, ClusterView]:
    from pgha.dcs import make_dcs
    target = ctl_target(obj)
    scope = names[0] if names else target.scope
    if not scope:
        raise CliError("no cluster name: give one, or a config file with `scope`")
    e = target.etcd
    dcs = make_dcs(hosts=list(e.hosts), protocol=e.protocol, username=e.username, password=e.password,
                   cacert=e.cacert, cert=e.cert, key=e.key, namespace=target.namespace, scope=scope, ttl=30)
    try:
        return scope, dcs.snapshot(timeout=5)
    except DcsError as e:
        raise CliError(f"cannot read the DCS: {e}") from None
    finally:
        dcs.close(revoke=False)


def _pick(view: ClusterView, role: str, member: str | None) -> Member:
    if member:
        found = view.member(member)
        if found is None:
            raise CliError(f"member {member} is not in the cluster")
        return found
    if role in ("primary", "leader"):
        found = view.member(view.leader) if view.leader else None
        if found is None:
            raise CliError("the cluster has no leader")
        return found
    candidates = [m for m in sorted(view.members, key=lambda m: m.name)
                  if role == "any" or (m.name != view.leader and m.state == "running")]
    if not candidates:
        raise CliError(f"no running {role} member")
    return candidates[0]


def member_dsn(obj: dict[str, Any], names: tuple[str, ...], role: str, member: str | None) -> str:
    target = ctl_target(obj)
    _, view = cluster_view(obj, names)
    chosen = _pick(view, role, member)
    address = parse_conn_url(chosen.conn_url)
    if address is None:
        raise CliError(f"member {chosen.name} publishes no usable conn_url")
    return conninfo(host=address[0], port=address[1], user=target.username, dbname=target.dbname,
                    passfile=target.pgpass)
