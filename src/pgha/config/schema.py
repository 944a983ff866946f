"""The local configuration of one pgha node (Patroni's YAML format), as frozen dataclasses.

``load.load_config`` builds these from a YAML file, a directory of YAML files, ``PATRONI_CONFIGURATION`` or
``PATRONI_*`` environment variables (../shared/spec/patroni-compat.md, section 3).

Rules
1. Every class is frozen; mappings are ``MappingProxyType`` and lists are tuples (see ``pgha.core.dynamic.freeze``).
2. Secrets never show in ``repr``: ``Auth``, ``Etcd``, ``ZooKeeper``, ``Consul`` (its token) and ``RestApi`` mask
   their secrets, and
   ``Config.raw`` (which holds the merged YAML, passwords included) is left out of ``repr`` altogether.
3. Addresses are kept as ``"host:port"`` strings, as written; ports were checked to be in 1..65535.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

_EMPTY: Mapping[str, Any] = MappingProxyType({})

SECRET_FIELDS = frozenset({"password", "sslpassword", "keyfile_password", "key_password", "auth_data", "token"})


def masked_repr(obj: Any) -> str:
    """``Class(field=value, ...)`` with every secret field shown as ``'***'`` when set."""
    parts = []
    for f in fields(obj):
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        shown = "'***'" if f.name in SECRET_FIELDS and value is not None else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class Auth:
    """A PostgreSQL role pgha connects as (superuser, replication or rewind), with optional libpq SSL settings."""

    username: str
    password: str | None = None
    sslmode: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = None
    sslrootcert: str | None = None
    sslcrl: str | None = None
    sslcrldir: str | None = None
    gssencmode: str | None = None
    channel_binding: str | None = None

    def __repr__(self) -> str:
        return masked_repr(self)

    def conn_kwargs(self) -> dict[str, str]:
        """libpq keywords for this role (``user``, ``password``, ``ssl*``...), unset ones left out."""
        out = {"user": self.username}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "username" and value is not None:
                out[f.name] = value
        return out


@dataclass(frozen=True, repr=False)
class RestApi:
    listen: str
    connect_address: str
    username: str | None = None
    password: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    cafile: str | None = None
    verify_client: str | None = None  # none | optional | required
    allowlist: tuple[str, ...] = ()
    allowlist_include_members: bool = False

    def __repr__(self) -> str:
        return masked_repr(self)


@dataclass(frozen=True, repr=False)
class Etcd:
    hosts: tuple[tuple[str, int], ...]
    protocol: str = "http"  # http | https
    username: str | None = None
    password: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    v2_section: bool = False  # the section was ``etcd:`` (v2 API in Patroni); pgha serves it over v3

    def __repr__(self) -> str:
        return masked_repr(self)

    def endpoints(self) -> tuple[str, ...]:
        """``protocol://host:port`` for every host (IPv6 hosts in brackets)."""
        return tuple(f"{self.protocol}://{_bracket(h)}:{p}" for h, p in self.hosts)


@dataclass(frozen=True, repr=False)
class ZooKeeper:
    """Patroni's ``zookeeper`` section (kazoo's connection settings)."""

    hosts: tuple[tuple[str, int], ...]
    use_ssl: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None
    verify: bool = True
    set_acls: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)  # x509 principal -> perms
    auth_data: tuple[tuple[str, str], ...] = ()  # (scheme, credential) pairs, e.g. ("digest", "user:password")

    def __repr__(self) -> str:
        return masked_repr(self)


@dataclass(frozen=True, repr=False)
class Consul:
    """Patroni's ``consul`` section: the local agent's HTTP API, the session checks and service registration."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"  # http | https
    token: str | None = None
    verify: bool = True
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    dc: str | None = None
    consistency: str = "default"  # default | consistent | stale
    checks: tuple[str, ...] = ()
    register_service: bool = False
    service_tags: tuple[str, ...] = ()
    service_check_interval: str = "5s"
    service_check_tls_server_name: str | None = None

    def __repr__(self) -> str:
        return masked_repr(self)


@dataclass(frozen=True)
class Bootstrap:
    dcs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    initdb: tuple[str, ...] = ()
    pg_hba: tuple[str, ...] = ()
    post_bootstrap: str | None = None
    method: str = "initdb"


@dataclass(frozen=True)
class Postgresql:
    listen: str
    listen_addresses: str
    port: int
    connect_address: str
    data_dir: str
    superuser: Auth
    replication: Auth
    config_dir: str | None = None
    bin_dir: str = ""
    pgpass: str = ""
    rewind: Auth | None = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    pg_hba: tuple[str, ...] | None = None
    use_pg_rewind: bool | None = None
    use_unix_socket: bool = False
    database: str = "postgres"
    pg_ctl_timeout: int = 60
    remove_data_directory_on_rewind_failure: bool = False
    remove_data_directory_on_diverged_timelines: bool = False
    callbacks: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    create_replica_methods: tuple[str, ...] = ("basebackup",)
    basebackup: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    scope: str
    name: str
    namespace: str
    restapi: RestApi
    etcd: Etcd | None  # None when the DCS is ZooKeeper or Consul
    bootstrap: Bootstrap
    postgresql: Postgresql
    tags: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    watchdog_mode: str = "automatic"  # off | automatic | required
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)
    source: str = "environment"
    zookeeper: ZooKeeper | None = None
    consul: Consul | None = None

    @property
    def dcs(self) -> Etcd | ZooKeeper | Consul:
        """The DCS section in use (``pgha.dcs.dcs_from_config`` builds its backend)."""
        dcs = self.zookeeper or self.consul or self.etcd
        assert dcs is not None
        return dcs

    @property
    def prefix(self) -> str:
        """The DCS key prefix of this cluster: ``<namespace>/<scope>/``, e.g. ``/service/batman/``."""
        return f"{self.namespace}/{self.scope}/"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
