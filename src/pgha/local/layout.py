"""Where a local cluster's files and ports are, and the configs ``pgha up`` writes for it.

Pure functions of (directory, node count, base port) plus the generated secrets, so ``pgha up`` on an existing
directory finds the same cluster again.

Ports, from the base port P: PostgreSQL P+i, REST API P+100+i, etcd client P+200 and peer P+201, router
(HAProxy): read-write P+300, read-only P+301, stats page P+302; PgBouncer (``pgha up --pgbouncer``) P+303.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

import yaml

SCOPE = "pgha-local"


@dataclass(frozen=True)
class Layout:
    root: str
    nodes: int
    base_port: int

    @property
    def etcd_port(self) -> int:
        return self.base_port + 200

    @property
    def etcd_peer_port(self) -> int:
        return self.base_port + 201

    @property
    def rw_port(self) -> int:
        return self.base_port + 300

    @property
    def ro_port(self) -> int:
        return self.base_port + 301

    @property
    def stats_port(self) -> int:
        return self.base_port + 302

    @property
    def pgbouncer_port(self) -> int:
        return self.base_port + 303

    @property
    def pgbouncer_ini(self) -> str:
        return self.path("pgbouncer.ini")

    @property
    def pgbouncer_auth_file(self) -> str:
        return self.path("pgbouncer-users.txt")

    @property
    def haproxy_config(self) -> str:
        return self.path("haproxy.cfg")

    @property
    def haproxy_socket(self) -> str:
        """Unix socket paths are limited to 107 bytes; a long DIR falls back to /tmp (the port keeps it apart)."""
        path = self.path("haproxy.sock")
        return path if len(path) < 100 else f"/tmp/pgha-haproxy-{self.rw_port}.sock"

    def name(self, i: int) -> str:
        return f"node{i}"

    def node_dir(self, i: int) -> str:
        return os.path.join(self.root, self.name(i))

    def pg_port(self, i: int) -> int:
        return self.base_port + i

    def api_port(self, i: int) -> int:
        return self.base_port + 100 + i

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def ctl_config(self) -> str:
        return self.path("pgha.yml")

    @property
    def client_pgpass(self) -> str:
        return self.path("pgpass")

    @property
    def state_file(self) -> str:
        return self.path("state.json")


API_USER = "pgha"  # the REST API's user for state-changing calls (restapi.authentication)


def new_secrets() -> dict[str, str]:
    return {role: secrets.token_urlsafe(18) for role in ("superuser", "replication", "rewind", "restapi")}


def socket_dir(layout: Layout, i: int) -> str:
    """Unix socket paths are limited to 107 bytes; fall back to /tmp (ports keep them apart)."""
    path = layout.node_dir(i)
    return path if len(path) < 80 else "/tmp"


def node_config(layout: Layout, i: int, pw: dict[str, str], timing: dict[str, Any],
                net: Any = None) -> dict[str, Any]:
    """``net``: where the addresses are (``pgha.local.netns``: ``Loopback``, the default, or a ``Topology``)."""
    name = layout.name(i)
    host = net.node_host(i) if net is not None else "127.0.0.1"
    dcs_host = net.dcs_host if net is not None else "127.0.0.1"
    clients = net.client_net if net is not None else f"{host}/32"
    return {
        "scope": SCOPE,
        "namespace": "/service",
        "name": name,
        "restapi": {"listen": f"{host}:{layout.api_port(i)}", "connect_address": f"{host}:{layout.api_port(i)}",
                    "authentication": {"username": API_USER, "password": pw["restapi"]}},
        "etcd3": {"hosts": [f"{dcs_host}:{layout.etcd_port}"]},
        "bootstrap": {
            "dcs": {**timing, "maximum_lag_on_failover": 1048576,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                   "parameters": {"wal_log_hints": "on", "max_wal_senders": 10}}},
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{host}:{layout.pg_port(i)}",
            "connect_address": f"{host}:{layout.pg_port(i)}",
            "data_dir": os.path.join(layout.node_dir(i), "data"),
            "pgpass": os.path.join(layout.node_dir(i), "pgpass"),
            "use_pg_rewind": True,
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
            "authentication": {
                "superuser": {"username": "postgres", "password": pw["superuser"]},
                "replication": {"username": "replicator", "password": pw["replication"]},
                "rewind": {"username": "rewind_user", "password": pw["rewind"]},
            },
            "parameters": {"unix_socket_directories": socket_dir(layout, i), "shared_buffers": "64MB"},
            "pg_hba": [
                "local all all peer",
                f"host all all {clients} scram-sha-256",
                f"host replication replicator {clients} scram-sha-256",
            ],
        },
    }


def ctl_config(layout: Layout, pw: dict[str, str] | None = None, dcs_host: str = "127.0.0.1") -> dict[str, Any]:
    """What `pgha -c DIR/pgha.yml ...` (and Patroni's patronictl) needs: the scope and the DCS, the REST API's
    credentials for the write verbs (Patroni's ``ctl.authentication``), plus where the client password file is,
    for `pgha dsn`. A `pgha up --netns` cluster's etcd is on its DCS namespace's address, reachable from its hub
    namespace, which `pgha -c DIR/pgha.yml` enters by itself (pgha.local.netns.enter_for_config)."""
    return {
        "scope": SCOPE,
        "namespace": "/service",
        **({"ctl": {"authentication": {"username": API_USER, "password": pw["restapi"]}}} if pw else {}),
        "etcd3": {"hosts": [f"{dcs_host}:{layout.etcd_port}"]},
        "postgresql": {"authentication": {"superuser": {"username": "postgres"}}, "pgpass": layout.client_pgpass},
    }


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        with open(layout.state_file) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}
