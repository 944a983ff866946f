"""`pgha router`: move HAProxy's routing the moment the leader key changes, instead of at the next health check.

On a change from leader OLD to NEW (``plan_change``, pure):
- rw: OLD is marked down, set to drain (no new connections whatever its health checks say) and its sessions are
  killed at once; NEW is polled on its REST API (``GET /primary`` every 50 ms, at most ttl+5 s) and marked up the
  moment it answers 200. OLD leaves drain, marked down, once its /primary stops answering 200 (an old leader that
  stays alive, as in a switchover, may answer 200 for a moment); from then on the health checks decide.
- ro: NEW is marked down and set to drain at once; it leaves drain, marked down, once its /replica stops
  answering 200. OLD is marked up in ro as soon as its /replica answers 200 (it rejoined as a replica), within
  ``rejoin_timeout``.
HAProxy's own health checks keep running: they are the safety net if this process dies (docs/routing.md).

Rules
1. Every wait is bounded: each probe has a deadline and an interval, each HTTP request and each runtime call a
   timeout, the main loop's wait on the DCS a timeout. On a probe's deadline the server leaves drain and the
   health checks decide.
2. Drain is only ever transient (rule 1), and a starting router takes every server out of it (and out of
   maintenance), so a router that died half-way leaves nothing behind once it is started again.
3. A new leader change cancels the pending probes on the servers it touches (OLD and NEW).
4. One log line per routing change, with the time taken since the change was seen.
5. Failures of HAProxy's runtime API or of the DCS are logged and retried on the next pass; they never end the loop.
6. A switchover request naming the leader (the ``failover`` key, due now) drains it in rw at once: new
   connections stop going to a server about to stop (HAProxy would otherwise hold each for its 1 s retry
   turn-around), open sessions commit on until PostgreSQL stops. The request gone with the leader unchanged
   (refused, or cancelled) makes it ready again.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pgha.core.model import ClusterView
from pgha.router.haproxy_config import RO, RW, Server, server_name
from pgha.router.watch import LeaderWatch
from pgha.router.runtime import HaproxyRuntime, RuntimeApiError

log = logging.getLogger("pgha.router")

FAST, SLOW = 0.05, 0.25  # probe intervals: the new leader (fast), a rejoining old leader (slow)


@dataclass(frozen=True)
class Cmd:
    """One runtime API action: ("health", "up"|"down"), ("state", "ready"|"drain") or ("shutdown", "")."""

    verb: str
    backend: str
    member: str
    arg: str = ""


@dataclass
class Probe:
    """Poll ``member``'s ``path`` until it answers 200 (``want_ok``) or anything else (not ``want_ok``)."""

    member: str
    path: str
    want_ok: bool
    on_success: list[Cmd]
    on_timeout: list[Cmd]
    label: str
    started: float
    deadline: float
    interval: float
    next_at: float = 0.0
    tries: int = field(default=0)


def release(backend: str, member: str) -> list[Cmd]:
    """Out of drain, marked down: only a passing health check brings it back (leaving maintenance would mark it
    up at once, which is why drain is used and not maint)."""
    return [Cmd("health", backend, member, "down"), Cmd("state", backend, member, "ready")]


def plan_change(old: str | None, new: str | None, now: float, ttl: float,
                rejoin_timeout: float) -> tuple[list[Cmd], list[Probe]]:
    """What to do at once, and what to wait for, when the leader goes from ``old`` to ``new``. Pure."""
    cmds: list[Cmd] = []
    probes: list[Probe] = []
    bound = now + ttl + 5
    if old and old != new:
        cmds += [Cmd("health", RW, old, "down"), Cmd("state", RW, old, "drain"), Cmd("shutdown", RW, old)]
        probes.append(Probe(old, "/primary", False, release(RW, old), release(RW, old),
                            f"rw: {old} out of drain (not primary)", now, bound, FAST))
        back = [Cmd("state", RO, old, "ready"), Cmd("health", RO, old, "up")]
        probes.append(Probe(old, "/replica", True, back, [Cmd("state", RO, old, "ready")],
                            f"ro: {old} up (replica again)", now, now + rejoin_timeout, SLOW))
    if new and new != old:
        cmds += [Cmd("state", RW, new, "ready"), Cmd("health", RO, new, "down"), Cmd("state", RO, new, "drain")]
        probes.append(leader_up_probe(new, now, ttl))
        probes.append(Probe(new, "/replica", False, release(RO, new), release(RO, new),
                            f"ro: {new} out of drain (not a replica)", now, bound, FAST))
    return cmds, probes


def leader_up_probe(leader: str, now: float, ttl: float) -> Probe:
    """Mark ``leader`` up in rw the moment its /primary answers 200 (at most ttl+5 s)."""
    return Probe(leader, "/primary", True, [Cmd("health", RW, leader, "up")], [], f"rw: {leader} up (new leader)",
                 now, now + ttl + 5, FAST)


