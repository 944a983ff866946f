"""ZooKeeper backend (kazoo): Patroni's ZooKeeper keys (patroni-compat.md, section 1, "ZooKeeper").

Znodes are the etcd keys' paths (``/<namespace>/<scope>/leader``, ``members/<name>``, ...) holding the same values.
``leader`` and ``members/<name>`` are EPHEMERAL znodes of this agent's session, the rest persistent. Acquire =
create ephemeral; refresh = nothing unless the znode's ephemeralOwner is not our session (then delete + create in
one multi, so nobody can slip in between); release = delete at the version read, only if it holds our name.
``ClusterView.versions`` holds each znode's ``mzxid`` (zxid of its last write, never reused, never 0: 0 is
"absent"); put_key/delete_key compare it, then write at the znode version read, so no ABA can pass.

The lease is the session (zookeeper_session.py says why ``renew_lease`` may count T from its send).

Rules
1. Every call has a deadline (``timeout``, default ``DEFAULT_TIMEOUT``) and raises ``DcsError`` naming the ensemble
   when it passes. Requests are never queued while disconnected (kazoo would send them after we gave up), kazoo's
   command retry is not used, and a request that timed out drops the connection (kazoo then reconnects, to the
   next host). kazoo's connection thread reconnects forever in the background, each attempt bounded.
2. Once ``renew_lease`` was called (the agent), kazoo's own pings are off: only our calls keep the session alive,
   so it expires T after the agent stops calling, as an etcd lease does when keepalives stop. Operator tools
   and the REST API, which never renew, keep kazoo's pings. A session that expired is replaced by kazoo; the
   next renew notices and logs it.
3. ``set_ttl``: a new session at the next lease-using call; the old one is kept (not pinged) until it owns none
   of our znodes or its own timeout has passed since, so refresh_leader/touch_member can move our znodes to the
   new session first. ``close(revoke=True)`` closes the session: our ephemerals vanish at once.
4. The watch only sets an Event (kazoo's callback thread); it is armed again from the caller's thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Mapping

from kazoo.exceptions import BadVersionError, NoNodeError, NodeExistsError, NotEmptyError
from kazoo.protocol.states import EventType
from kazoo.security import make_acl

from pgha.core.model import ClusterView
from pgha.dcs.zookeeper_client import Client
from pgha.dcs.zookeeper_client import stop as stop_client
from pgha.dcs.etcd3_client import Deadline
from pgha.dcs.keys import PERMANENT, KeyLayout, parse_cluster
from pgha.dcs.zookeeper_session import Session
from pgha.ports import DcsError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
POLL_INTERVAL = 0.25  # member_lease_alive
SNAPSHOT_ATTEMPTS = 6
_WELL_KNOWN = ("leader", "initialize", "config", "history", "status", "sync", "failover", "failsafe",
               "optime/leader")
_ACL_PERMS = ("read", "write", "create", "delete", "admin", "all")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class ZooKeeperDcs(Session):
    """``pgha.ports.Dcs`` on ZooKeeper, as Patroni's zookeeper backend lays it out."""

    def __init__(self, hosts: list[tuple[str, int]], namespace: str = "/service", scope: str = "", ttl: int = 30,
                 *, timeout: float = DEFAULT_TIMEOUT, use_ssl: bool = False, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None, key_password: str | None = None,
                 verify: bool = True, set_acls: Mapping[str, Any] | None = None,
                 auth_data: list[tuple[str, str]] | tuple = ()):
        if not hosts:
            raise ValueError("zookeeper: no hosts given")
        self.ensemble = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
        self.ttl, self.timeout = ttl, timeout
        self.keys = KeyLayout.of(namespace, scope)
        self.root = self.keys.prefix.rstrip("/") or "/"
        acl = [make_acl("x509", principal, **{p: p.upper() in {str(x).upper() for x in perms} for p in _ACL_PERMS})
               for principal, perms in (set_acls or {}).items()]
        self._options = {"use_ssl": use_ssl, "ca": cacert, "certfile": cert, "keyfile": key,
                         "keyfile_password": key_password, "verify_certs": verify, "default_acl": acl or None,
                         "auth_data": list(auth_data) or None}
        self.last_warnings: list[str] = []
        self.last_keepalive: tuple[float, float] | None = None  # (monotonic send time, TTL counted)
        self._client: Client | None = None
        self._old: list[Client] = []
        self._lease_mode = False
        self._holds = False  # we created an ephemeral znode (close(revoke=False) then lets the session run out)
        self._session_id: int | None = None  # the session our last renew kept
        self._mode: tuple[Any, str] = (None, "")  # (socket, "standalone"|"leader"|"follower"|"") per connection
        self._written: tuple[str, str, int] | None = None  # (name, value, session) of our last member write
        self._changed = threading.Event()
        self._armed = False
        self._leader_seen: tuple[int, int] | None | bool = False  # (czxid, mzxid), None absent, False unknown

    def __repr__(self) -> str:
        return f"ZooKeeperDcs({self.ensemble!r}, {self.keys.prefix!r})"

    # --- reads ----------------------------------------------------------------------------------------
    def _collect(self, client: Client, d: Deadline) -> tuple[dict[str, tuple[str, Any]], tuple]:
        """One read of the prefix: {relative key: (value, stat)} and a signature of every znode's last write."""
        requests = {"": client.get_children_async(self.root, include_data=True),
                    "members": client.get_children_async(f"{self.root}/members", include_data=True)}
        requests.update({rel: client.get_async(f"{self.root}/{rel}") for rel in _WELL_KNOWN})
        answers: dict[str, Any] = {}
        for rel, result in requests.items():
            try:
                answers[rel] = self._wait(client, result, d, "read")
            except NoNodeError:
                answers[rel] = None
        root, members = answers.pop(""), answers.pop("members")
        dirs = (root[1].pzxid if root else None, members[1].pzxid if members else None)
        member_requests = {f"members/{name}": client.get_async(f"{self.root}/members/{name}")
                           for name in (members[0] if members else [])}
        for rel, result in member_requests.items():
            try:
                answers[rel] = self._wait(client, result, d, "read")
            except NoNodeError:
                answers[rel] = None
        found = {rel: (data.decode("utf-8", "replace"), stat) for rel, answer in answers.items()
                 if answer is not None for data, stat in [answer]}
        signature = (dirs, tuple(sorted((rel, stat.mzxid) for rel, (_, stat) in found.items())))
        return found, signature

    def snapshot(self, timeout: float | None = None) -> ClusterView:
        """Read until consistent: nothing was written on the server during one read (its zxid did not move), or
        two reads in a row saw the same last write of every znode and the same children (no write in between).
        ZooKeeper has no multi-key read: znodes written faster than we read (SNAPSHOT_ATTEMPTS reads, or the
        deadline) give the last read as it is, as Patroni always does -- never an error."""
        d = self._deadline(timeout)
        client = self._ready(d)
        previous = None
        for attempt in range(SNAPSHOT_ATTEMPTS):
            before = client.last_zxid
            started = time.monotonic()
            found, signature = self._collect(client, d)
            if before == client.last_zxid or signature == previous:
                break
            if attempt == SNAPSHOT_ATTEMPTS - 1 or d.left() < 2 * (time.monotonic() - started):
                log.debug("%s: our znodes kept changing; using the last of %d reads", self, attempt + 1)
                break
            previous = signature
        raw = {rel: value for rel, (value, _) in found.items()}
        leader = found.get("leader")
        self._leader_seen = (leader[1].czxid, leader[1].mzxid) if leader else None
        if self._written:  # our member znode changed, vanished or left our session: write it again next time
            mine = found.get(f"members/{self._written[0]}")
            if mine is None or mine[0] != self._written[1] or mine[1].ephemeralOwner != self._written[2]:
                self._written = None
        self._retire({stat.ephemeralOwner for _, stat in found.values()})
        view, warnings = parse_cluster(raw, "", {rel: stat.mzxid for rel, (_, stat) in found.items()})
        for warning in set(warnings) - set(self.last_warnings):
            log.warning("%s", warning)
        self.last_warnings = warnings
        return view

    def member_lease_alive(self, name: str, timeout: float | None = None,
                           window: float | None = None) -> bool | None:
        """Is ``members/<name>`` an ephemeral of another session that lives on? None when absent, False when it
        is ours or vanishes (its session expired) while we watch.

        Another session's renewals cannot be seen, only its end: the znode is watched for ``window`` s (default
        min(ttl, 3) + 1), longer when the deadline allows, up to our own session timeout + 1.5 s (a session that
        stopped renewing is gone by then: expiry rounds up by one tick). Still there at the end: True -- also
        when the window was too short to prove it (an owner that died less than T ago reads as alive: refusing
        a duplicate is the safe side)."""
        window = min(self.ttl, 3) + 1 if window is None else window
        d = self._deadline(window + self.timeout if timeout is None else timeout)
        client = self._ready(d)
        path = self.keys.member(name)
        until = time.monotonic() + max(window, min(d.left() - self.timeout / 2, self.ttl + 1.5))
        stat = self._wait(client, client.exists_async(path), d, "read")
        if stat is None:
            return None
        if not stat.ephemeralOwner or stat.ephemeralOwner == client.session:
            return False
        owner = stat.ephemeralOwner
        while time.monotonic() + POLL_INTERVAL < until:
            time.sleep(POLL_INTERVAL)
            stat = self._wait(client, client.exists_async(path), d, "read")
            if stat is None or stat.ephemeralOwner != owner:
                return False
        return True

    # --- leader key -----------------------------------------------------------------------------------
    def acquire_leader(self, name: str, timeout: float | None = None) -> bool:
        d = self._deadline(timeout)
        client = self._session(d)
        try:
            self._wait(client, client.create_async(self.keys.leader, name.encode(), ephemeral=True, makepath=True),
                       d, "create leader")
            self._holds = True
            return True
        except NodeExistsError:
            return False

    def refresh_leader(self, name: str, timeout: float | None = None) -> bool:
        d = self._deadline(timeout)
        client = self._session(d)
        try:
            data, stat = self._wait(client, client.get_async(self.keys.leader), d, "read leader")
        except NoNodeError:
            return False
        if data.decode("utf-8", "replace") != name:
            return False
        if stat.ephemeralOwner == client.session:
            return True
        return self._move(client, self.keys.leader, name, stat.version, d)

    def _move(self, client: Client, path: str, value: str, version: int, d: Deadline) -> bool:
        """Delete and create ``path`` on our session in one multi: False when it changed since ``version``."""
        tx = client.transaction()
        tx.delete(path, version=version)
        tx.create(path, value.encode(), ephemeral=True)
        results = self._wait(client, tx.commit_async(), d, f"move {path} to our session")
        self._holds = True
        return not any(isinstance(r, Exception) for r in results)

    def release_leader(self, name: str, timeout: float | None = None) -> bool:
        d = self._deadline(timeout)
        client = self._ready(d)
        try:
            data, stat = self._wait(client, client.get_async(self.keys.leader), d, "read leader")
            if data.decode("utf-8", "replace") != name:
                return False
            self._wait(client, client.delete_async(self.keys.leader, version=stat.version), d, "delete leader")
            return True
        except (NoNodeError, BadVersionError):
            return False

    # --- other keys -----------------------------------------------------------------------------------
    def touch_member(self, name: str, data: Mapping[str, Any], timeout: float | None = None) -> None:
        d, path, value = self._deadline(timeout), self.keys.member(name), _compact(dict(data))
        client = self._session(d)
        session = client.session or 0
        if self._written == (name, value, session):
            return
        try:
            _, stat = self._wait(client, client.get_async(path), d, "read member")
        except NoNodeError:
            stat = None
        try:
            if stat is None:
                self._wait(client, client.create_async(path, value.encode(), ephemeral=True, makepath=True), d,
                           "create member")
            elif stat.ephemeralOwner == session:
                self._wait(client, client.set_async(path, value.encode()), d, "write member")
            elif not self._move(client, path, value, stat.version, d):
                raise self._error(f"{path} changed while it was moved to our session")
        except (NodeExistsError, NoNodeError, BadVersionError):
            raise self._error(f"{path} changed while it was written") from None
        self._written, self._holds = (name, value, session), True

    def _set(self, rel: str, value: str, d: Deadline) -> None:
        client, path = self._ready(d), self.keys.key(rel)
        for _ in range(3):  # set, else create; someone may create or delete it in between
            try:
                self._wait(client, client.set_async(path, value.encode()), d, f"write {rel}")
                return
            except NoNodeError:
                pass
            try:
                self._wait(client, client.create_async(path, value.encode(), makepath=True), d, f"create {rel}")
                return
            except NodeExistsError:
                pass
        raise self._error(f"{path} kept changing while it was written")

    def _create(self, rel: str, value: str, timeout: float | None) -> bool:
        d = self._deadline(timeout)
        client = self._ready(d)
        try:
            self._wait(client, client.create_async(self.keys.key(rel), value.encode(), makepath=True), d,
                       f"create {rel}")
            return True
        except NodeExistsError:
            return False

    def claim_initialize(self, timeout: float | None = None) -> bool:
        return self._create("initialize", "", timeout)

    def set_initialize(self, system_id: str, timeout: float | None = None) -> None:
        self._set("initialize", system_id, self._deadline(timeout))

    def cancel_initialize(self, timeout: float | None = None) -> None:
        self.delete_key("initialize", timeout=timeout, _check=False)

    def set_config(self, config: Mapping[str, Any], timeout: float | None = None) -> bool:
        return self._create("config", _compact(dict(config)), timeout)

    def _stat(self, client: Client, rel: str, d: Deadline) -> Any:
        return self._wait(client, client.exists_async(self.keys.key(rel)), d, f"read {rel}")

    def put_key(self, key: str, value: Any, version: int | None = None, timeout: float | None = None) -> bool:
        rel, d = self._permanent(key), self._deadline(timeout)
        if version is None:
            self._set(rel, _compact(value), d)
            return True
        if version == 0:
            return self._create(rel, _compact(value), d.left())
        client = self._ready(d)
        stat = self._stat(client, rel, d)
        if stat is None or stat.mzxid != version:
            return False
        try:
            self._wait(client, client.set_async(self.keys.key(rel), _compact(value).encode(), version=stat.version),
                       d, f"write {rel}")
            return True
        except (NoNodeError, BadVersionError):
            return False

    def delete_key(self, key: str, version: int | None = None, timeout: float | None = None, *,
                   _check: bool = True) -> bool:
        rel, d = self._permanent(key) if _check else key, self._deadline(timeout)
        client = self._ready(d)
        stat = self._stat(client, rel, d) if version is not None else None
        if version is not None and (stat.mzxid if stat else 0) != version:
            return False
        if version == 0:
            return True  # absent, as expected
        try:
            self._wait(client, client.delete_async(self.keys.key(rel), version=stat.version if stat else -1), d,
                       f"delete {rel}")
        except NoNodeError:
            pass
        except BadVersionError:
            return False
        return True

    def _permanent(self, key: str) -> str:
        if key not in PERMANENT:
            raise ValueError(f"not a permanent key pgha writes whole: {key!r}")
        return key

    def delete_cluster(self, timeout: float | None = None) -> None:
        """The cluster's znode and everything under it, deepest first (a member znode created meanwhile is
        deleted on a second pass; what is still appearing after that is left to its owner)."""
        d = self._deadline(timeout)
        client = self._ready(d)
        for _ in range(3):
            try:
                self._delete_tree(client, self.root, d)
                return
            except NotEmptyError:
                continue
        raise self._error(f"{self.root}: znodes kept appearing while deleting the cluster")

    def _delete_tree(self, client: Client, path: str, d: Deadline) -> None:
        try:
            children = self._wait(client, client.get_children_async(path), d, f"list {path}")
        except NoNodeError:
            return
        for child in children:
            self._delete_tree(client, f"{path.rstrip('/')}/{child}", d)
        try:
            self._wait(client, client.delete_async(path), d, f"delete {path}")
        except NoNodeError:
            pass

    def set_history(self, history: list[list[Any]], timeout: float | None = None) -> None:
        self._set("history", _compact(history), self._deadline(timeout))

    def set_status(self, status: Mapping[str, Any], timeout: float | None = None) -> None:
        self._set("status", _compact(dict(status)), self._deadline(timeout))

    # --- watch and shutdown ---------------------------------------------------------------------------
    def _on_leader_event(self, event: Any) -> None:
        self._armed = False
        if event.type != EventType.NONE:  # NONE: the connection broke; the next arm compares the stat
            self._changed.set()

    def wait_for_leader_change(self, timeout: float) -> bool:
        """Wait for the leader znode to be created, deleted or written (since the last snapshot, or the last
        change reported). The watch is one-shot: armed again here, comparing the znode with the last one seen."""
        end = time.monotonic() + max(0.0, timeout)
        client = self._client
        if not self._armed and not self._changed.is_set() and client is not None and client.connected:
            try:
                d = Deadline(min(max(0.0, timeout), self.timeout))
                stat = self._wait(client, client.exists_async(self.keys.leader, watch=self._on_leader_event), d,
                                  "watch leader")
                self._armed = True
                seen = (stat.czxid, stat.mzxid) if stat else None
                if self._leader_seen is not False and seen != self._leader_seen:
                    self._changed.set()
                self._leader_seen = seen
            except DcsError as e:
                log.debug("%s", e)
        changed = self._changed.wait(max(0.0, end - time.monotonic()))
        if changed:
            self._changed.clear()
            self._leader_seen = False
        return changed

    def close(self, revoke: bool = True) -> None:
        """Close our session (``revoke``: our ephemerals go at once) or let it run out (only when we created
        ephemerals: otherwise it is closed); never raises, returns within the default timeout."""
        clients, self._client, self._old = [c for c in (self._client, *self._old) if c is not None], None, []
        revoke = revoke or not self._holds
        threads = [threading.Thread(target=stop_client, args=(c, revoke), daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        end = time.monotonic() + self.timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._written, self._armed, self._session_id, self._holds = None, False, None, False
