"""`pgha pgbouncer`: keep PgBouncer's ``[databases]`` pointed at the leader, and hold clients through a switchover.

The daemon watches the leader key (and the ``failover`` key) in the DCS, as `pgha router` does, and drives
PgBouncer through its admin console (admin.py); the file is changed by ini.py (line-preserving) and files.py
(atomic, same mode and owner).

On a leader change OLD -> NEW (a failover, or the end of a switchover):
- NEW's REST API is polled (``GET /patroni`` every 50 ms, at most ttl+5 s; the key is the authority, so at the
  deadline NEW is pointed at anyway); the moment it says PostgreSQL runs as the primary (``runs_as_primary``:
  ``/primary`` is not enough, it answers 200 for the lock holder while PostgreSQL still promotes), every
  ``[databases]`` entry gets NEW's host and port, then ``RELOAD`` (PgBouncer closes a changed database's server
  connections as they are released),
  ``RECONNECT`` (the same for every pool), and ``RESUME`` when paused (below);
- ``kill_after`` seconds later, ``SHOW SERVERS``: a database still holding a server connection to OLD's address
  (a transaction stuck on a dead or fenced host) is ``KILL``ed (its clients too: a client must not keep talking
  to the old leader) and ``RESUME``d (KILL leaves it paused).

A planned switchover (rule 6 of the router): the ``failover`` key asks the current leader to step down, due
now. At once ``PAUSE`` is sent on a connection of its own: PgBouncer hands out no more server connections, lets
the transactions in flight finish (transaction pooling) and closes its server connections; clients wait in
PgBouncer instead of meeting a stopping PostgreSQL. Once the key names the new leader and its PostgreSQL runs as
the primary: rewrite, RELOAD, RESUME (above). Clients see latency, not errors, as far as PAUSE finished before
the old leader stopped (the leader acts on the request within about 50 ms; a transaction still running then is
cut).
If the request disappears while the same leader holds the key (refused, cancelled): RESUME.

Rules
1. Every wait is bounded: PAUSE is abandoned (its connection closed) after ``pause_timeout``; PgBouncer stays
   paused at most ``max_pause`` s whatever happens (then RESUME; the health of routing is the key's business);
   each console command has a timeout; each REST call 0.5 s; the wait on the DCS 50 ms to 1 s.
2. The file changes only when an entry's host or port differs from the leader's; then it is rewritten whole and
   atomically, only the host/port value spans different (ini.py).
3. Failures of the console or the DCS are logged and retried on the next pass; they never end the loop. A
   failed apply is retried every pass until it succeeds (the file is the source of truth: it is re-read each
   time).
4. One log line per action with the time taken since the change was seen.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from pgha.core.model import ClusterView
from pgha.pgbouncer import files
from pgha.pgbouncer.admin import Admin, AdminError, Pending
from pgha.pgbouncer.ini import IniError, point_databases, targets
from pgha.router.haproxy_config import Server
from pgha.router.watch import LeaderWatch

log = logging.getLogger("pgha.pgbouncer")

FAST = 0.05  # poll interval while something is pending


@dataclass
class Switch:
    """Pointing PgBouncer at ``new``: waiting for it to run as primary, then applying."""

    new: str
    old: str | None
    seen: float  # monotonic time the change was seen
    deadline: float
    next_at: float = 0.0
    polls: int = 0
    ready: bool = False  # it runs as primary (or the deadline passed): apply on every pass until it succeeds


def runs_as_primary(server: Server, timeout: float = 0.5) -> bool:
    """``GET /patroni`` says PostgreSQL runs as the primary (``role`` primary, or master for older Patroni;
    ``state`` running). Not ``/primary``: that answers 200 for the lock holder whatever PostgreSQL's role (as
    Patroni's does), so a new leader still promoting would be sent writes it refuses as read-only."""
    if server.api_tls:
        context = ssl.create_default_context()  # like HAProxy's `check-ssl verify none`: only the answer counts
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(server.api_host, server.api_port,
                                                                       timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(server.api_host, server.api_port, timeout=timeout)
    try:
        conn.request("GET", "/patroni")
        response = conn.getresponse()
        body = json.loads(response.read(1 << 20) or b"{}")
        return (response.status == 200 and isinstance(body, dict) and body.get("role") in ("primary", "master")
                and body.get("state") == "running")
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


def addresses(host: str) -> set[str]:
    """The IP addresses ``host`` stands for (itself when it does not resolve), as SHOW SERVERS prints them."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)} | {host}
    except OSError:
        return {host}


class Bouncer(LeaderWatch):
    def __init__(self, dcs, admin: Admin, ini_path: str, databases: frozenset[str] | None = None,
                 pause_timeout: float = 10.0, max_pause: float = 30.0, kill_after: float = 2.0,
                 default_ttl: float = 30.0, is_primary=runs_as_primary, probe_interval: float = FAST) -> None:
        super().__init__(dcs, default_ttl)
        self.admin, self.ini_path, self.databases = admin, ini_path, databases
        self.pause_timeout, self.max_pause, self.kill_after = pause_timeout, max_pause, kill_after
        self.is_primary, self.probe_interval = is_primary, probe_interval
        self.leader: str | None = None
        self.started = False
        self.switch: Switch | None = None
        self.pause: Pending | None = None  # the PAUSE command, while unanswered
        self.paused_for: str | None = None  # the leader whose step-down PgBouncer is paused for
        self.paused_at = 0.0
        self.kill_check: tuple[float, str, int] | None = None  # (when, old host, old port)
        self.wake_at: float | None = None  # a scheduled switchover: read the DCS again just before it is due

    # --- the loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("pgbouncer follower started: %s, admin console %s", self.ini_path, _safe(self.admin.dsn))
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # noqa: BLE001 -- rule 3
                    log.exception("pass failed")
                    stop.wait(1.0)
        finally:
            if self.paused_for is not None:
                self.resume("the follower is stopping")
            self.admin.close()
            log.info("pgbouncer follower stopped")

    def step(self) -> None:
        now = time.monotonic()
        due = self.wake_at is not None and now >= self.wake_at
        if due or self.read_due(now):
            self.wake_at = None
            view = self.read()
            if view is not None:
                self.on_view(view)
        self.progress()
        if self.pause is None and self.paused_for is None:
            try:
                self.admin.keep_spare()  # rule 1 still: connect_timeout bounds it
            except AdminError as e:
                log.warning("%s", e)
        busy = self.switch is not None or self.paused_for is not None or self.kill_check is not None
        wait = FAST if busy else 1.0
        if self.wake_at is not None:
            wait = min(wait, max(0.0, self.wake_at - time.monotonic()))
        self.wait(wait)


    def on_view(self, view: ClusterView) -> None:
        now = time.monotonic()
        if not self.started:
            self.started = True
            self.leader = view.leader
            if view.leader:  # start-up: the key is the authority; point at it now (a no-op when already so)
                self.switch = Switch(view.leader, None, now, now, ready=True)
            log.info("following the leader key (leader: %s)", view.leader or "nobody")
            return
        if view.leader is None:
            return  # between two holders: self.leader stays the last one; a pause stays (bounded by max_pause)
        if view.leader != self.leader:
            log.info("leader changed: %s -> %s", self.leader or "nobody", view.leader)
            self.switch = Switch(view.leader, self.leader, now, now + self.ttl + 5)
            self.leader = view.leader
            return
        self.handover(view)

    # --- a planned switchover: PAUSE, and RESUME if it is called off ------------------------------------
    def handover(self, view: ClusterView) -> None:
        request, leader = view.failover, view.leader
        stepping = (request is not None and leader is not None and request.leader in (None, leader)
                    and request.member != leader
                    and (request.scheduled_at is None or request.scheduled_at <= time.time() + 0.2))
        if (request is not None and not stepping and request.scheduled_at is not None
                and request.leader in (None, leader)):  # scheduled: no DCS event comes when it falls due
            self.wake_at = time.monotonic() + max(0.0, request.scheduled_at - time.time() - 0.2)
        if stepping and self.paused_for is None and self.switch is None:
            try:
                self.pause = self.admin.send("PAUSE")
            except AdminError as e:
                log.warning("cannot PAUSE for the switchover: %s", e)
                return
            self.paused_for, self.paused_at = leader, time.monotonic()
            log.info("%s asked to step down: PAUSE sent (clients wait in PgBouncer)", leader)
        elif not stepping and self.paused_for is not None and self.paused_for == leader and self.switch is None:
            self.resume(f"{leader} stays the leader (the request is gone)")

    def resume(self, why: str) -> None:
        self._drop_pause()
        try:
            self.admin.command("RESUME")
            log.info("RESUME: %s (paused %.0f ms)", why, (time.monotonic() - self.paused_at) * 1000)
        except AdminError as e:
            if "not paused" in str(e):
                log.info("RESUME: %s (PgBouncer was not paused)", why)
            else:
                log.warning("RESUME failed (%s): %s; retrying", why, e)
                return
        self.paused_for = None

    def _drop_pause(self) -> None:
        if self.pause is not None:
            if not self.pause.poll():
                log.warning("PAUSE still waiting after %.0f ms: given up (its connection closed)",
                            (time.monotonic() - self.pause.sent) * 1000)
            self.pause.close()
            self.pause = None

    # --- everything pending: PAUSE's answer, the new leader's probe, the apply, the kill check ------------
    def progress(self) -> None:
        now = time.monotonic()
        if self.pause is not None and self.pause.poll():
            took = (now - self.pause.sent) * 1000
            if self.pause.error:
                log.warning("PAUSE failed after %.0f ms: %s", took, self.pause.error)
            else:
                log.info("PAUSE done after %.0f ms: no server connection left, clients held", took)
            self.pause.close()
            self.pause = None
        elif self.pause is not None and now - self.pause.sent > self.pause_timeout:
            self._drop_pause()
        if self.paused_for is not None and self.switch is None:
            if self.leader != self.paused_for:  # applied, but its RESUME failed: again
                self.resume(f"new leader {self.leader}")
            elif now - self.paused_at > self.max_pause:
                self.resume(f"paused for more than {self.max_pause:.0f}s without a new leader")
        if self.switch is not None:
            self.advance(self.switch, now)
        if self.kill_check is not None and now >= self.kill_check[0] and self.switch is None:
            self.kill_stragglers()

    def advance(self, sw: Switch, now: float) -> None:
        if now < sw.next_at:
            return
        if not sw.ready:
            server = self.known.get(sw.new)
            primary = server is not None and self.is_primary(server)
            sw.polls += 1
            if primary:
                sw.ready = True
                log.info("%s runs as primary after %.0f ms (%d polls)", sw.new, (now - sw.seen) * 1000, sw.polls)
            elif now >= sw.deadline:
                sw.ready = True
                log.warning("%s did not run as primary within %.0f s; pointing at it anyway (the leader key "
                            "decides)", sw.new, sw.deadline - sw.seen)
            else:
                sw.next_at = now + self.probe_interval
                return
        if self.apply(sw):
            self.switch = None
        else:
            sw.next_at = now + 1.0  # rule 3: again, once a second

    def apply(self, sw: Switch) -> bool:
        """Point the file at ``sw.new``, RELOAD, RECONNECT, RESUME when paused. False to try again next pass."""
        server = self.known.get(sw.new)
        if server is None:
            log.warning("leader %s has no usable conn_url in the DCS; waiting", sw.new)
            return False
        try:
            before = files.read_ini(self.ini_path)
            after = point_databases(before, server.host, server.port, self.databases)
            if after != before:
                files.replace_ini(self.ini_path, after)
        except (OSError, IniError) as e:
            log.warning("cannot rewrite %s: %s", self.ini_path, e)
            return False
        try:
            if after != before or sw.old is not None:
                self.admin.command("RELOAD")
            if sw.old is not None:
                self.admin.command("RECONNECT")
        except AdminError as e:
            log.warning("%s; retrying", e)
            return False
        took = (time.monotonic() - sw.seen) * 1000
        if after != before:
            log.info("[databases] -> %s (%s:%d), RELOAD%s after %.0f ms", sw.new, server.host, server.port,
                     ", RECONNECT" if sw.old else "", took)
        if self.paused_for is not None:
            self.resume(f"new leader {sw.new}")
        old = self.known.get(sw.old) if sw.old else None
        if old is not None and (old.host, old.port) != (server.host, server.port):
            self.kill_check = (time.monotonic() + self.kill_after, old.host, old.port)
        return True

    def manages(self, database: str) -> bool:
        """Whether ``database``'s pool is one this daemon points (its entry, or ``*`` for one not listed)."""
        if self.databases is None:
            return True
        try:
            listed = targets(files.read_ini(self.ini_path))
        except (OSError, IniError):
            return False
        return database in self.databases if database in listed else "*" in self.databases

    def kill_stragglers(self) -> None:
        """KILL (then RESUME) every database still holding a server connection to the old leader."""
        _, host, port = self.kill_check
        if self.paused_for is not None:
            return  # KILL is refused while PgBouncer is paused; after the RESUME
        try:
            rows = self.admin.command("SHOW SERVERS")
        except AdminError as e:
            log.warning("%s; retrying", e)
            return
        self.kill_check = None
        ips = addresses(host)
        stuck = sorted({r["database"] for r in rows if r.get("database") and self.manages(r["database"])
                        and r.get("addr") in ips and str(r.get("port")) == str(port)})
        for db in stuck:
            try:
                quoted = '"' + db.replace('"', '""') + '"'
                self.admin.command(f"KILL {quoted}")
                self.admin.command(f"RESUME {quoted}")
                log.warning("KILL %s: it still had server connections to the old leader %s:%d", db, host, port)
            except AdminError as e:
                log.warning("%s", e)


def _safe(dsn: str) -> str:
    import re
    return re.sub(r"password=\S+", "password=***", dsn)
