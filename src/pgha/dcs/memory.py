"""An in-memory DCS for the simulator and the tests: etcd's lease and compare-and-swap semantics, no I/O.

``MemoryStore`` is the shared "cluster"; each agent gets its own ``MemoryDcs`` on it, implementing ``pgha.ports.Dcs``
and passing the same contract suite as the etcd backend (tests/contract/).

Rules
1. Deterministic: no threads, no real time, no sleeping. Time is the injected ``clock``; lease expiry is evaluated
   against it at the start of every operation (a lease expires ``ttl`` seconds after its last grant/keepalive, and
   its expiry deletes every key attached to it, as etcd does).
2. Single process, single thread: the simulator drives all agents from one loop.
3. Fault hooks: ``set_reachable(agent_id, False)`` makes every call of that agent raise ``DcsError`` (a partition;
   the others go on, and its lease keeps ticking down). ``set_outage(True)`` makes every call raise; when the outage
   ends every lease gets a full TTL again, as etcd's new leader extends all leases on election.
4. ``timeout`` arguments are accepted and ignored: every call answers at once.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pgha.core.model import ClusterView
from pgha.dcs.keys import PERMANENT, KeyLayout, compact_json, parse_cluster
from pgha.ports import DcsError

_agent_ids = itertools.count(1)


@dataclass
class _Entry:
    value: str
    lease: int  # 0: permanent
    create_rev: int
    mod_rev: int


@dataclass
class _Lease:
    ttl: int
    expires_at: float
    kept_alive_at: float | None = None  # last keepalive (not the grant)


class MemoryStore:
    """The shared key space, leases and fault switches of one simulated DCS."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._kv: dict[str, _Entry] = {}
        self._leases: dict[int, _Lease] = {}
        self._key_rev: dict[str, int] = {}  # revision of the last put/delete of each key
        self._rev = 1
        self._lease_ids = itertools.count(1)
        self._unreachable: set[str] = set()
        self._outage = False
        self._expired_at: float | None = None  # the last instant _expire looked at
        # Snapshots are read far more often than keys change: each key's parse is kept by its value, and a whole
        # view by the store revision it was read at (parse_cluster's memo; views are never mutated).
        self.parse_memo: dict[tuple[Any, ...], Any] = {}
        self.views: dict[str, tuple[int, ClusterView, list[str]]] = {}

    # --- fault hooks ----------------------------------------------------------------------------------
    def set_reachable(self, agent_id: str, reachable: bool) -> None:
        (self._unreachable.discard if reachable else self._unreachable.add)(agent_id)

    def set_outage(self, down: bool) -> None:
        if down and not self._outage:
            self._expire()
        if not down and self._outage:
            now = self._clock()
            for lease in self._leases.values():
                lease.expires_at = max(lease.expires_at, now + lease.ttl)
        self._outage = down

    # --- operations (agents go through MemoryDcs) -----------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def reachable(self, agent_id: str) -> bool:
        return not self._outage and agent_id not in self._unreachable

    def enter(self, agent_id: str) -> None:
        """Every agent call starts here: refuse it when cut off, then apply expiry."""
        if self._outage:
            raise DcsError("memory DCS: outage (no quorum)")
        if agent_id in self._unreachable:
            raise DcsError(f"memory DCS: unreachable from {agent_id}")
        self._expire()

    def _expire(self) -> None:
        now = self._clock()
        if now == self._expired_at:
            return  # done at this instant already: expiries only move later, and a new lease ends after now
        self._expired_at = now
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            self.revoke(lease_id)

    def grant(self, ttl: int) -> int:
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl=ttl, expires_at=self._clock() + ttl)
        return lease_id

    def keepalive(self, lease_id: int) -> int:
        """The TTL granted again, or 0 when the lease no longer exists."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        lease.expires_at = self._clock() + lease.ttl
        lease.kept_alive_at = self._clock()
        return lease.ttl

    def lease(self, lease_id: int) -> _Lease | None:
        return self._leases.get(lease_id)

    def revoke(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)
        for key in [k for k, e in self._kv.items() if e.lease == lease_id]:
            self.delete(key)

    def get(self, key: str) -> _Entry | None:
        return self._kv.get(key)

    @property
    def revision(self) -> int:
        return self._rev

    def range(self, prefix: str) -> dict[str, _Entry]:
        return {k: e for k, e in sorted(self._kv.items()) if k.startswith(prefix)}

    def put(self, key: str, value: str, lease: int = 0) -> None:
        if lease and lease not in self._leases:
            raise DcsError("memory DCS: requested lease not found")
        self._rev += 1
        old = self._kv.get(key)
        self._kv[key] = _Entry(value, lease, old.create_rev if old else self._rev, self._rev)
        self._key_rev[key] = self._rev

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        if key in self._kv:
            return False
        self.put(key, value, lease)
        return True

    def delete(self, key: str) -> bool:
        if self._kv.pop(key, None) is None:
            return False
        self._rev += 1
        self._key_rev[key] = self._rev
        return True

    def key_revision(self, key: str) -> int:
        self._expire()
        return self._key_rev.get(key, 0)


class MemoryDcs:
    """One agent's view of a ``MemoryStore``: the ``pgha.ports.Dcs`` protocol, one lease per agent."""

    def __init__(self, store: MemoryStore, namespace: str = "/service", scope: str = "", ttl: int = 30, *,
                 agent_id: str | None = None):
        self.store = store
        self.ttl = ttl
        self.keys = KeyLayout.of(namespace, scope)
        self.agent_id = agent_id or f"agent-{next(_agent_ids)}"
        self.last_warnings: list[str] = []
        self._lease = 0
        self._seen_leader_rev = store.key_revision(self.keys.leader)

    def _enter(self) -> None:
        self.store.enter(self.agent_id)

    def set_ttl(self, ttl: int) -> None:
        if ttl != self.ttl:
            self.ttl = ttl
            self._lease = 0  # a new lease at the next renew; the old one runs out by itself

    def snapshot(self, timeout: float | None = None) -> ClusterView:
        self._enter()
        prefix, store = self.keys.prefix, self.store
        cached = store.views.get(prefix)
        if cached is not None and cached[0] == store.revision:
            self.last_warnings = list(cached[2])
            return cached[1]
        entries = store.range(prefix)
        raw = {k: e.value for k, e in entries.items()}
        versions = {k: e.mod_rev for k, e in entries.items()}
        view, self.last_warnings = parse_cluster(raw, prefix, versions, store.parse_memo)
        store.views[prefix] = (store.revision, view, list(self.last_warnings))
        return view

    def renew_lease(self, timeout: float | None = None) -> float:
        self._enter()
        granted = self.store.keepalive(self._lease) if self._lease else 0
        if not granted:
            self._lease = self.store.grant(self.ttl)
            granted = self.ttl
        return float(granted)

    def _ensure_lease(self) -> int:
        if not self._lease or self.store.lease(self._lease) is None:
            self._lease = self.store.grant(self.ttl)
        return self._lease

    def acquire_leader(self, name: str, timeout: float | None = None) -> bool:
        self._enter()
        return self.store.create(self.keys.leader, name, self._ensure_lease())

    def refresh_leader(self, name: str, timeout: float | None = None) -> bool:
        self.renew_lease()
        entry = self.store.get(self.keys.leader)
        if entry is None or entry.value != name:
            return False
        if entry.lease != self._lease:
            self.store.put(self.keys.leader, name, self._lease)
        return True

    def release_leader(self, name: str, timeout: float | None = None) -> bool:
        self._enter()
        entry = self.store.get(self.keys.leader)
        return entry is not None and entry.value == name and self.store.delete(self.keys.leader)

    def touch_member(self, name: str, data: Mapping[str, Any], timeout: float | None = None) -> None:
        self._enter()
        value = compact_json(dict(data))
        lease = self._ensure_lease()
        entry = self.store.get(self.keys.member(name))
        if entry is None or entry.value != value or entry.lease != lease:
            self.store.put(self.keys.member(name), value, lease)

    def member_lease_alive(self, name: str, timeout: float | None = None,
                           window: float | None = None) -> bool | None:
        """True when the key's lease (not ours) was kept alive within the last ``window`` seconds (default
        ``min(ttl, 3) + 1``).

        The etcd backend watches the lease for that long into the future; here time cannot pass inside a call,
        so the same window is looked at in the past. A lease only granted, never kept alive, reads as dead.
        """
        self._enter()
        entry = self.store.get(self.keys.member(name))
        if entry is None:
            return None
        lease = self.store.lease(entry.lease) if entry.lease and entry.lease != self._lease else None
        if lease is None or lease.kept_alive_at is None:
            return False
        window = min(self.ttl, 3) + 1 if window is None else window
        return self.store.now() - lease.kept_alive_at <= window

    def claim_initialize(self, timeout: float | None = None) -> bool:
        self._enter()
        return self.store.create(self.keys.initialize, "")

    def set_initialize(self, system_id: str, timeout: float | None = None) -> None:
        self._enter()
        self.store.put(self.keys.initialize, system_id)

    def cancel_initialize(self, timeout: float | None = None) -> None:
        self._enter()
        self.store.delete(self.keys.initialize)

    def set_config(self, config: Mapping[str, Any], timeout: float | None = None) -> bool:
        self._enter()
        return self.store.create(self.keys.config, json.dumps(dict(config), separators=(",", ":")))

    def put_key(self, key: str, value: Any, version: int | None = None, timeout: float | None = None) -> bool:
        full = self._permanent(key)
        if version is not None and self._version(full) != version:
            return False
        self.store.put(full, json.dumps(value, separators=(",", ":")))
        return True

    def delete_key(self, key: str, version: int | None = None, timeout: float | None = None) -> bool:
        full = self._permanent(key)
        if version is not None and self._version(full) != version:
            return False
        self.store.delete(full)
        return True

    def _permanent(self, key: str) -> str:
        if key not in PERMANENT:
            raise ValueError(f"not a permanent key pgha writes whole: {key!r}")
        self._enter()
        return self.keys.key(key)

    def _version(self, full: str) -> int:
        entry = self.store.get(full)
        return entry.mod_rev if entry is not None else 0

    def delete_cluster(self, timeout: float | None = None) -> None:
        self._enter()
        for key in list(self.store.range(self.keys.prefix)):
            self.store.delete(key)

    def set_history(self, history: list[list[Any]], timeout: float | None = None) -> None:
        self._enter()
        self.store.put(self.keys.history, json.dumps(history, separators=(",", ":")))

    def set_status(self, status: Mapping[str, Any], timeout: float | None = None) -> None:
        self._enter()
        self.store.put(self.keys.status, json.dumps(dict(status), separators=(",", ":")))

    def wait_for_leader_change(self, timeout: float) -> bool:
        """Never waits: True when the leader key was put or deleted since the last call (or construction)."""
        if not self.store.reachable(self.agent_id):
            return False
        rev = self.store.key_revision(self.keys.leader)
        changed, self._seen_leader_rev = rev != self._seen_leader_rev, rev
        return changed

    def close(self, revoke: bool = True) -> None:
        """Never raises: when cut off, the lease simply runs out."""
        if revoke and self._lease and self.store.reachable(self.agent_id):
            self.store.revoke(self._lease)
        self._lease = 0
