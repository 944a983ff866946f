"""The verifier's bank workload: accounts whose balances always sum to the same total, and an insert-only ledger
with one row per transfer, tagged with the node that wrote it (port, system identifier, timeline).

Rules
1. One transfer = one transaction: move ``amount`` between two accounts of this run (one UPDATE per account, the
   lower id first, so transfers never deadlock each other), insert its ledger row, COMMIT. The ledger row's
   RETURNING tells the client which node and timeline acknowledged it, so lost writes still name their writer.
2. Clients reconnect after any error, pausing between failed connects; a deadlock or serialization error keeps
   the connection. Connections are opened with ``connect_timeout`` unless the DSN sets it and
   ``application_name=pgha-verify`` (the terminate-backends fault finds them by it); each transaction sets its
   own ``statement_timeout``. No server-side prepared statements, so PgBouncer's transaction pooling works.
3. Every loop is bounded in count and time; a client stops at its deadline or when told, whichever comes first.
   Clients are daemon threads: one stuck in a call past the end is abandoned, its events so far are kept.
4. Tables are ``pgha_verify_accounts`` and ``pgha_verify_ledger``, keyed by a run id, so runs never mix.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgha.verify.report import FAILED, OK, UNKNOWN, LedgerRow, TxEvent

APP_NAME = "pgha-verify"
MAX_TX_PER_CLIENT = 10_000_000

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pgha_verify_accounts (run text NOT NULL, id int NOT NULL, balance bigint NOT NULL,"
    " PRIMARY KEY (run, id))",
    "CREATE TABLE IF NOT EXISTS pgha_verify_ledger (run text NOT NULL, tx text NOT NULL, client int NOT NULL,"
    " src int NOT NULL, dst int NOT NULL, amount int NOT NULL, node text NOT NULL, system_id text NOT NULL,"
    " timeline int NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (run, tx))",
)
# One account at a time, the lower id first: every transfer locks in the same order, so none deadlocks.
MOVE = "UPDATE pgha_verify_accounts SET balance = balance + %(delta)s WHERE run = %(run)s AND id = %(id)s"
# The writer's identity: the port it serves (inet_server_port; a Unix socket has none, then the setting), its
# system identifier and its current timeline (the first 8 hex digits of the current WAL file's name).
LEDGER = ("INSERT INTO pgha_verify_ledger (run, tx, client, src, dst, amount, node, system_id, timeline, at)"
          " SELECT %(run)s, %(tx)s, %(client)s, %(src)s, %(dst)s, %(amount)s,"
          " coalesce(inet_server_port(), current_setting('port')::int)::text, s.system_identifier::text,"
          " ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int, clock_timestamp()"
          " FROM pg_control_system() s"
          " RETURNING node, system_id, timeline, extract(epoch FROM at)::float8")


STATEMENT_TIMEOUT_MS = 3000
# Set inside every transfer, not as a startup option: PgBouncer refuses ``options`` ("unsupported startup
# parameter") and, pooling by transaction, would not keep a session-level SET on the next server connection.
LOCAL_TIMEOUT = f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"


def with_defaults(dsn: str, connect_timeout: int = 2) -> str:
    """Rule 2: the DSN plus the verifier's connection settings where it does not set them itself."""
    given = conninfo_to_dict(dsn)
    extra = {"connect_timeout": connect_timeout, "application_name": APP_NAME}
    return make_conninfo(dsn, **{k: v for k, v in extra.items() if k not in given})


def open_conn(dsn: str, autocommit: bool) -> psycopg.Connection:
    """No server-side prepared statements (``prepare_threshold=None``): behind PgBouncer's transaction pooling
    the next transaction may run on a server connection that never saw the PREPARE."""
    return psycopg.connect(with_defaults(dsn), autocommit=autocommit, prepare_threshold=None)


def connect(dsn: str, timeout: float, autocommit: bool = True) -> psycopg.Connection:
    """A connection to a node that accepts writes through ``dsn``, retrying (bounded) until ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for _ in range(int(timeout / 0.2) + 2):
        try:
            conn = open_conn(dsn, autocommit)
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                conn.close()
                raise psycopg.OperationalError("the server is in recovery (read-only)")
            return conn
        except psycopg.Error as e:
            last = e
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise TimeoutError(f"no server accepted writes within {timeout:.0f}s: {first_line(last)}")


def first_line(e: BaseException | None) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0] if e is not None else ""


def create(dsn: str, run: str, accounts: int, initial: int, timeout: float = 60.0) -> int:
    """Rule 4: the tables, and this run's accounts; returns the total the balances must always sum to."""
    with connect(dsn, timeout) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        with conn.transaction():
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO pgha_verify_accounts (run, id, balance) VALUES (%s, %s, %s)",
                                [(run, i, initial) for i in range(accounts)])
    return accounts * initial


