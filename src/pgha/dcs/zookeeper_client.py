"""The kazoo client as the ZooKeeper backend (zookeeper.py) needs it: bounded connects, no requests queued while
disconnected, the negotiated session timeout recorded, pings only while the backend wants kazoo to keep the
session alive (rule 2 of zookeeper.py), and a close that either ends the session or lets it run out.

kazoo's private parts are used here and only here (its connection's _connect/_send_ping, _call, _session_id):
tested with kazoo 2.11.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import KeeperState

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0  # one TCP connect attempt of the reconnect loop


class Handler(SequentialThreadingHandler):
    """kazoo's threading handler with TCP connects capped at CONNECT_TIMEOUT (not a whole session timeout)."""

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout"):
            kwargs["timeout"] = min(kwargs["timeout"], CONNECT_TIMEOUT)
        return super().create_connection(*args, **kwargs)


class Client(KazooClient):
    """kazoo's client that refuses requests while disconnected, records the negotiated session timeout and an
    authentication failure, and pings only while ``pinging``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinging, self.auth_failed = True, False
        self.negotiated: float | None = None
        self.given_up_at: float | None = None  # an old session (set_ttl): closed when this passes
        conn = self._connection
        connect, ping = conn._connect, conn._send_ping

        def _connect(*a: Any) -> Any:
            read_timeout, connect_timeout = connect(*a)
            self.negotiated = round(read_timeout * 1.5) / 1000.0  # kazoo reads after 2/3 of the negotiated T
            return read_timeout, connect_timeout

        def _send_ping(*a: Any) -> None:
            if self.pinging:
                ping(*a)
        conn._connect, conn._send_ping = _connect, _send_ping

    def _call(self, request: Any, async_object: Any) -> Any:
        if self._state == KeeperState.CONNECTING:
            async_object.set_exception(ConnectionLoss("not connected"))
            return False
        return super()._call(request, async_object)

    def _session_callback(self, state: Any) -> None:
        if state == KeeperState.AUTH_FAILED:
            self.auth_failed = True
        super()._session_callback(state)

    @property
    def session(self) -> int | None:
        return self._session_id if self.connected else None

    def drop_connection(self) -> None:
        """Break the current connection (kazoo reconnects); the session survives if we come back within T."""
        try:
            self._connection._socket.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass


def stop(client: Client, revoke: bool) -> None:
    """Close the session (revoke), or just stop talking so that it runs out by itself."""
    try:
        if revoke:
            client.stop()
        else:  # no closeSession: the connection thread ends at its next reconnect attempt
            client._stopped.set()
            client.drop_connection()
            client._safe_close()
        client.close()
    except Exception as e:  # noqa: BLE001 -- closing is best effort, never raises
        log.debug("closing a ZooKeeper client: %s", e)
