"""Which configuration keys pgha reads, which Patroni knows but pgha ignores, and the warnings that say so.

Nothing given is dropped silently: every key pgha does not act on is listed in one warning line,
``not supported yet (ignored): ...`` for keys Patroni knows (``log``, ``ctl``, ``watchdog.driver``, ``bootstrap.dcs.standby_cluster``, ...), and ``unknown keys (ignored): ...`` for keys Patroni does not know
or ignores itself (typos, ``bootstrap.users`` removed in Patroni 4.0, a local ``postgresql.use_slots``).
Replica creation methods other than ``basebackup`` are listed as ``postgresql.<method>`` (not supported yet).
An ``etcd:`` section adds a third line: pgha speaks the v3 API to it.

Rules
1. The tree below maps each key to ``S`` (supported), ``U`` (known to Patroni, not supported yet), ``X`` (ignored
   by Patroni too: reported as unknown), ``FREE`` (free-form content: not descended into) or a sub-tree.
2. For a ``U`` section holding a mapping, its sub-keys are listed (``log.level, log.dir``), not the section.
3. To mark a key unsupported (or supported, once the agent acts on it), change its letter here; nothing else.
4. Key paths only: values never appear in warnings.
"""

from __future__ import annotations

from typing import Any, Mapping

from pgha.config.sources import AUTH_PARAMS
from pgha.core.dynamic import ignored_keys

S, U, X, FREE = "supported", "unsupported", "ignored", "free"

_AUTH = {k: S for k in AUTH_PARAMS}
_ETCD = {**{k: S for k in ("host", "hosts", "url", "port", "protocol", "username", "password", "cacert", "cert",
                           "key")},
         **{k: U for k in ("srv", "srv_suffix", "proxy", "use_proxies", "key_password", "retry_timeout")}}
_ZOOKEEPER = {**{k: S for k in ("hosts", "use_ssl", "cacert", "cert", "key", "key_password", "verify",
                                 "auth_data")},
              "set_acls": FREE}
_CONSUL = {k: S for k in ("host", "url", "port", "scheme", "token", "verify", "cacert", "cert", "key", "dc",
                          "consistency", "checks", "register_service", "service_tags", "service_check_interval",
                          "service_check_tls_server_name")}
_RESTAPI = {
    **{k: S for k in ("listen", "connect_address", "certfile", "keyfile", "keyfile_password", "cafile",
                      "verify_client", "allowlist", "allowlist_include_members", "auth")},
    "authentication": {"username": S, "password": S},
    **{k: U for k in ("ciphers", "http_extra_headers", "https_extra_headers", "request_queue_size",
                      "server_tokens", "thread_pool_size")},
}
_ROLE_VARIANTS = [f"{k}_{role}" for k in ("parameters", "pg_hba", "pg_ident")
                  for role in ("primary", "replica", "standby_leader")]
_POSTGRESQL = {
    **{k: S for k in ("listen", "connect_address", "data_dir", "config_dir", "bin_dir", "pgpass", "pg_hba",
                      "use_pg_rewind", "database", "pg_ctl_timeout", "basebackup",
                      "create_replica_methods", "name")},
    "parameters": FREE,
    "authentication": {"superuser": _AUTH, "replication": _AUTH, "rewind": _AUTH},
    "replication": _AUTH, "superuser": _AUTH, "pg_rewind": _AUTH,
    "callbacks": {k: U for k in ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")},
    "remove_data_directory_on_rewind_failure": S, "remove_data_directory_on_diverged_timelines": S,
    **{k: U for k in ("use_unix_socket", "proxy_address", "bin_name", "pg_ident", "recovery_conf", "custom_conf",
                      "use_unix_socket_repl", "pre_promote", "before_stop", *_ROLE_VARIANTS)},
    "use_slots": X,
}
_BOOTSTRAP = {"dcs": "dynamic", "method": S, "initdb": S, "pg_hba": S, "post_bootstrap": S, "post_init": S,
              "users": X}
TREE: dict[str, Any] = {
    "name": S, "scope": S, "namespace": S, "tags": FREE,
    "restapi": _RESTAPI, "etcd": _ETCD, "etcd3": _ETCD, "zookeeper": _ZOOKEEPER, "consul": _CONSUL,
    "bootstrap": _BOOTSTRAP,
    "postgresql": _POSTGRESQL,
    "watchdog": "watchdog",
    **{k: U for k in ("log", "ctl", "citus", "thread_pool_size", "thread_stack_size")},
    **{k: FREE for k in ("kubernetes", "raft", "exhibitor")},  # errors elsewhere
}
_WATCHDOG = ("mode", "device", "safety_margin", "driver")


def ignored(raw: Mapping[str, Any], watchdog_mode: str) -> tuple[list[str], list[str]]:
    """(unsupported key paths, unknown key paths) in the merged configuration."""
    found: tuple[list[str], list[str]] = ([], [])
    _walk(raw, TREE, "", found, watchdog_mode)
    _replica_methods(raw, found)
    return found


def warning_lines(unsupported: list[str], unknown: list[str], v2_section: bool) -> list[str]:
    lines = []
    if unsupported:
        lines.append("not supported yet (ignored): " + ", ".join(unsupported))
    if unknown:
        lines.append("unknown keys (ignored): " + ", ".join(unknown))
    if v2_section:
        lines.append("etcd: pgha does not use the etcd v2 API; this section is served over the etcd v3 API")
    return lines


def _walk(d: Mapping[str, Any], tree: Mapping[str, Any], base: str, found: tuple, mode: str) -> None:
    for key, value in d.items():
        path = f"{base}.{key}" if base else str(key)
        _visit(path, value, tree.get(key), found, mode)


def _visit(path: str, value: Any, node: Any, found: tuple, mode: str) -> None:
    if node is None or node == X:
        found[1].append(path)
    elif node == U:
        found[0].extend(_children(path, value))
    elif node == "dynamic":
        unsupported, unknown = ignored_keys(value)
        found[0].extend(f"{path}.{k}" for k in unsupported)
        found[1].extend(f"{path}.{k}" for k in unknown)
    elif node == "watchdog":
        _watchdog(path, value, found, mode)
    elif isinstance(node, dict) and isinstance(value, Mapping):
        _walk(value, node, path, found, mode)


def _children(path: str, value: Any) -> list[str]:
    if isinstance(value, Mapping) and value:
        return [f"{path}.{k}" for k in value]
    return [path]


def _watchdog(path: str, value: Any, found: tuple, mode: str) -> None:
    """mode, device and safety_margin drive agent/watchdog.py; Patroni's test-only ``driver`` does not."""
    if not isinstance(value, Mapping):
        return
    for key in value:
        if key == "driver":
            found[0].append(f"{path}.{key}")
        elif key not in _WATCHDOG:
            found[1].append(f"{path}.{key}")


def _replica_methods(raw: Mapping[str, Any], found: tuple[list[str], list[str]]) -> None:
    """Replica creation methods other than basebackup are unsupported; their sections are not unknown keys."""
    pg = raw.get("postgresql")
    methods = pg.get("create_replica_methods") if isinstance(pg, Mapping) else None
    if not isinstance(methods, (list, tuple)):
        return
    for method in methods:
        if isinstance(method, str) and method != "basebackup":
            path = f"postgresql.{method}"
            found[0].append(path)
            if path in found[1]:
                found[1].remove(path)
