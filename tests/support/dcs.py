"""Harnesses that run the DCS contract suite (tests/contract/) against each backend, reusable by other tests.

``MemoryHarness`` drives a fake clock; ``EtcdHarness`` and ``ZooKeeperHarness`` run against a real etcd or
ZooKeeper, where "time passes" means polling a condition under a deadline. All offer the same methods:
``agent()``, ``until(cond, within)``, ``run_for(seconds, step, fn)``, ``keep_alive(agent)``, raw key access as
"someone else", ``close()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from pgha.dcs import make_dcs
from pgha.dcs.etcd3_client import b64, unb64
from pgha.dcs.keys import cluster_prefix
from pgha.dcs.memory import MemoryDcs, MemoryStore
from tests.support.etcd import EtcdServer, free_port, http

MEMBER = {"conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni",
          "state": "running", "role": "replica", "version": "4.1.4", "xlog_location": 50331648, "timeline": 2,
          "tags": {"nofailover": True}}


class MemoryHarness:
    kind, ttl = "memory", 3

    def __init__(self) -> None:
        self.t = 1000.0
        self.store = MemoryStore(lambda: self.t)
        self.scope = f"t-{uuid.uuid4().hex[:8]}"
        self.prefix = cluster_prefix("/service", self.scope)

    def agent(self, ttl: int | None = None) -> MemoryDcs:
        return MemoryDcs(self.store, "/service", self.scope, ttl or self.ttl)

    def unreachable_agent(self) -> MemoryDcs:
        dcs = self.agent()
        self.store.set_reachable(dcs.agent_id, False)
        return dcs

    def now(self) -> float:
        return self.t

    def until(self, cond: Callable[[], bool], within: float) -> bool:
        for _ in range(int(within / 0.1) + 1):
            if cond():
                return True
            self.t = round(self.t + 0.1, 6)
        return cond()

    def run_for(self, seconds: float, step: float, fn: Callable[[], None]) -> None:
        for _ in range(int(seconds / step) + 1):
            fn()
            self.t = round(self.t + step, 6)

    @contextlib.contextmanager
    def keep_alive(self, dcs: MemoryDcs) -> Iterator[None]:
        self.t += 0.5
        dcs.renew_lease()  # a keepalive after the grant: someone is renewing
        yield

    def write_raw(self, rel: str, value: str) -> None:
        self.store.put(self.prefix + rel, value)

    def delete_raw(self, rel: str) -> None:
        self.store.delete(self.prefix + rel)

    def raw(self, rel: str) -> tuple[str, int, int] | None:
        """(value, mod revision, lease) of a key, or None."""
        e = self.store.get(self.prefix + rel)
        return (e.value, e.mod_rev, e.lease) if e else None

    def close(self) -> None:
        pass


class EtcdHarness:
    kind, ttl = "etcd", 2

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.scope = f"t-{uuid.uuid4().hex[:8]}"
        self.prefix = cluster_prefix("/service", self.scope)
        self.agents: list[Any] = []

    def agent(self, ttl: int | None = None, hosts: list[tuple[str, int]] | None = None, timeout: float = 2.0,
              **options: Any) -> Any:
        dcs = make_dcs(hosts=hosts or [("127.0.0.1", self.server.port)], scope=self.scope, ttl=ttl or self.ttl,
                       timeout=timeout, **options)
        self.agents.append(dcs)
        return dcs

    def unreachable_agent(self) -> Any:
        return self.agent(hosts=[("127.0.0.1", free_port())], timeout=1.0)

    def now(self) -> float:
        return time.monotonic()

    def until(self, cond: Callable[[], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        return cond()

    def run_for(self, seconds: float, step: float, fn: Callable[[], None]) -> None:
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds / step) + 1):
            fn()
            if time.monotonic() + step > deadline:
                return
            time.sleep(step)

    @contextlib.contextmanager
    def keep_alive(self, dcs: Any) -> Iterator[None]:
        """Another process renewing its lease every 0.4 s, in a thread, while the block runs."""
        stop = threading.Event()
        thread = threading.Thread(target=lambda: [dcs.renew_lease() for _ in range(100) if not stop.wait(0.4)])
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)

    def _kv(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return http.post(f"{self.server.url}/v3{path}", json=body, timeout=5).json()

    def write_raw(self, rel: str, value: str) -> None:
        self._kv("/kv/put", {"key": b64(self.prefix + rel), "value": b64(value)})

    def delete_raw(self, rel: str) -> None:
        self._kv("/kv/deleterange", {"key": b64(self.prefix + rel)})

    def raw(self, rel: str) -> tuple[str, int, str] | None:
        kvs = self._kv("/kv/range", {"key": b64(self.prefix + rel)}).get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return unb64(kv.get("value")), int(kv["mod_revision"]), kv.get("lease", "0")

    def close(self) -> None:
        for dcs in self.agents:
            dcs.close(revoke=True)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


class ZooKeeperHarness(EtcdHarness):
    """Against a real ZooKeeper (tests/support/zookeeper.py); raw access through a kazoo client of its own. A raw
    key's "lease" is its znode's ephemeralOwner (the session id, 0 for a persistent znode)."""

    kind = "zookeeper"

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        from kazoo.client import KazooClient
        self.zk = KazooClient(hosts=server.endpoint, timeout=10.0)
        self.zk.start(timeout=10)

    def agent(self, ttl: int | None = None, hosts: list[tuple[str, int]] | None = None, timeout: float = 2.0,
              **options: Any) -> Any:
        from pgha.dcs.zookeeper import ZooKeeperDcs
        dcs = ZooKeeperDcs(hosts or self.server.hosts, scope=self.scope, ttl=ttl or self.ttl, timeout=timeout,
                           **options)
        self.agents.append(dcs)
        return dcs

    def _path(self, rel: str) -> str:
        return self.prefix + rel

    def write_raw(self, rel: str, value: str) -> None:
        from kazoo.exceptions import NoNodeError
        try:
            self.zk.set(self._path(rel), value.encode())
        except NoNodeError:
            self.zk.create(self._path(rel), value.encode(), makepath=True)

    def delete_raw(self, rel: str) -> None:
        from kazoo.exceptions import NoNodeError
        try:
            self.zk.delete(self._path(rel))
        except NoNodeError:
            pass

    def raw(self, rel: str) -> tuple[str, int, int] | None:
        """(value, mzxid, ephemeralOwner) of a znode, or None."""
        from kazoo.exceptions import NoNodeError
        try:
            data, stat = self.zk.get(self._path(rel))
        except NoNodeError:
            return None
        return data.decode(), stat.mzxid, stat.ephemeralOwner

    def close(self) -> None:
        super().close()
        self.zk.stop()
        self.zk.close()
