"""``load_config``: read, merge, override from the environment, validate, and build the frozen ``Config``.

Rules
1. Sources follow Patroni (see ``sources``): a file or a directory of YAML files plus ``PATRONI_*`` overrides;
   else ``PATRONI_CONFIGURATION`` (YAML text); else ``PATRONI_*`` variables alone.
2. Every problem is collected before failing: ``ConfigError.errors`` lists them all, each naming its key path and
   what was expected. Secrets are never quoted back.
3. Required: ``scope``, ``name``, ``restapi.listen``, ``restapi.connect_address``, one DCS section (etcd3/etcd/
   zookeeper/consul: ``Config.etcd``, ``Config.zookeeper`` or ``Config.consul``, the others None; ``Config.dcs`` is
   the one in use),
   ``postgresql.listen``, ``postgresql.connect_address``, ``postgresql.data_dir`` and the replication username.
4. The warnings returned are at most three lines: keys not supported yet, unknown keys, and the notice that an
   ``etcd:`` section is served over the v3 API (see ``keys``).
5. ``namespace`` is normalised: a leading slash, no trailing or doubled slashes (``/db/`` -> ``/db``); the root
   namespace (``/``) becomes ``""`` so that the key prefix ``<namespace>/<scope>/`` is ``/<scope>/``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from pgha.config import keys
from pgha.config.errors import ConfigError
from pgha.config.postgres import read_postgresql
from pgha.config.read import Reader
from pgha.config.schema import Config, Consul, ZooKeeper
from pgha.config.sections import read_bootstrap, read_dcs, read_restapi, read_tags, read_watchdog_mode
from pgha.config.sources import SourceError, environment_config, load_path, parse_yaml, patch_config
from pgha.core.dynamic import freeze

RESERVED_NAME = "__patroni_strict_sync_replica_placeholder__"
CONFIGURATION_VAR = "PATRONI_CONFIGURATION"


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The validated configuration and its warnings; ConfigError lists every problem found."""
    env = os.environ if env is None else env
    raw, source, errors = read_raw(path, env)
    if not raw and not errors:
        raise ConfigError([f"{source}: empty configuration, expected a YAML mapping of settings"])
    reader = Reader()
    reader.errors.extend(errors)
    config = build_config(reader, raw, source, env)
    if reader.errors or config is None:
        raise ConfigError(reader.errors)
    unsupported, unknown = keys.ignored(raw, config.watchdog_mode)
    return config, keys.warning_lines(unsupported, unknown, config.etcd is not None and config.etcd.v2_section)


def read_raw(path: str | None, env: Mapping[str, str]) -> tuple[dict, str, list[str]]:
    """(merged configuration, source name, errors from environment values) -- Patroni's order of sources."""
    try:
        env_config, env_errors = environment_config(env)
        if path is not None:
            raw = load_path(path)
            patch_config(raw, env_config)
            return raw, path, env_errors
        text = env.get(CONFIGURATION_VAR)
        if text and text.strip():
            raw = parse_yaml(text, CONFIGURATION_VAR)
            if raw:
                return raw, "environment", []
        return env_config, "environment", env_errors
    except SourceError as exc:
        raise ConfigError(exc.errors) from None


def build_config(r: Reader, raw: Mapping[str, Any], source: str, env: Mapping[str, str]) -> Config | None:
    pg_section = raw.get("postgresql") if isinstance(raw.get("postgresql"), Mapping) else {}
    scope = r.string(raw, "scope", required=True, what="a cluster name (string)")
    name = _read_name(r, raw, pg_section)
    namespace = normalise_namespace(r.string(raw, "namespace", default="/service") or "/service")
    restapi = read_restapi(r, raw)
    dcs = read_dcs(r, raw)
    bootstrap = read_bootstrap(r, raw)
    postgresql = read_postgresql(r, raw, name or "", env)
    tags = read_tags(r, raw)
    watchdog_mode = read_watchdog_mode(r, raw)
    if None in (scope, name, restapi, dcs, postgresql):
        return None
    zookeeper = dcs if isinstance(dcs, ZooKeeper) else None
    consul = dcs if isinstance(dcs, Consul) else None
    return Config(scope=scope, name=name, namespace=namespace, restapi=restapi,
                  etcd=None if zookeeper or consul else dcs,
                  bootstrap=bootstrap, postgresql=postgresql, tags=tags, watchdog_mode=watchdog_mode,
                  raw=freeze(raw), source=source, zookeeper=zookeeper, consul=consul)


def _read_name(r: Reader, raw: Mapping[str, Any], pg: Mapping[str, Any]) -> str | None:
    """``name``, or Patroni's old ``postgresql.name`` when the top-level one is missing."""
    if raw.get("name") is None and isinstance(pg.get("name"), str) and pg["name"].strip():
        return pg["name"]
    name = r.string(raw, "name", required=True, what="a member name (string)")
    if name == RESERVED_NAME:
        r.error("name", f"expected a member name other than the reserved {RESERVED_NAME}")
        return None
    return name


def normalise_namespace(namespace: str) -> str:
    parts = [p for p in namespace.split("/") if p]
    return "/" + "/".join(parts) if parts else ""