def http_status(server: Server, path: str, timeout: float = 0.5) -> int | None:
    """The status code of ``GET <api>/<path>``; None when the REST API cannot be reached in time."""
    if server.api_tls:
        context = ssl.create_default_context()  # like HAProxy's `check-ssl verify none`: only the code counts
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(server.api_host, server.api_port,
                                                                       timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(server.api_host, server.api_port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Router(LeaderWatch):
    def __init__(self, dcs, runtime: HaproxyRuntime, rejoin_timeout: float = 120.0, default_ttl: float = 30.0,
                 status=http_status) -> None:
        super().__init__(dcs, default_ttl)
        self.runtime, self.status, self.rejoin_timeout = runtime, status, rejoin_timeout
        self.leader: str | None = None
        self.in_haproxy: set[str] = set()
        self.probes: list[Probe] = []
        self.need_reconcile = True
        self.draining: str | None = None  # the leader drained in rw because it was asked to step down
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="router-probe")

    # --- the loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; each pass is bounded (rule 1)."""
        log.info("router started: following the leader key, HAProxy runtime API at %s", self.runtime.socket_path)
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # noqa: BLE001 -- rule 5: log, pause, go on (the checks still route)
                    log.exception("router pass failed")
                    stop.wait(1.0)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            log.info("router stopped")

    def step(self) -> None:
        """Read the DCS when the watch fired (or every RESYNC s), act on a change, poll due probes, then wait for
        the watch: 50 ms while probes are pending, else up to 1 s."""
        if self.read_due(time.monotonic()):
            view = self.read()
            if view is not None:
                if self.need_reconcile:
                    self.reconcile(view)
                elif view.leader != self.leader:
                    self.change(view.leader)
                else:
                    self.handover(view)
        self.run_probes()
        self.wait(FAST if self.probes else 1.0)


    # --- start-up: a fast first health check, and no leftover drain or maintenance (rule 2) ---------------
    def reconcile(self, view: ClusterView) -> None:
        try:
            self.in_haproxy = {s.name for s in self.runtime.servers_state(RW)} | \
                {s.name for s in self.runtime.servers_state(RO)}
        except RuntimeApiError as e:
            log.warning("%s (retrying)", e)
            return
        members = [m for m in self.known if server_name(m) in self.in_haproxy]
        codes = dict(zip(members, self.pool.map(self._codes, members)))
        # The leader key is the authority: only its holder goes to rw, never to ro.
        codes = {m: (primary and m == view.leader, replica and m != view.leader)
                 for m, (primary, replica) in codes.items()}
        for member, (primary, replica) in codes.items():
            for backend, ok in ((RW, primary), (RO, replica)):
                # health before `ready` (a drained server leaves drain with the right health) and after it
                # (leaving maintenance marks a server up at once)
                health = Cmd("health", backend, member, "up" if ok else "down")
                self.apply([health, Cmd("state", backend, member, "ready"), health])
        self.leader, self.probes, self.need_reconcile = view.leader, [], False
        log.info("routing set from the REST APIs: rw -> %s, ro -> %s, leader key: %s",
                 ",".join(m for m, c in codes.items() if c[0]) or "nobody",
                 ",".join(m for m, c in codes.items() if c[1]) or "nobody", view.leader)
        if view.leader in self.known and not codes.get(view.leader, (False, False))[0]:
            self.probes.append(leader_up_probe(view.leader, time.monotonic(), self.ttl))

    def _codes(self, member: str) -> tuple[bool, bool]:
        server = self.known[member]
        return self.status(server, "/primary") == 200, self.status(server, "/replica") == 200

    # --- a planned handover (rule 6) ----------------------------------------------------------------------
    def handover(self, view: ClusterView) -> None:
        request, leader = view.failover, self.leader
        stepping = (request is not None and leader is not None and request.leader in (None, leader)
                    and request.member != leader
                    and (request.scheduled_at is None or request.scheduled_at <= time.time() + 1.0))
        if stepping and self.draining != leader:
            self.apply([Cmd("state", RW, leader, "drain")])
            self.draining = leader
            log.info("rw: %s asked to step down: draining (no new connections; open sessions go on)", leader)
        elif not stepping and self.draining is not None and self.draining == leader:
            self.apply([Cmd("state", RW, leader, "ready")])
            self.draining = None
            log.info("rw: %s stays the leader (the request is gone): ready again", leader)

    # --- a leader change ----------------------------------------------------------------------------------
    def change(self, new: str | None) -> None:
        old, now = self.leader, time.monotonic()
        self.draining = None
        log.info("leader changed: %s -> %s", old or "nobody", new or "nobody")
        self.leader = new
        touched = {old, new}
        self.probes = [p for p in self.probes if p.member not in touched]
        cmds, probes = plan_change(old, new, now, self.ttl, self.rejoin_timeout)
        self.apply(cmds)
        if old:
            log.info("rw: %s marked down, draining, sessions killed (%.0f ms)", old,
                     (time.monotonic() - now) * 1000)
        self.probes += [p for p in probes if p.member in self.known]

    def run_probes(self) -> None:
        now = time.monotonic()
        due = [p for p in self.probes if p.next_at <= now]
        if not due:
            return
        codes = list(self.pool.map(lambda p: self.status(self.known[p.member], p.path), due))
        for probe, code in zip(due, codes):
            probe.tries += 1
            done = (code == 200) == probe.want_ok
            if done or time.monotonic() >= probe.deadline:
                self.probes.remove(probe)
                self.apply(probe.on_success if done else probe.on_timeout)
                took = (time.monotonic() - probe.started) * 1000
                if done:
                    log.info("%s after %.0f ms (%d polls)", probe.label, took, probe.tries)
                else:
                    log.warning("gave up waiting for %s after %.0f ms (last answer: %s); the health checks decide",
                                probe.label, took, code)
            else:
                probe.next_at = now + probe.interval

    def apply(self, cmds: list[Cmd]) -> None:
        for cmd in cmds:
            server = server_name(cmd.member)
            if self.in_haproxy and server not in self.in_haproxy:
                continue  # a member HAProxy's configuration does not list
            try:
                if cmd.verb == "health":
                    self.runtime.set_health(cmd.backend, server, cmd.arg == "up")
                elif cmd.verb == "state":
                    self.runtime.set_state(cmd.backend, server, cmd.arg)
                else:
                    self.runtime.shutdown_sessions(cmd.backend, server)
            except RuntimeApiError as e:
                log.warning("%s", e)
                self.need_reconcile = True
