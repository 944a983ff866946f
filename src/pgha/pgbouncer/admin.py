"""PgBouncer's admin console (the special ``pgbouncer`` database), spoken with psycopg's libpq layer.

The console understands only the simple query protocol (psycopg's ``execute`` uses the extended one, which it
answers with "extended query protocol not supported by admin console"), so commands go through ``PGconn``'s
``send_query`` and results are read with a deadline: every call is bounded, and a command still running at its
deadline (PAUSE waits for the transactions in flight) is abandoned by closing that connection.

``Pending`` is a command sent and not yet answered, polled without blocking: PAUSE is sent on a connection of
its own, the daemon goes on watching the DCS meanwhile.
"""

from __future__ import annotations

import select
import time

import psycopg
from psycopg import pq


class AdminError(Exception):
    pass


def _text(value: bytes | str | None) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else value or "").strip()


class Pending:
    """A command sent on its own connection; ``poll()`` is True once PgBouncer answered it."""

    def __init__(self, conn: psycopg.Connection, command: str) -> None:
        self.conn, self.command, self.sent = conn, command, time.monotonic()
        self.done, self.error = False, None

    def poll(self, timeout: float = 0.0) -> bool:
        if self.done:
            return True
        pgconn = self.conn.pgconn
        deadline = time.monotonic() + timeout
        while True:
            try:
                pgconn.consume_input()
            except psycopg.Error as e:
                self.error, self.done = f"{self.command}: {e}", True
                return True
            while not pgconn.is_busy():
                res = pgconn.get_result()
                if res is None:
                    self.done = True
                    return True
                if res.status == pq.ExecStatus.FATAL_ERROR:
                    self.error = _text(res.error_message)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([pgconn.socket], [], [], left)

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass


class Admin:
    """Commands on one admin connection, opened on first use and again after any failure."""

    def __init__(self, dsn: str, timeout: float = 3.0) -> None:
        self.dsn, self.timeout = dsn, timeout
        self.conn: psycopg.Connection | None = None
        self.spare: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn, dbname="pgbouncer", autocommit=True,
                                   connect_timeout=max(1, int(self.timeout)))
        except psycopg.Error as e:
            raise AdminError(f"cannot reach PgBouncer's admin console: {e}") from None

    def command(self, sql: str, timeout: float | None = None) -> list[dict[str, str | None]]:
        """Run one console command; its rows as dicts (empty for RELOAD, RESUME, ...). AdminError on an error
        answer, a broken connection or no answer in ``timeout`` s (the connection is then dropped)."""
        if self.conn is None or self.conn.closed:
            self.conn = self._connect()
        pending = Pending(self.conn, sql)
        rows: list[dict[str, str | None]] = []
        pgconn = self.conn.pgconn
        try:
            pgconn.send_query(sql.encode())
        except psycopg.Error as e:
            self.close()
            raise AdminError(f"{sql}: {e}") from None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                pgconn.consume_input()
            except psycopg.Error as e:
                self.close()
                raise AdminError(f"{sql}: {e}") from None
            while not pgconn.is_busy():
                res = pgconn.get_result()
                if res is None:
                    if pending.error:
                        raise AdminError(f"{sql}: {pending.error}")
                    return rows
                if res.status == pq.ExecStatus.FATAL_ERROR:
                    pending.error = _text(res.error_message)
                elif res.status == pq.ExecStatus.TUPLES_OK:
                    names = [(res.fname(c) or b"").decode() for c in range(res.nfields)]
                    for r in range(res.ntuples):
                        rows.append({names[c]: (lambda v: None if v is None else v.decode(errors="replace"))(
                            res.get_value(r, c)) for c in range(res.nfields)})
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise AdminError(f"{sql}: no answer from PgBouncer in time")
            select.select([pgconn.socket], [], [], left)

    def keep_spare(self) -> None:
        """Open, ahead of time, the connection ``send`` will use: a switchover's PAUSE then costs one packet,
        not a connection and a SCRAM exchange (the old leader stops within about 50 ms of the request)."""
        if self.spare is None or self.spare.closed:
            self.spare = self._connect()

    def send(self, sql: str) -> Pending:
        """Send ``sql`` on a connection of its own (the spare when one is open) and return at once (for PAUSE)."""
        conn, self.spare = (self.spare, None) if self.spare is not None and not self.spare.closed else \
            (self._connect(), None)
        try:
            conn.pgconn.send_query(sql.encode())
        except psycopg.Error as e:
            conn.close()
            raise AdminError(f"{sql}: {e}") from None
        return Pending(conn, sql)

    def close(self) -> None:
        for conn in (self.conn, self.spare):
            if conn is not None:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
        self.conn = self.spare = None
