"""The DCS as one simulated node sees it: a ``MemoryDcs`` plus the time its calls take (slow DCS, partitions).

``MemoryDcs`` answers at once, so latency is modelled here, around it, without moving the world's clock inside a
tick (the world runs one node's tick atomically at the world's time; see world.py):
- every call costs time: the DCS latency when it answers within the call's ``timeout``, else the whole timeout;
- a call whose latency exceeds its timeout fails with ``DcsError``; half of those (seeded coin) were applied by the
  DCS anyway and only the answer was lost, as with a real etcd;
- a call refused because the node is cut off, or the DCS has no quorum, also costs its whole timeout (the client
  waits for an answer that never comes).
``cost`` adds up what the current tick has spent: the node's clock (the agent's, and the stamps of what its
PostgreSQL does) is the world's time plus ``cost``, and its next tick comes ``cost`` later.

Rules
1. The store applies every call at the time the tick started, except that a keepalive's lease runs from when it
   reached the DCS (half its latency after it was sent); the agent counts from when it sent it, as a real one
   does, so its estimate is never later than the store's expiry. PostgreSQL's changes are stamped with the
   node's local time (world time plus the DCS time the tick has spent so far).
2. The one write that lets *another* node act, giving the leader key up (``release_leader``, and the revoke in
   ``close``), is applied when a real DCS would receive it: ``now + cost`` (via ``defer``), never before the stop
   that precedes it in the same tick. Its answer is computed at once from the key's current holder.
3. ``wait_for_leader_change`` costs nothing (the watch is a stream already open), nor does ``close``.
4. Every other method of the port is wrapped generically (``__getattr__``), so the port may grow arguments and
   methods without this file changing; a call's deadline is its ``timeout`` keyword (the executor and the loop
   always pass one), else the etcd backend's default.
"""

from __future__ import annotations

from typing import Any, Callable

from pgha.dcs.etcd3_client import DEFAULT_TIMEOUT
from pgha.dcs.memory import MemoryDcs
from pgha.ports import DcsError

_KEEPALIVES = frozenset({"renew_lease", "refresh_leader"})


class SimDcs:
    def __init__(self, inner: MemoryDcs, latency: Callable[[], float], coin: Callable[[], bool],
                 defer: Callable[[float], Callable[[Callable[[], None]], None]]) -> None:
        self.inner = inner
        self.latency = latency
        self.coin = coin
        self.defer = defer  # defer(delay)(fn): run fn that many seconds from now
        self.cost = 0.0

    @property
    def ttl(self) -> int:
        return self.inner.ttl

    @ttl.setter
    def ttl(self, value: int) -> None:
        self.inner.ttl = value

    def set_ttl(self, ttl: int) -> None:
        self.inner.set_ttl(ttl)

    def _call(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        timeout = kwargs.get("timeout")
        budget = DEFAULT_TIMEOUT if timeout is None else timeout
        lat = self.latency()
        if lat > budget:
            self.cost += budget
            if self.coin():
                try:
                    fn(*args, **kwargs)
                except DcsError:
                    pass
            raise DcsError(f"no answer within {budget:.2f}s (DCS latency {lat:.2f}s)")
        try:
            result = fn(*args, **kwargs)
        except DcsError:
            self.cost += budget
            raise
        if getattr(fn, "__name__", "") in _KEEPALIVES:
            self._arrived(self.cost + lat / 2)
        self.cost += lat
        return result

    def _arrived(self, delay: float) -> None:
        """A keepalive reaches the DCS ``delay`` seconds after the tick started, so its lease runs from then: the
        store (which applied it at the tick's start) is told so. The agent still counts from when it sent it."""
        lease = self.inner.store.lease(getattr(self.inner, "_lease", 0))  # MemoryDcs has no public lease id
        if lease is not None and delay > 0:
            lease.expires_at += delay

    def wait_for_leader_change(self, timeout: float) -> bool:
        return self.inner.wait_for_leader_change(0)

    def release_leader(self, name: str, timeout: float | None = None) -> bool:
        entry = self.inner.store.get(self.inner.keys.leader)
        holds = entry is not None and entry.value == name

        def release(**_: Any) -> bool:
            delay = self.cost + self.latency()  # when the request reaches the DCS
            if delay <= 0:
                return self.inner.release_leader(name, timeout=timeout)
            self.inner.store.enter(self.inner.agent_id)  # refused now when cut off
            self.defer(delay)(lambda: _quietly(self.inner.release_leader, name))
            return holds
        return self._call(release, (), {"timeout": timeout})

    def close(self, revoke: bool = True) -> None:
        if revoke and self.cost > 0:
            self.defer(self.cost)(lambda: self.inner.close(True))
            return
        self.inner.close(revoke)

    def __getattr__(self, name: str) -> Any:
        """Every other public method of the DCS port is a call that costs time: wrapped once, then cached."""
        target = getattr(self.inner, name)
        if name.startswith("_") or not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(target, args, kwargs)
        call.__name__ = name
        self.__dict__[name] = call
        return call


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    """A deferred write whose sender has moved on: a refusal (cut off meanwhile) is simply lost."""
    try:
        fn(*args)
    except DcsError:
        pass
