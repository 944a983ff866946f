"""Consul backend: Patroni's Consul keys, session and service (patroni-compat.md, section 1, "Consul").

EXPERIMENTAL: written to Consul's HTTP API documentation and tested against exchanges recorded from it
(tests/unit/test_dcs_consul.py); not yet run against a real Consul server.

Keys are the etcd ones without the leading slash (``service/<scope>/leader``, ...). One session per process, named
``<scope>-<name>``, ``TTL`` = ttl/2 (``"15.0s"``), ``LockDelay`` ``"0.001s"``, ``Behavior`` ``delete``, ``Checks``
from the configuration (default none). ``leader`` and ``members/<name>`` are written with ``?acquire=<session>``, so
Consul deletes them when the session is invalidated. ``ClusterView.versions`` holds each key's ``ModifyIndex``;
put_key/delete_key compare it with ``?cas=`` (0 = absent: ``cas=0`` creates only).

The lease. ``renew_lease`` returns the session TTL T we asked (or less, if Consul's answer says less), counted from
the moment the renew was sent. Consul's documented contract is that T is a *lower bound* for invalidation: the
leader server does not invalidate a session before T has passed since it last renewed it (in practice it waits 2T,
which is why we ask ttl/2, as Patroni does). Its renew reaches the leader server at r after our send s, and a
newly elected Consul leader restarts every session's full timer (only later, never earlier; the old leader stops
serving before a new one can be elected, Raft's leader lease). So the session, and with it our leader key (behavior
delete, lock delay 1 ms), outlives s + T: a primary that fences itself before s + T is gone before anyone else can
acquire the key. Two things break the bound and are the operator's to avoid: session ``checks`` (a failing check
invalidates the session at once: a warning is logged when some are configured) and destroying the session by hand.
A renew answered 404 means the session is gone (its keys with it): a new one is created in the same call.
Consul refusing our TTL (``Invalid Session TTL``) lowers it to the agent's ``SessionTTLMin`` (a longer lease: safe).

Rules
1. Every call has a deadline and raises ``DcsError`` naming the agent (consul_client.py); the token is never shown.
2. acquire = GET (absent?) then ``PUT ?acquire``; refresh = renew (skipped when one was sent in the last second),
   then if the key's Session is not ours, ``DELETE ?cas=ModifyIndex`` and ``PUT ?acquire``; release =
   ``DELETE ?cas=ModifyIndex`` of a key holding our name. A member key held by another session is taken over the
   same way.
3. ``wait_for_leader_change`` runs in the caller's thread: blocking GETs of the leader key (``?index=``), bounded by
   its timeout; a change is a different (exists, ModifyIndex) from the last one seen, never a bare index move.
4. Service registration (``register_service``) follows the member data given to ``touch_member``: registered while
   ``state`` is running, deregistered when stopped and on close; sent again only when what it would send changed.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Mapping

from pgha.core.model import ClusterView
from pgha.dcs.consul_client import (DEFAULT_TIMEOUT, ConsulClient, ConsulError, go_duration, registration, seconds,
                                    service_name)
from pgha.dcs.etcd3_client import Deadline
from pgha.dcs.keys import PERMANENT, KeyLayout, parse_cluster
from pgha.ports import DcsError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMEOUT", "ConsulClient", "ConsulDcs", "service_name"]

POLL_INTERVAL = 0.5  # member_lease_alive
MIN_WAIT = 0.05  # wait_for_leader_change: less time than this left is not worth another request
RENEW_REUSE = 1.0  # refresh_leader does not renew again within this many seconds of a renew
DEFAULT_SESSION_TTL_MIN = 10.0


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _value(entry: Mapping[str, Any]) -> str:
    raw = entry.get("Value")
    return base64.b64decode(raw).decode("utf-8", "replace") if raw else ""


class ConsulDcs:
    """``pgha.ports.Dcs`` on Consul, as Patroni's consul backend does it."""

    def __init__(self, client: ConsulClient, namespace: str = "/service", scope: str = "", ttl: int = 30, *,
                 name: str | None = None, checks: tuple[str, ...] | list[str] = (), register_service: bool = False,
                 service_tags: tuple[str, ...] | list[str] = (), service_check_interval: str = "5s",
                 service_check_tls_server_name: str | None = None):
        self.client, self.ttl, self.scope, self.name = client, ttl, scope, name
        self.keys = KeyLayout(KeyLayout.of(namespace, scope).prefix.lstrip("/"))
        self.checks = list(checks)
        self.register_service, self.service_tags = register_service, list(service_tags)
        self.service_check_interval = service_check_interval
        self.service_check_tls_server_name = service_check_tls_server_name
        self.last_warnings: list[str] = []
        self.last_keepalive: tuple[float, float] | None = None  # (monotonic send time, TTL counted)
        self.session: str | None = None
        self._ttl_floor: float | None = None  # the agent's SessionTTLMin, once it refused our TTL
        self._session_ttl = 0.0
        self._old_bound: float | None = None  # set_ttl: when the session still holding our leader key may end
        self._old_session: str | None = None
        self._leader_session: str | None = None  # the leader key's session in the last snapshot
        self._written: tuple[str, str, str] | None = None  # (name, value, session) of our last member write
        self._leader_seen: tuple[bool, int] | None = None  # (exists, ModifyIndex) of the leader key
        self._watch_index = 0
        self._service: str | None = None  # the last registration sent (JSON), or None
        if self.checks:
            log.warning("consul: session checks %s can invalidate the session before its TTL: the primary's "
                        "lease bound then does not hold (see pgha/dcs/consul.py)", ", ".join(self.checks))

    def __repr__(self) -> str:
        return f"ConsulDcs({self.client!r}, {self.keys.prefix!r})"

    # --- helpers --------------------------------------------------------------------------------------
    def _d(self, timeout: float | None) -> Deadline:
        return self.client.deadline(timeout)

    @staticmethod
    def _kv(key: str) -> str:
        return f"kv/{key}"

    def _get(self, key: str, d: Deadline) -> dict[str, Any] | None:
        a = self.client.request("GET", self._kv(key), d, read=True, ok=(200, 404))
        return a.data[0] if a.status == 200 and a.data else None

    def _put(self, key: str, value: str, d: Deadline, **params: Any) -> bool:
        return self.client.request("PUT", self._kv(key), d, params=params, raw=value).data is True

    def _delete(self, key: str, d: Deadline, **params: Any) -> bool:
        return self.client.request("DELETE", self._kv(key), d, params=params).data is not False

    def _learn(self, name: str) -> None:
        if self.name is None:
            self.name = name

    # --- session --------------------------------------------------------------------------------------
    def set_ttl(self, ttl: int) -> None:
        """A new session at the next call; until our leader key has moved onto it, the leases we return end no
        later than the old session's own bound (the key still lives on the old one)."""
        if ttl != self.ttl:
            if self.session and self.last_keepalive is not None and self._leader_session == self.session:
                self._old_bound = self.last_keepalive[0] + self.last_keepalive[1]
            self._old_session, self.ttl, self.session, self._written = self.session, ttl, None, None

    def _wanted_ttl(self) -> float:
        return max(self.ttl / 2.0, self._ttl_floor or 0.0)

    def _create(self, d: Deadline) -> float:
        for _ in range(2):  # a second time only after Consul refused the TTL and told us its minimum
            ttl = self._wanted_ttl()
            body = {"Name": f"{self.scope}-{self.name or ''}".rstrip("-"), "TTL": f"{ttl}s",
                    "LockDelay": "0.001s", "Behavior": "delete", "Checks": self.checks}
            sent = time.monotonic()
            try:
                a = self.client.request("PUT", "session/create", d, body=body)
            except ConsulError as e:
                if "Invalid Session TTL" not in e.body or self._ttl_floor is not None:
                    raise
                self._ttl_floor = self.client.session_ttl_min(d, DEFAULT_SESSION_TTL_MIN)
                log.warning("consul: session TTL %ss refused; using the agent's SessionTTLMin %ss", ttl,
                            self._ttl_floor)
                continue
            session = (a.data or {}).get("ID") if isinstance(a.data, dict) else None
            if not session:
                raise self.client.error(f"session create: no ID in the answer: {a.text[:100]}")
            self.session, self._session_ttl, self._written = session, ttl, None
            self.last_keepalive = (sent, ttl)
            return ttl
        raise self.client.error("session create: TTL refused twice")

    def _renew(self, d: Deadline) -> float:
        if self.session:
            sent = time.monotonic()
            a = self.client.request("PUT", f"session/renew/{self.session}", d, ok=(200, 404))
            if a.status == 200:
                info = a.data[0] if isinstance(a.data, list) and a.data else {}
                ttl = min(self._session_ttl, seconds(info.get("TTL")) or self._session_ttl)
                self.last_keepalive = (sent, ttl)
                return ttl
            log.warning("consul session %s is gone (%s); creating a new one", self.session, a.text.strip()[:80])
            self.session = None
        return self._create(d)

    def renew_lease(self, timeout: float | None = None) -> float:
        sent = time.monotonic()
        ttl = self._renew(self._d(timeout))
        return ttl if self._old_bound is None else max(0.0, min(ttl, self._old_bound - sent))

    def _ensure_session(self, d: Deadline) -> str:
        if not self.session:
            self._create(d)
        return self.session or ""

    # --- reads ----------------------------------------------------------------------------------------
    def snapshot(self, timeout: float | None = None) -> ClusterView:
        prefix = self.keys.prefix
        a = self.client.request("GET", self._kv(prefix), self._d(timeout), params={"recurse": "true"}, read=True,
                                ok=(200, 404))
        entries = {e["Key"]: e for e in (a.data if a.status == 200 and isinstance(a.data, list) else [])
                   if isinstance(e, dict) and "Key" in e}
        raw = {key: _value(e) for key, e in entries.items()}
        leader = entries.get(self.keys.leader)
        self._leader_session = leader.get("Session") if leader else None
        if self._leader_session is None or self._leader_session != self._old_session:
            self._old_bound = None  # the old session holds no leader key (any more)
        self._leader_seen = (leader is not None, int(leader.get("ModifyIndex") or 0) if leader else 0)
        self._watch_index = self._leader_seen[1] or a.index
        if self._written:
            e = entries.get(self.keys.member(self._written[0]))
            if e is None or raw[self.keys.member(self._written[0])] != self._written[1] \
                    or e.get("Session") != self._written[2]:
                self._written = None
        versions = {key: int(e.get("ModifyIndex") or 0) for key, e in entries.items()}
        view, warnings = parse_cluster(raw, prefix, versions)
        for warning in set(warnings) - set(self.last_warnings):
            log.warning("%s", warning)
        self.last_warnings = warnings
        return view

    def member_lease_alive(self, name: str, timeout: float | None = None,
                           window: float | None = None) -> bool | None:
        """Consul shows no renewals, so a live owner is recognised by its member key being written again (under
        the same session) within ``window``; a session that ends within it is dead. An idle owner whose session
        lives on is not recognised (False): touch_member then takes the key over."""
        self._learn(name)
        window = min(self.ttl, 3) + 1 if window is None else window
        d = self._d(window + self.client.timeout if timeout is None else timeout)
        entry = self._get(self.keys.member(name), d)
        if entry is None:
            return None
        session, index = entry.get("Session"), entry.get("ModifyIndex")
        if not session or session == self.session:
            return False
        until = min(d.end, time.monotonic() + window)
        for _ in range(int(window / POLL_INTERVAL) + 2):
            if time.monotonic() + POLL_INTERVAL >= until:
                break
            time.sleep(POLL_INTERVAL)
            a = self.client.request("GET", f"session/info/{session}", d, read=True)
            if not a.data:
                return False
            entry = self._get(self.keys.member(name), d)
            if entry is None or entry.get("Session") != session:
                return False
            if entry.get("ModifyIndex") != index:
                return True
        return False

    # --- leader key -----------------------------------------------------------------------------------
    def acquire_leader(self, name: str, timeout: float | None = None) -> bool:
        self._learn(name)
        d = self._d(timeout)
        session = self._ensure_session(d)
        if self._get(self.keys.leader, d) is not None:
            return False  # create-only, even for the holder (an acquire by the holder would succeed)
        return self._put(self.keys.leader, name, d, acquire=session)

    def refresh_leader(self, name: str, timeout: float | None = None) -> bool:
        d = self._d(timeout)
        if self.last_keepalive is None or not self.session or time.monotonic() - self.last_keepalive[0] > RENEW_REUSE:
            self._renew(d)
        entry = self._get(self.keys.leader, d)
        if entry is None or _value(entry) != name:
            return False
        if entry.get("Session") == self.session or self._take_over(self.keys.leader, entry, name, d):
            self._old_bound = None
            return True
        return False

    def _take_over(self, key: str, entry: Mapping[str, Any], value: str, d: Deadline) -> bool:
        """Move ``key`` (held by another session) to ours: delete at its ModifyIndex, then acquire."""
        if not self._delete(key, d, cas=entry.get("ModifyIndex") or 0):
            return False
        return self._put(key, value, d, acquire=self._ensure_session(d))

    def release_leader(self, name: str, timeout: float | None = None) -> bool:
        d = self._d(timeout)
        entry = self._get(self.keys.leader, d)
        if entry is None or _value(entry) != name:
            return False
        return self._delete(self.keys.leader, d, cas=entry.get("ModifyIndex") or 0)

    # --- other keys -----------------------------------------------------------------------------------
    def touch_member(self, name: str, data: Mapping[str, Any], timeout: float | None = None) -> None:
        self._learn(name)
        d, key, value = self._d(timeout), self.keys.member(name), _compact(dict(data))
        if self.register_service:
            self._update_service(data, d)
        if self.session and self._written == (name, value, self.session):
            return
        session = self._ensure_session(d)
        if not self._put(key, value, d, acquire=session):
            entry = self._get(key, d)
            if entry is not None and not self._take_over(key, entry, value, d):
                raise self.client.error(f"{key} is held by another session ({entry.get('Session')})")
            if entry is None and not self._put(key, value, d, acquire=session):
                raise self.client.error(f"{key}: acquire refused")
        self._written = (name, value, session)

    def claim_initialize(self, timeout: float | None = None) -> bool:
        return self._put(self.keys.initialize, "", self._d(timeout), cas=0)

    def set_initialize(self, system_id: str, timeout: float | None = None) -> None:
        self._put(self.keys.initialize, system_id, self._d(timeout))

    def cancel_initialize(self, timeout: float | None = None) -> None:
        self._delete(self.keys.initialize, self._d(timeout))

    def set_config(self, config: Mapping[str, Any], timeout: float | None = None) -> bool:
        return self._put(self.keys.config, _compact(dict(config)), self._d(timeout), cas=0)

    def put_key(self, key: str, value: Any, version: int | None = None, timeout: float | None = None) -> bool:
        full, d = self._permanent(key), self._d(timeout)
        params = {} if version is None else {"cas": version}
        return self._put(full, _compact(value), d, **params)

    def delete_key(self, key: str, version: int | None = None, timeout: float | None = None) -> bool:
        full, d = self._permanent(key), self._d(timeout)
        if version is None:
            return self._delete(full, d)
        if version == 0:  # Consul's DELETE ?cas=0 never deletes: "absent, as expected" is checked by a read
            return self._get(full, d) is None
        return self._delete(full, d, cas=version)

    def _permanent(self, key: str) -> str:
        if key not in PERMANENT:
            raise ValueError(f"not a permanent key pgha writes whole: {key!r}")
        return self.keys.key(key)

    def delete_cluster(self, timeout: float | None = None) -> None:
        self._delete(self.keys.prefix, self._d(timeout), recurse="true")

    def set_history(self, history: list[list[Any]], timeout: float | None = None) -> None:
        self._put(self.keys.history, _compact(history), self._d(timeout))

    def set_status(self, status: Mapping[str, Any], timeout: float | None = None) -> None:
        self._put(self.keys.status, _compact(dict(status)), self._d(timeout))

    # --- service registration -------------------------------------------------------------------------
    def service_registration(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The body of ``PUT /v1/agent/service/register`` for this member data (None: not registrable)."""
        return registration(data, self.scope, self.name or "", self.service_tags, self.service_check_interval,
                            f"{self._wanted_ttl() * 10}s", self.service_check_tls_server_name)

    def _update_service(self, data: Mapping[str, Any], d: Deadline) -> None:
        """Register (state running), deregister (state stopped), else leave as it is; failures are logged."""
        try:
            if data.get("state") == "stopped":
                self._deregister(d)
                return
            body = self.service_registration(data)
            if body is None or data.get("state") != "running" or _compact(body) == self._service:
                return
            log.info("consul: registering service %s (%s) tags %s", body["Name"], body["ID"], body["Tags"])
            self.client.request("PUT", "agent/service/register", d, body=body, dc=False)
            self._service = _compact(body)
        except DcsError as e:
            log.warning("consul: service registration failed: %s", e)

    def _deregister(self, d: Deadline) -> None:
        if self._service is None:
            return
        log.info("consul: deregistering service %s/%s", self.scope, self.name)
        self.client.request("PUT", f"agent/service/deregister/{self.scope}/{self.name}", d, dc=False)
        self._service = None

    # --- watch and shutdown ---------------------------------------------------------------------------
    def wait_for_leader_change(self, timeout: float) -> bool:
        """Blocking GETs of the leader key from the last index seen, until it changes or ``timeout`` passes.
        Failures are logged and the rest of the time waited out (the caller's loop is not spun)."""
        end = time.monotonic() + max(0.0, timeout)
        for _ in range(64):  # each pass blocks until a change or the end; spurious wake-ups are few
            left = end - time.monotonic()
            if left <= MIN_WAIT:
                return False
            params = {}
            if self._leader_seen is not None and self._watch_index:
                params = {"index": self._watch_index, "wait": go_duration(max(0.001, left - 0.05) * 16 / 17)}
            try:
                a = self.client.request("GET", self._kv(self.keys.leader), Deadline(left), params=params,
                                        read=True, ok=(200, 404))
            except DcsError as e:
                log.debug("consul leader watch: %s", e)
                time.sleep(max(0.0, end - time.monotonic()))
                return False
            entry = a.data[0] if a.status == 200 and isinstance(a.data, list) and a.data else None
            seen = (entry is not None, int(entry.get("ModifyIndex") or 0) if entry else 0)
            previous, self._leader_seen = self._leader_seen, seen
            self._watch_index = seen[1] or a.index or self._watch_index  # the key's index, else Consul's
            if previous is not None and previous != seen:
                return True
        return False

    def close(self, revoke: bool = True) -> None:
        """With ``revoke``: deregister our service and destroy the session (our leader and member keys go at
        once). Never raises."""
        if revoke:
            try:
                self._deregister(self._d(None))
            except DcsError as e:
                log.warning("consul: could not deregister the service: %s", e)
            if self.session:
                try:
                    self.client.request("PUT", f"session/destroy/{self.session}", self._d(None))
                except DcsError as e:
                    log.warning("could not destroy consul session %s: %s", self.session, e)
        self.session, self._written = None, None
