"""DCS backends behind ``pgha.ports.Dcs``: etcd v3 (etcd3.py) and the in-memory one (memory.py).

Keys and values are Patroni's (keys.py). ``make_dcs`` builds the etcd backend from the configuration's values; the
in-memory one is built directly by the simulator and the tests.
"""

from __future__ import annotations

from pgha.dcs.etcd3 import DEFAULT_TIMEOUT, Etcd3Client, Etcd3Dcs

__all__ = ["Etcd3Dcs", "make_dcs"]


def make_dcs(*, hosts: list[tuple[str, int]], protocol: str = "http", username: str | None = None,
             password: str | None = None, cacert: str | None = None, cert: str | None = None,
             key: str | None = None, namespace: str = "/service", scope: str, ttl: int,
             timeout: float = DEFAULT_TIMEOUT) -> Etcd3Dcs:
    """An etcd v3 DCS for cluster ``scope``; ``timeout`` is the deadline of calls made without one."""
    client = Etcd3Client(list(hosts), protocol=protocol, username=username, password=password, cacert=cacert,
                         cert=cert, key=key, timeout=timeout)
    return Etcd3Dcs(client, namespace=namespace, scope=scope, ttl=ttl)