def balance_sum(dsn: str, run: str, timeout: float) -> int | None:
    """The sum of this run's balances on a node that accepts writes, or None when none answered in time."""
    try:
        with connect(dsn, timeout) as conn:
            value = conn.execute("SELECT sum(balance) FROM pgha_verify_accounts WHERE run = %s",
                                 (run,)).fetchone()[0]
            return int(value) if value is not None else None
    except (psycopg.Error, TimeoutError):
        return None


@dataclass
class FinalState:
    node: str  # the port of the node read
    system_id: str
    timeline: int
    total: int | None
    balances: dict[int, int]
    ledger: list[LedgerRow]


def read_final(dsn: str, run: str, timeout: float) -> FinalState:
    """The ledger and balances of this run on the node that accepts writes now (TimeoutError when none does)."""
    with connect(dsn, timeout) as conn:
        node, system_id, timeline = conn.execute(
            "SELECT coalesce(inet_server_port(), current_setting('port')::int)::text, s.system_identifier::text,"
            " ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int"
            " FROM pg_control_system() s").fetchone()
        with conn.transaction():  # one snapshot for both reads
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            balances = dict(conn.execute("SELECT id, balance FROM pgha_verify_accounts WHERE run = %s",
                                         (run,)).fetchall())
            rows = conn.execute("SELECT tx, node, system_id, timeline, extract(epoch FROM at)::float8, src, dst,"
                                " amount FROM pgha_verify_ledger WHERE run = %s", (run,)).fetchall()
    ledger = [LedgerRow(*row) for row in rows]
    total = sum(balances.values()) if balances else None
    return FinalState(node, system_id, timeline, total, {int(k): int(v) for k, v in balances.items()}, ledger)


class Client(threading.Thread):
    """One client: transfers through ``dsn`` until ``stop`` or ``deadline`` (time.monotonic()), at most ``rate``
    per second (0: as fast as it can). Records one TxEvent per transaction attempt, connect errors apart."""

    def __init__(self, index: int, dsn: str, run: str, accounts: int, seed: int, deadline: float,
                 stop: threading.Event, rate: float = 50.0, retry_pause: float = 0.1) -> None:
        super().__init__(name=f"verify-client-{index}", daemon=True)
        self.index, self.dsn, self.run_id, self.accounts = index, dsn, run, accounts
        self.rng = random.Random(seed * 1009 + index)
        self.deadline, self.stop_event, self.rate, self.retry_pause = deadline, stop, rate, retry_pause
        self.events: list[TxEvent] = []
        self.connect_errors: list[tuple[float, str]] = []
        self.seq = 0

    def _alive(self) -> bool:
        return not self.stop_event.is_set() and time.monotonic() < self.deadline and self.seq < MAX_TX_PER_CLIENT

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        next_at = time.monotonic()
        try:
            while self._alive():
                if conn is None or conn.closed:
                    conn = self._connect()
                    if conn is None:
                        self.stop_event.wait(self.retry_pause)
                        continue
                if self.rate > 0:
                    next_at = max(next_at + 1.0 / self.rate, time.monotonic())  # no catching up after a pause
                    if self.stop_event.wait(max(0.0, next_at - time.monotonic())):
                        break
                if not self._transfer(conn):
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> psycopg.Connection | None:
        try:
            return open_conn(self.dsn, autocommit=False)
        except psycopg.Error as e:
            self.connect_errors.append((time.time(), first_line(e)))
            return None

    def _transfer(self, conn: psycopg.Connection) -> bool:
        """One transaction (rule 1); False when the connection should be dropped."""
        self.seq += 1
        src, dst = self.rng.sample(range(self.accounts), 2)
        args = {"run": self.run_id, "tx": f"c{self.index}-{self.seq}", "client": self.index, "src": src,
                "dst": dst, "amount": self.rng.randint(1, 100)}
        start = time.time()
        try:
            conn.execute(LOCAL_TIMEOUT)
            for account in sorted((src, dst)):
                delta = -args["amount"] if account == src else args["amount"]
                conn.execute(MOVE, {"run": self.run_id, "id": account, "delta": delta})
            node, system_id, timeline, at = conn.execute(LEDGER, args).fetchone()
        except psycopg.Error as e:
            self.events.append(TxEvent(self.index, args["tx"], start, time.time(), FAILED, error=first_line(e)))
            return self._recoverable(conn, e)
        try:
            conn.commit()
        except psycopg.Error as e:
            self.events.append(TxEvent(self.index, args["tx"], start, time.time(), UNKNOWN, error=first_line(e)))
            return False
        self.events.append(TxEvent(self.index, args["tx"], start, time.time(), OK, node, system_id, timeline, at))
        return True

    @staticmethod
    def _recoverable(conn: psycopg.Connection, e: psycopg.Error) -> bool:
        if isinstance(e, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)):
            try:
                conn.rollback()
                return True
            except psycopg.Error:
                return False
        return False
