"""The ZooKeeper session as pgha's lease, for the ZooKeeper backend (zookeeper.py, whose rules 1-3 it carries
out): the kazoo client started and connected within a deadline, a new session when the ttl changes (the old one
kept until our znodes moved), each request's answer within its deadline, and the keepalive that renews the lease.

The lease is the session. Why ``renew_lease`` may count the negotiated session timeout T from the moment it sent
its request: the server touches a session on every packet it receives from it, setting its expiry to at least
receipt + T (expiry buckets round *up* to the next tick), and receipt is after our send; a new ZooKeeper leader
restarts every session's full timeout (only later, never earlier). That holds when the server that answered
tracks sessions itself: a standalone server or the ensemble's leader (asked once per connection with the ``srvr``
command). A follower passes our touches on to its leader only when the leader next pings it (every tickTime/2),
and one cut off from its leader goes on answering for up to syncLimit x tickTime; then we count T/2 only, which
covers that as long as syncLimit x tickTime + tickTime/2 + the agent's renew interval stay within T/2 (ZooKeeper's
defaults: 10.5 s + loop_wait for T >= 2 x (10.5 s + loop_wait)); an unknown mode counts as a follower. T is the
*negotiated* timeout (the server clamps the asked ttl into its min/max session timeout), never the asked one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from kazoo.exceptions import AuthFailedError, BadVersionError, KazooException, NoNodeError, NodeExistsError, \
    NotEmptyError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from pgha.dcs.etcd3_client import Deadline
from pgha.dcs.zookeeper_client import Client, Handler
from pgha.dcs.zookeeper_client import stop as stop_client
from pgha.ports import DcsError

log = logging.getLogger("pgha.dcs.zookeeper")


class Session:
    """Mixed into ``ZooKeeperDcs``: the connection, session and lease half of it. The state it uses is set up by
    ``ZooKeeperDcs.__init__`` (ensemble, ttl, timeout, _options, _client, _old, _lease_mode, _session_id, _mode,
    last_keepalive)."""

    ensemble: str
    ttl: int
    timeout: float
    root: str
    _options: dict[str, Any]
    _client: Client | None
    _old: list[Client]
    _lease_mode: bool
    _session_id: int | None
    _mode: tuple[Any, str]
    last_keepalive: tuple[float, float] | None

    # --- connection -----------------------------------------------------------------------------------
    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def _error(self, what: str) -> DcsError:
        return DcsError(f"ZooKeeper {self.ensemble}: {what}")

    def _ready(self, d: Deadline) -> Client:
        """The connected client, started if needed; DcsError when not connected before the deadline."""
        client = self._client
        if client is None:
            retry = KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0)
            client = self._client = Client(hosts=self.ensemble, timeout=float(self.ttl), handler=Handler(),
                                            connection_retry=retry, command_retry=None, logger=log,
                                            **self._options)
            client.pinging = not self._lease_mode
            client.start_async()
        if not client._live.wait(max(0.0, d.left())):
            if client.auth_failed:
                self._auth_failed(client)
            raise self._error(f"not connected within {d.seconds:g}s")
        return client

    def _auth_failed(self, client: Client) -> None:
        """The server refused our auth_data: drop this client (the next call tries again) and say so."""
        if self._client is client:
            self._client = None
        threading.Thread(target=stop_client, args=(client, True), daemon=True).start()
        raise self._error("authentication failed (auth_data refused)")

    def _session(self, d: Deadline) -> Client:
        """_ready() for the calls that hold our znodes: a ttl changed by set_ttl takes a new session here."""
        old = self._client
        if old is not None and old._session_timeout != int(self.ttl * 1000):
            self._client = None
            if old.session is None:
                threading.Thread(target=stop_client, args=(old, True), daemon=True).start()
            else:
                old.pinging, old.given_up_at = False, time.monotonic() + old._session_timeout / 1000.0 + 1
                self._old.append(old)
        return self._ready(d)

    def _retire(self, owners: set[int]) -> None:
        """Close old sessions that own none of our znodes, or whose own timeout has passed since set_ttl."""
        for old in list(self._old):
            if old.session not in owners or time.monotonic() > (old.given_up_at or 0):
                self._old.remove(old)
                threading.Thread(target=stop_client, args=(old, True), daemon=True).start()

    def _wait(self, client: Client, result: Any, d: Deadline, what: str) -> Any:
        """The answer of one request; NoNode/NodeExists/BadVersion/NotEmpty are left to the caller."""
        try:
            return result.get(timeout=max(0.001, d.left()))
        except (NoNodeError, NodeExistsError, BadVersionError, NotEmptyError):
            raise
        except KazooTimeoutError:
            client.drop_connection()
            raise self._error(f"{what} timed out after {d.seconds:g}s") from None
        except AuthFailedError:
            self._auth_failed(client)
        except KazooException as e:
            raise self._error(f"{what}: {type(e).__name__} {e}".rstrip()) from None

    # --- lease ----------------------------------------------------------------------------------------
    def set_ttl(self, ttl: int) -> None:
        self.ttl = ttl  # the session timeout asked at the next lease-using call (see _session)

    def renew_lease(self, timeout: float | None = None) -> float:
        d = self._deadline(timeout)
        self._lease_mode = True
        client = self._session(d)
        client.pinging = False
        sent = time.monotonic()
        self._wait(client, client.exists_async(self.root), d, "session keepalive")
        session, granted = client.session, self._granted(client, d)
        if self._session_id is not None and session != self._session_id:
            log.warning("ZooKeeper session %x is gone; now on session %x", self._session_id, session or 0)
        self._session_id = session
        self.last_keepalive = (sent, granted)
        return granted

    def _granted(self, client: Client, d: Deadline) -> float:
        """T, or T/2 when the server that answered is not the one expiring sessions (see the module docstring)."""
        negotiated = client.negotiated or float(self.ttl)
        sock = getattr(client._connection, "_socket", None)
        if self._mode[0] is not sock:
            self._mode = (sock, self._server_mode(client, sock, d))
        return negotiated if self._mode[1] in ("standalone", "leader") else negotiated / 2

    def _server_mode(self, client: Client, sock: Any, d: Deadline) -> str:
        try:
            peer = sock.getpeername()[:2]
            probe = client.handler.create_connection(
                address=peer, timeout=max(0.05, min(d.left(), 1.0)), use_ssl=client.use_ssl, ca=client.ca,
                certfile=client.certfile, keyfile=client.keyfile, keyfile_password=client.keyfile_password,
                verify_certs=client.verify_certs)
            with probe:
                probe.settimeout(max(0.05, min(d.left(), 1.0)))
                probe.sendall(b"srvr")
                answer = b""
                while chunk := probe.recv(4096):
                    answer += chunk
        except (OSError, AttributeError, ValueError) as e:
            log.info("ZooKeeper %s: could not ask the server's mode (%s); counting T/2", self.ensemble, e)
            return ""
        found = re.search(rb"Mode: (\w+)", answer)
        return found.group(1).decode() if found else ""
