"""What the operator verbs share: finding the cluster's DCS from `-c FILE` / `--dcs-url` / ``PATRONI_*``, reading
it, calling the members' REST APIs, and turning members into connection strings.

Rules
1. The configuration is `-c FILE` (env ``PATRONICTL_CONFIG_FILE``), else patronictl's default
   ``~/.config/patroni/patronictl.yaml`` when it exists, else the ``PATRONI_*`` environment (config/ctl.py).
2. State is read from the DCS; actions go to the members' REST APIs (``api_url``) with the ctl credentials, as
   patronictl does. Every call has a deadline; a member that does not answer is a failure naming it.
3. DCS clients opened here are closed when the command ends (``ctx.call_on_close``), never revoking anything.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from pgha.cli.errors import CliError
from pgha.core.model import ClusterView, Member
from pgha.ports import DcsError
from pgha.postgres.conf import conninfo, parse_conn_url

DEFAULT_CONFIG = os.path.join(click.get_app_dir("patroni"), "patronictl.yaml")


def ctl_target(obj: dict[str, Any]):
    from pgha.config import ConfigError, load_ctl_config
    if "target" in obj:
        return obj["target"]
    path = obj.get("config_file")
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    if path is not None and not os.access(path, os.R_OK):
        raise CliError(f"Provided config file {path} not existing or no read rights. "
                       "Check the -c/--config-file parameter")
    try:
        target = load_ctl_config(path, obj.get("dcs_url"))
    except ConfigError as e:
        raise CliError(str(e)) from None
    if obj.get("insecure"):
        from dataclasses import replace
        target = replace(target, insecure=True)
    obj["target"] = target
    return target


class Ctl:
    """One command's view of the cluster: its DCS client(s) and REST calls (rules 2, 3)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.target = ctl_target(obj)
        self._dcs: dict[str, Any] = {}
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.call_on_close(self.close)

    def scope(self, name: str | None = None) -> str:
        scope = name or self.target.scope
        if not scope:
            raise CliError("no cluster name: give one, or a config file with `scope`")
        return scope

    def dcs(self, scope: str):
        if scope not in self._dcs:
            from pgha.dcs import dcs_from_config
            self._dcs[scope] = dcs_from_config(self.target.dcs, namespace=self.target.namespace, scope=scope,
                                               ttl=30)
        return self._dcs[scope]

    def view(self, scope: str) -> ClusterView:
        try:
            return self.dcs(scope).snapshot(timeout=5)
        except DcsError as e:
            raise CliError(f"cannot read the DCS: {e}") from None

    def close(self) -> None:
        for dcs in self._dcs.values():
            try:
                dcs.close(revoke=False)
            except Exception:  # closing must never hide the command's own outcome
                pass
        self._dcs.clear()

    def request(self, member: Member, method: str, endpoint: str, body: Any = None,
                timeout: float = 30.0) -> tuple[int, str]:
        """(status, text) of ``METHOD <member's REST API>/endpoint``; CliError naming the member when it cannot be
        reached."""
        import requests
        if not member.api_url:
            raise CliError(f"member {member.name} publishes no api_url")
        parts = urlsplit(member.api_url)
        url = urlunsplit((parts.scheme, parts.netloc, "/" + endpoint.lstrip("/"), "", ""))
        t = self.target
        verify: Any = False if t.insecure else (t.cacert or True)
        cert = (t.certfile, t.keyfile) if t.certfile and t.keyfile else t.certfile
        try:
            r = requests.request(method.upper(), url, json=body, auth=t.api_auth, verify=verify, cert=cert,
                                 timeout=(3.0, timeout))
        except requests.RequestException as e:
            raise CliError(f"member {member.name}: REST API {url} did not answer: {type(e).__name__}") from None
        return r.status_code, r.text

    def patroni_status(self, member: Member, timeout: float = 5.0) -> dict[str, Any]:
        import json
        code, text = self.request(member, "GET", "patroni", timeout=timeout)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CliError(f"member {member.name}: GET /patroni answered {code} without a JSON object")
        return data


def cluster_view(obj: dict[str, Any], names: tuple[str, ...]) -> tuple[str, ClusterView]:
    ctl = Ctl(obj)
    scope = ctl.scope(names[0] if names else None)
    try:
        return scope, ctl.view(scope)
    finally:
        ctl.close()


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
