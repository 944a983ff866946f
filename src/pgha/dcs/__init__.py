"""DCS backends behind ``pgha.ports.Dcs``: etcd v3 (etcd3.py), ZooKeeper (zookeeper.py), Consul (consul.py,
experimental) and the in-memory one (memory.py).

Keys and values are Patroni's (keys.py). ``make_dcs`` builds the etcd backend from the configuration's values;
``dcs_from_config`` builds whichever backend a configuration's DCS section names (``Config.dcs``: ``Etcd``,
``ZooKeeper`` or ``Consul``; Consul's session is named ``<scope>-<name>``: pass ``name``, else it is learnt from
the first call that names the member); the in-memory one is built directly by the simulator and the tests.
"""

from __future__ import annotations

from typing import Any

from pgha.dcs.etcd3 import DEFAULT_TIMEOUT, Etcd3Client, Etcd3Dcs

__all__ = ["Etcd3Dcs", "dcs_from_config", "make_dcs"]


def make_dcs(*, hosts: list[tuple[str, int]], protocol: str = "http", username: str | None = None,
             password: str | None = None, cacert: str | None = None, cert: str | None = None,
             key: str | None = None, namespace: str = "/service", scope: str, ttl: int,
             timeout: float = DEFAULT_TIMEOUT) -> Etcd3Dcs:
    """An etcd v3 DCS for cluster ``scope``; ``timeout`` is the deadline of calls made without one."""
    client = Etcd3Client(list(hosts), protocol=protocol, username=username, password=password, cacert=cacert,
                         cert=cert, key=key, timeout=timeout)
    return Etcd3Dcs(client, namespace=namespace, scope=scope, ttl=ttl)


def dcs_from_config(section: Any, *, namespace: str = "/service", scope: str, ttl: int,
                    timeout: float = DEFAULT_TIMEOUT, name: str | None = None) -> Any:
    """The backend for a configuration's DCS section (``pgha.config.schema.Etcd``, ``ZooKeeper`` or ``Consul``)."""
    from pgha.config.schema import Consul, Etcd, ZooKeeper
    if isinstance(section, Consul):
        from pgha.dcs.consul import ConsulClient, ConsulDcs
        client = ConsulClient(section.host, section.port, scheme=section.scheme, token=section.token,
                              verify=section.verify, cacert=section.cacert, cert=section.cert, key=section.key,
                              dc=section.dc, consistency=section.consistency, timeout=timeout)
        return ConsulDcs(client, namespace=namespace, scope=scope, ttl=ttl, name=name, checks=section.checks,
                         register_service=section.register_service, service_tags=section.service_tags,
                         service_check_interval=section.service_check_interval,
                         service_check_tls_server_name=section.service_check_tls_server_name)
    if isinstance(section, ZooKeeper):
        from pgha.dcs.zookeeper import ZooKeeperDcs
        return ZooKeeperDcs(list(section.hosts), namespace=namespace, scope=scope, ttl=ttl, timeout=timeout,
                            use_ssl=section.use_ssl, cacert=section.cacert, cert=section.cert, key=section.key,
                            key_password=section.key_password, verify=section.verify,
                            set_acls={p: list(perms) for p, perms in section.set_acls.items()},
                            auth_data=list(section.auth_data))
    if isinstance(section, Etcd):
        return make_dcs(hosts=list(section.hosts), protocol=section.protocol, username=section.username,
                        password=section.password, cacert=section.cacert, cert=section.cert, key=section.key,
                        namespace=namespace, scope=scope, ttl=ttl, timeout=timeout)
    raise TypeError(f"not a DCS section: {type(section).__name__}")
