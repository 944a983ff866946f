"""etcd v3 backend: Patroni's etcd3 keys, lease and transactions (patroni-compat.md, section 1, "etcd v3").

We do not use etcd3gw: it takes a single endpoint and has no username/password auth, both of which we need; our
own thin gateway client (etcd3_client.py) gives every call a deadline.

Rules
1. Every call has a deadline (its ``timeout``, default ``DEFAULT_TIMEOUT``) and never runs past it; failures raise
   ``DcsError`` naming the endpoint and what failed.
2. One lease per process; the leader key and our member key live on it. Acquire: txn CREATE create_revision=0 ->
   put on our lease. Refresh: keepalive, then move the key to our lease (txn VALUE=name) if it sits on another.
   Release: txn VALUE=name -> delete. ``initialize`` and ``config`` are created only if absent.
3. The watch thread is the only background thread: it only sets an Event, re-opens the stream with a bounded
   backoff (resuming at the next revision, so nothing is lost), and stops on close().
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from typing import Any, Callable, Mapping

import requests

from pgha.core.model import ClusterView
from pgha.dcs.etcd3_client import DEFAULT_TIMEOUT, Deadline, Etcd3Client, EtcdError, b64, prefix_end, unb64
from pgha.dcs.keys import PERMANENT, KeyLayout, parse_cluster
from pgha.ports import DcsError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMEOUT", "Etcd3Client", "Etcd3Dcs", "EtcdError"]

POLL_INTERVAL = 0.25  # member_lease_alive: how often the other lease's TTL is read
_TIMETOLIVE = ("/kv/lease/timetolive", "/lease/timetolive")  # 3.4 gateway serves both, later ones the second
_REVOKE = ("/kv/lease/revoke", "/lease/revoke")

def _absent(key: str) -> dict[str, str]:
    return {"key": b64(key), "target": "CREATE", "create_revision": "0"}


def _equals(key: str, value: str) -> dict[str, str]:
    return {"key": b64(key), "target": "VALUE", "value": b64(value)}


def _version(key: str, version: int) -> dict[str, str]:
    return {"key": b64(key), "target": "MOD", "mod_revision": str(version)}


def _put(key: str, value: str, lease: str | None = None) -> dict[str, str]:
    body = {"key": b64(key), "value": b64(value)}
    return {**body, "lease": lease} if lease else body


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _LeaderWatch:
    """Streams the cluster prefix and sets ``changed`` on every put or delete of the leader key, or of the
    ``failover`` key (a switchover request is acted on at once, not at the next loop_wait)."""

    IDLE = 5.0  # read timeout: an idle stream is re-opened from the next revision

    def __init__(self, client: Etcd3Client, prefix: str, leader_key: str, start_revision: int | None):
        self.changed = threading.Event()
        self._client, self._prefix, self._leader = client, prefix, leader_key
        self._failover = prefix + "failover"
        self._next_rev = start_revision
        self._stop = threading.Event()
        self._response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch {prefix}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():  # ends with close(); each pass bounded by IDLE or a failure
            try:
                self._stream_once()
                backoff = 0.1
            except Exception as e:  # noqa: BLE001 -- the thread must outlive any failure; the backoff bounds it
                log.debug("etcd watch on %s broke: %s", self._prefix, e)
                backoff = min(backoff * 2, 2.0)
            self._stop.wait(backoff)

    def _stream_once(self) -> None:
        create: dict[str, Any] = {"key": b64(self._prefix), "range_end": b64(prefix_end(self._prefix))}
        if self._next_rev:
            create["start_revision"] = str(self._next_rev)
        self._response = resp = self._client.open_stream("/watch", {"create_request": create}, self.IDLE)
        try:
            for line in resp.iter_lines(chunk_size=None):
                if self._stop.is_set():
                    return
                if line:
                    self._handle(json.loads(line))
        except requests.RequestException:
            return  # idle timeout or broken stream: re-open
        finally:
            self._response = None
            resp.close()

    def _handle(self, message: Mapping[str, Any]) -> None:
        if "error" in message:
            if self._client.invalid_token(401, message):
                self._client.forget_token()
            raise DcsError(f"watch error: {message['error']}")
        result = message.get("result") or {}
        if result.get("canceled"):
            if result.get("compact_revision"):  # our start revision was compacted: we may have missed a change
                self._next_rev = None
                self.changed.set()
            raise DcsError(f"watch canceled: {result.get('cancel_reason', '')}")
        if result.get("created") and self._next_rev is None:
            self._next_rev = int(result["header"]["revision"]) + 1
        for event in result.get("events") or []:
            kv = event.get("kv") or {}
            self._next_rev = max(self._next_rev or 0, int(kv.get("mod_revision", 0)) + 1)
            if unb64(kv.get("key")) in (self._leader, self._failover):
                self.changed.set()

    def stop(self, wait: float = 1.0) -> None:
        self._stop.set()
        resp = self._response
        try:  # wake the blocked read: shut the socket down under it (best effort, attribute names vary)
            sock = getattr(getattr(resp.raw, "_connection", None), "sock", None) if resp else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self._thread.join(wait)


class Etcd3Dcs:
    """``pgha.ports.Dcs`` on etcd v3, as Patroni's etcd3 backend does it."""

    def __init__(self, client: Etcd3Client, namespace: str = "/service", scope: str = "", ttl: int = 30):
        self.client, self.ttl = client, ttl
        self.keys = KeyLayout.of(namespace, scope)
        self.last_warnings: list[str] = []
        self.last_revision: int | None = None  # store revision of the last snapshot
        self.last_keepalive: tuple[float, float] | None = None  # (monotonic send time, TTL granted)
        self._lease: str | None = None
        self._written: tuple[str, str, str] | None = None  # (name, value, lease) of our last member write
        self._watch: _LeaderWatch | None = None
        self._paths: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"Etcd3Dcs({self.client!r}, {self.keys.prefix!r})"

    # --- requests -------------------------------------------------------------------------------------
    def _post(self, path: str, body: Mapping[str, Any], d: Deadline) -> dict[str, Any]:
        return self.client.post(path, body, d)

    def _post_alt(self, paths: tuple[str, str], body: Mapping[str, Any], d: Deadline) -> dict[str, Any]:
        """POST to whichever of two gateway paths this server version serves (404 on the other)."""
        first = self._paths.get(paths, paths[0])
        try:
            return self._post(first, body, d)
        except EtcdError as e:
            if e.status != 404 or e.code is not None:  # a gRPC error, not an unknown path
                raise
        other = paths[1] if first == paths[0] else paths[0]
        result = self._post(other, body, d)
        self._paths[paths] = other
        return result

    def _txn(self, compare: list[dict[str, str]], success: list[dict[str, Any]], d: Deadline) -> bool:
        return bool(self._post("/kv/txn", {"compare": compare, "success": success}, d).get("succeeded"))

    def _get(self, key: str, d: Deadline) -> dict[str, Any] | None:
        kvs = self._post("/kv/range", {"key": b64(key)}, d).get("kvs") or []
        return kvs[0] if kvs else None

    # --- lease ----------------------------------------------------------------------------------------
    def set_ttl(self, ttl: int) -> None:
        if ttl != self.ttl:
            self.ttl, self._lease = ttl, None  # the old lease runs out; keys move to the new one when rewritten

    def _grant(self, d: Deadline) -> float:
        sent = time.monotonic()
        r = self._post("/lease/grant", {"TTL": self.ttl}, d)
        if not r.get("ID"):
            raise DcsError(f"etcd lease grant: no lease in the answer: {r.get('error', r)}")
        self._lease, ttl = str(r["ID"]), float(r.get("TTL") or self.ttl)
        self.last_keepalive = (sent, ttl)
        return ttl

    def _keepalive(self, d: Deadline) -> float:
        if self._lease:
            sent = time.monotonic()
            r = self._post("/lease/keepalive", {"ID": self._lease}, d)
            ttl = float((r.get("result") or r).get("TTL") or 0)
            if ttl > 0:
                self.last_keepalive = (sent, ttl)
                return ttl
            log.warning("etcd lease %s expired; granting a new one", self._lease)
        return self._grant(d)

    def renew_lease(self, timeout: float | None = None) -> float:
        return self._keepalive(self.client.deadline(timeout))

    def _with_lease(self, d: Deadline, fn: Callable[[str], Any]) -> Any:
        """fn(our lease), granting one first if needed, and again once if etcd says it no longer exists."""
        if not self._lease:
            self._grant(d)
        try:
            return fn(self._lease or "")
        except EtcdError as e:
            if "lease not found" not in str(e):
                raise
        self._grant(d)
        return fn(self._lease or "")

    # --- reads ----------------------------------------------------------------------------------------
    def snapshot(self, timeout: float | None = None) -> ClusterView:
        prefix = self.keys.prefix
        r = self._post("/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))},
                       self.client.deadline(timeout))
        kvs = {unb64(kv.get("key")): kv for kv in r.get("kvs") or []}
        raw = {key: unb64(kv.get("value")) for key, kv in kvs.items()}
        self.last_revision = int((r.get("header") or {}).get("revision") or 0) or None
        if self._written:  # our member key changed or vanished behind our back: write it again next time
            kv = kvs.get(self.keys.member(self._written[0]))
            if kv is None or raw[self.keys.member(self._written[0])] != self._written[1] \
                    or kv.get("lease") != self._written[2]:
                self._written = None
        versions = {key: int(kv.get("mod_revision") or 0) for key, kv in kvs.items()}
        view, warnings = parse_cluster(raw, prefix, versions)
        for warning in set(warnings) - set(self.last_warnings):
            log.warning("%s", warning)
        self.last_warnings = warnings
        return view

    def member_lease_alive(self, name: str, timeout: float | None = None,
                           window: float | None = None) -> bool | None:
        """Watch the other lease for ``window`` s (default min(ttl, 3) + 1): True if someone renews it.

        Without ``timeout`` the call takes at most ``window`` + the default timeout.
        """
        window = min(self.ttl, 3) + 1 if window is None else window
        d = self.client.deadline(window + self.client.timeout if timeout is None else timeout)
        kv = self._get(self.keys.member(name), d)
        if kv is None:
            return None
        lease = kv.get("lease")
        if not lease or lease == self._lease:
            return False
        return self._lease_renewed(str(lease), min(d.end, time.monotonic() + window), d)

    def _lease_renewed(self, lease: str, until: float, d: Deadline) -> bool:
        """Poll the lease's TTL until ``until``: True as soon as it was provably renewed.

        A reading r (whole seconds, truncated) sent at s and answered at a bounds the expiry: expiry < a + r + 1,
        and, when r >= 1, s + r <= expiry (an expired lease reads 0 until etcd revokes it, so 0 bounds nothing
        from below). A later lower bound reaching an earlier upper bound means the expiry moved: the lease was
        renewed (the TTL going up is the common case). A lease that is gone (TTL -1) is dead.
        """
        upper = math.inf
        for _ in range(int((until - time.monotonic()) / POLL_INTERVAL) + 2):
            sent = time.monotonic()
            ttl = int(self._post_alt(_TIMETOLIVE, {"ID": lease}, d).get("TTL") or 0)
            if ttl < 0:
                return False
            if ttl >= 1 and sent + ttl >= upper:
                return True
            upper = min(upper, time.monotonic() + ttl + 1)
            if time.monotonic() + POLL_INTERVAL >= until:
                break
            time.sleep(POLL_INTERVAL)
        return False

    # --- leader key -----------------------------------------------------------------------------------
    def acquire_leader(self, name: str, timeout: float | None = None) -> bool:
        d, key = self.client.deadline(timeout), self.keys.leader

        def create(lease: str) -> bool:
            return self._txn([_absent(key)], [{"request_put": _put(key, name, lease)}], d)
        return bool(self._with_lease(d, create))

    def refresh_leader(self, name: str, timeout: float | None = None) -> bool:
        d, key = self.client.deadline(timeout), self.keys.leader
        self._keepalive(d)
        kv = self._get(key, d)
        if kv is None or unb64(kv.get("value")) != name:
            return False
        if kv.get("lease") == self._lease:
            return True
        return self._txn([_equals(key, name)], [{"request_put": _put(key, name, self._lease)}], d)

    def release_leader(self, name: str, timeout: float | None = None) -> bool:
        key = self.keys.leader
        return self._txn([_equals(key, name)], [{"request_delete_range": {"key": b64(key)}}],
                         self.client.deadline(timeout))

    # --- other keys -----------------------------------------------------------------------------------
    def touch_member(self, name: str, data: Mapping[str, Any], timeout: float | None = None) -> None:
        d, key, value = self.client.deadline(timeout), self.keys.member(name), _compact(dict(data))
        if self._lease and self._written == (name, value, self._lease):
            return
        self._with_lease(d, lambda lease: self._post("/kv/put", _put(key, value, lease), d))
        self._written = (name, value, self._lease or "")

    def _create(self, key: str, value: str, timeout: float | None) -> bool:
        d = self.client.deadline(timeout)
        return self._txn([_absent(key)], [{"request_put": _put(key, value)}], d)

    def _set(self, key: str, value: str, timeout: float | None) -> None:
        self._post("/kv/put", _put(key, value), self.client.deadline(timeout))

    def claim_initialize(self, timeout: float | None = None) -> bool:
        return self._create(self.keys.initialize, "", timeout)

    def set_initialize(self, system_id: str, timeout: float | None = None) -> None:
        self._set(self.keys.initialize, system_id, timeout)

    def cancel_initialize(self, timeout: float | None = None) -> None:
        self._post("/kv/deleterange", {"key": b64(self.keys.initialize)}, self.client.deadline(timeout))

    def set_config(self, config: Mapping[str, Any], timeout: float | None = None) -> bool:
        return self._create(self.keys.config, _compact(dict(config)), timeout)

    def put_key(self, key: str, value: Any, version: int | None = None, timeout: float | None = None) -> bool:
        full, d = self._permanent(key), self.client.deadline(timeout)
        compare = [] if version is None else [_version(full, version)]
        return self._txn(compare, [{"request_put": _put(full, _compact(value))}], d)

    def delete_key(self, key: str, version: int | None = None, timeout: float | None = None) -> bool:
        full, d = self._permanent(key), self.client.deadline(timeout)
        compare = [] if version is None else [_version(full, version)]
        return self._txn(compare, [{"request_delete_range": {"key": b64(full)}}], d)

    def _permanent(self, key: str) -> str:
        if key not in PERMANENT:
            raise ValueError(f"not a permanent key pgha writes whole: {key!r}")
        return self.keys.key(key)

    def delete_cluster(self, timeout: float | None = None) -> None:
        prefix = self.keys.prefix
        self._post("/kv/deleterange", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))},
                   self.client.deadline(timeout))

    def set_history(self, history: list[list[Any]], timeout: float | None = None) -> None:
        self._set(self.keys.history, _compact(history), timeout)

    def set_status(self, status: Mapping[str, Any], timeout: float | None = None) -> None:
        self._set(self.keys.status, _compact(dict(status)), timeout)

    # --- watch and shutdown ---------------------------------------------------------------------------
    def wait_for_leader_change(self, timeout: float) -> bool:
        """Wait for the watch (started at the first call, from the last snapshot's revision) to see a change."""
        if self._watch is None:
            start = self.last_revision + 1 if self.last_revision else None
            self._watch = _LeaderWatch(self.client, self.keys.prefix, self.keys.leader, start)
        changed = self._watch.changed.wait(max(0.0, timeout))
        if changed:
            self._watch.changed.clear()
        return changed

    def close(self, revoke: bool = True) -> None:
        """Stop the watch; with ``revoke`` drop our lease (our leader and member keys go at once). Never raises."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if revoke and self._lease:
            try:
                self._post_alt(_REVOKE, {"ID": self._lease}, self.client.deadline(None))
            except DcsError as e:
                if "lease not found" not in str(e):  # already expired: nothing to drop
                    log.warning("could not revoke etcd lease %s: %s", self._lease, e)
        self._lease, self._written = None, None
