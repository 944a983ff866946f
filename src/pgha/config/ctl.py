"""The little the operator verbs (``pgha ctl``, patronictl's equivalent) need from a configuration.

patronictl reads the same YAML (or ``PATRONI_*`` variables) but does not validate it as the agent does: it only
needs the DCS, the namespace and the scope (the scope may also come from the command line). ``--dcs-url``
replaces the file's DCS section, as in Patroni (``patroni/ctl.py`` ``parse_dcs``).

Rules
1. ``dcs_url`` is ``[etcd3|etcd|http|https]://host[:port][/namespace]``; the port defaults to 2379, the host to
   localhost, and a path sets the namespace; ``zookeeper://host[:port][/namespace]`` (port 2181) names a
   ZooKeeper, ``consul://host[:port][/namespace]`` (port 8500) a Consul agent (read ``consistent``, as patronictl
   does). ``exhibitor``/... URLs are "not supported yet". ``CtlConfig.dcs`` is the section in use.
2. Errors are ``ConfigError`` with the usual ``"<key.path>: <expected>"`` lines; secrets are never shown.
3. The write verbs call the members' REST APIs with ``ctl.authentication``, else ``restapi.authentication``
   (Patroni's ``PatroniRequest``); TLS from ``ctl.cacert``/``certfile``/``keyfile`` (else ``restapi.cafile``...),
   ``ctl.insecure`` (or ``-k``) skips the server certificate check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from pgha.config.errors import ConfigError
from pgha.config.load import normalise_namespace, read_raw
from pgha.config.read import Reader
from pgha.config.schema import Consul, Etcd, ZooKeeper
from pgha.config.sections import CONSUL_DEFAULT_PORT, ETCD_DEFAULT_PORT, ZOOKEEPER_DEFAULT_PORT, read_dcs

_ETCD_SCHEMES = {"": "http", "etcd": "http", "etcd3": "http", "http": "http", "https": "https"}
_OTHER_SCHEMES = ("exhibitor", "kubernetes", "raft")
_DEFAULT_PORTS = {"zookeeper": ZOOKEEPER_DEFAULT_PORT, "consul": CONSUL_DEFAULT_PORT}


@dataclass(frozen=True)
class CtlConfig:
    """Where the cluster's DCS is, and how to reach its members' PostgreSQL."""

    scope: str | None
    namespace: str
    etcd: Etcd | None  # None when the DCS is ZooKeeper or Consul
    username: str | None = None  # the superuser role, if the configuration names one
    dbname: str = "postgres"
    pgpass: str | None = None
    zookeeper: ZooKeeper | None = None
    api_auth: tuple[str, str] | None = None  # Basic auth for the members' REST APIs (rule 3)
    insecure: bool = False
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    consul: Consul | None = None

    @property
    def dcs(self) -> Etcd | ZooKeeper | Consul:
        dcs = self.zookeeper or self.consul or self.etcd
        assert dcs is not None
        return dcs


def load_ctl_config(path: str | None, dcs_url: str | None = None,
                    env: Mapping[str, str] | None = None) -> CtlConfig:
    env = os.environ if env is None else env
    raw, _, errors = read_raw(path, env)
    r = Reader()
    r.errors.extend(errors)
    scope = r.string(raw, "scope", what="a cluster name (string)")
    namespace = r.string(raw, "namespace", default="/service") or "/service"
    if dcs_url:
        etcd, url_namespace = parse_dcs_url(r, dcs_url)
        namespace = url_namespace or namespace
    else:
        etcd = read_dcs(r, raw)
    pg = r.section(raw, "postgresql")
    login = _superuser(pg)
    if r.errors or etcd is None:
        raise ConfigError(r.errors)
    zookeeper = etcd if isinstance(etcd, ZooKeeper) else None
    consul = etcd if isinstance(etcd, Consul) else None
    return CtlConfig(scope=scope, namespace=normalise_namespace(namespace),
                     etcd=None if zookeeper or consul else etcd, zookeeper=zookeeper, consul=consul, username=login,
                     dbname=pg.get("database") if isinstance(pg.get("database"), str) else "postgres",
                     pgpass=pg.get("pgpass") if isinstance(pg.get("pgpass"), str) else None,
                     **_api_access(raw))


def parse_dcs_url(r: Reader, url: str) -> tuple[Etcd | ZooKeeper | Consul | None, str | None]:
    """(DCS endpoint, namespace from the URL path or None)."""
    try:
        parts = urlsplit(url if "://" in url else f"etcd3://{url}")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, ETCD_DEFAULT_PORT)
    except ValueError:
        r.error("dcs_url", "expected etcd3://host:port", url)
        return None, None
    if parts.scheme in _OTHER_SCHEMES:
        r.error("dcs_url",
                f"{parts.scheme} is not supported yet, only etcd3 (and etcd, served over v3), zookeeper and consul")
        return None, None
    if parts.scheme not in _ETCD_SCHEMES and parts.scheme not in _DEFAULT_PORTS:
        r.error("dcs_url", "expected etcd3://host:port", url)
        return None, None
    namespace = parts.path.strip() if parts.path.strip() not in ("", "/") else None
    if parts.scheme == "zookeeper":
        return ZooKeeper(hosts=((parts.hostname or "localhost", port),)), namespace
    if parts.scheme == "consul":
        return Consul(host=parts.hostname or "localhost", port=port, consistency="consistent"), namespace
    etcd = Etcd(hosts=((parts.hostname or "localhost", port),), protocol=_ETCD_SCHEMES[parts.scheme],
                v2_section=parts.scheme == "etcd")
    return etcd, namespace


def _api_access(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Rule 3: what the write verbs need to call the members' REST APIs."""
    ctl = raw.get("ctl") if isinstance(raw.get("ctl"), Mapping) else {}
    restapi = raw.get("restapi") if isinstance(raw.get("restapi"), Mapping) else {}
    auth = None
    for section in (ctl, restapi):
        value = section.get("authentication")
        if isinstance(value, Mapping) and value.get("username") is not None:
            auth = (str(value["username"]), str(value.get("password") or ""))
            break

    def text(*values: Any) -> str | None:
        return next((v for v in values if isinstance(v, str) and v), None)
    insecure = ctl.get("insecure")
    return {"api_auth": auth, "insecure": insecure in (True, "true", "True", "on", "yes", 1),
            "cacert": text(ctl.get("cacert"), restapi.get("cafile")),
            "certfile": text(ctl.get("certfile"), restapi.get("certfile")),
            "keyfile": text(ctl.get("keyfile"), restapi.get("keyfile"))}


def _superuser(pg: Mapping[str, Any]) -> str | None:
    auth = pg.get("authentication")
    roles = auth if isinstance(auth, Mapping) else pg
    superuser = roles.get("superuser")
    if isinstance(superuser, Mapping) and isinstance(superuser.get("username"), str):
        return superuser["username"]
    return None
