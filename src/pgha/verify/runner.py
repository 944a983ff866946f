"""One verifier run: set the bank up, run the clients for the duration while the faults are injected one after
another, then read the final primary's ledger and balances and account for every transaction.

Rules
1. The duration is cut into one window per fault; a fault acts ``lead`` seconds into its window (so there is
   traffic to interrupt), in its own thread; the next waits until the previous fault has healed. The windows
   tile the run: each ends when the next begins, the last when the clients stop.
2. The clients stop at the duration whatever a fault is doing (the run never waits on a fault past it); a fault
   still healing then gets a bounded grace (``heal_grace``) before the final read, which itself waits at most
   ``settle`` seconds for a node that accepts writes.
3. The balance sum is read (bounded) at the end of every window but the last, whose check is the final read.
4. A leader watcher records the DCS leader every 0.25 s, for the timeline's "leader changes" marks.
5. Clients are spread over the DSNs round robin (a list of endpoints: router, libpq multi-host, single nodes).
"""

from __future__ import annotations

import random
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pgha.verify import workload
from pgha.verify.faults import FaultContext, Outcome, check_menu, resume_all, run_fault
from pgha.verify.report import BalanceCheck, FaultWindow, Report, TxEvent, account
from pgha.verify.target import Target


class VerifyError(Exception):
    pass


@dataclass
class Settings:
    dsns: list[str]
    clients: int = 4
    seed: int = 1
    rate: float = 50.0  # transactions per second per client; 0: as fast as possible
    accounts: int = 10
    initial: int = 1000
    min_gap: float = 0.2
    lead: float = 2.0
    settle: float = 60.0
    heal_grace: float = 60.0
    dcs_outage: float | None = None  # how long kill-dcs-member keeps the DCS down; None: the cluster's ttl


@dataclass
class Result:
    run: str
    settings: Settings
    report: Report
    events: list[TxEvent]
    windows: list[FaultWindow]
    leader_changes: list[tuple[float, str | None]]
    labels: dict[str, str]  # node port -> member name, where the target knows it
    connect_errors: int = 0
    final_dsn_index: int = 0
    notes: list[str] = field(default_factory=list)


class LeaderWatch(threading.Thread):
    """Rule 4."""

    def __init__(self, target: Target, stop: threading.Event, deadline: float) -> None:
        super().__init__(name="verify-leader-watch", daemon=True)
        self.target, self.stop_event, self.deadline = target, stop, deadline
        self.changes: list[tuple[float, str | None]] = []

    def run(self) -> None:
        last: object = object()
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            leader = self.target.leader()
            if leader is not None and leader != last:
                self.changes.append((time.time(), leader))
                last = leader
            self.stop_event.wait(0.25)


class Verifier:
    def __init__(self, settings: Settings, target: Target | None = None,
                 say: Callable[[str], None] = lambda line: None) -> None:
        if not settings.dsns:
            raise VerifyError("no DSN to run the workload against")
        self.settings, self.target, self.say = settings, target, say
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-s{settings.seed}-{secrets.token_hex(3)}"
        self.rng = random.Random(settings.seed)
        self.total: int | None = None
        self.clients: list[workload.Client] = []
        self.windows: list[FaultWindow] = []
        self.checks: list[BalanceCheck] = []
        self.watch: LeaderWatch | None = None
        self._faults: list[threading.Thread] = []
        self._fault_deadline = 0.0

    # --- phases --------------------------------------------------------------------------------------------
    def setup(self, timeout: float = 60.0, dsn: str | None = None) -> int:
        """This run's accounts, through ``dsn`` (default: the first DSN)."""
        s = self.settings
        self.total = workload.create(dsn or s.dsns[0], self.run_id, s.accounts, s.initial, timeout)
        self.say(f"run {self.run_id}: {s.accounts} accounts, total {self.total}")
        return self.total

    def run(self, faults: list[str], duration: float) -> None:
        """Rules 1-3: the workload for ``duration`` seconds with ``faults`` injected in turn."""
        if self.total is None:
            raise VerifyError("setup() first")
        faults = faults or ["none"]
        check_menu(faults, self.target)
        s = self.settings
        m0, t0 = time.monotonic(), time.time()
        hard_end = m0 + duration
        self._fault_deadline = hard_end + s.heal_grace
        stop = threading.Event()
        self.clients = [workload.Client(i, s.dsns[i % len(s.dsns)], self.run_id, s.accounts, s.seed, hard_end + 1,
                                        stop, rate=s.rate) for i in range(s.clients)]
        for c in self.clients:
            c.start()
        if self.target is not None:
            self.watch = LeaderWatch(self.target, stop, hard_end + s.heal_grace)
            self.watch.start()
        slice_ = duration / len(faults)
        window_start, window_start_m = t0, m0
        try:
            for i, name in enumerate(faults):
                last = i == len(faults) - 1
                outcome = self._inject(name, window_start_m + min(s.lead, slice_ / 2), hard_end)
                _sleep_until(hard_end if last else min(hard_end, m0 + (i + 1) * slice_), stop)
                if not last:
                    self.checks.append(BalanceCheck(time.time(), workload.balance_sum(s.dsns[0], self.run_id, 3.0)))
                end = time.time()
                self.windows.append(FaultWindow(name, window_start, end, outcome.injected_at, outcome.healed_at,
                                                outcome.error, outcome.note))
                self.say(f"{name}: {outcome.note or ''}{' ERROR ' + outcome.error if outcome.error else ''}")
                window_start, window_start_m = end, time.monotonic()
        finally:
            stop.set()
            if sys.exc_info()[0] is not None:  # interrupted: resume whatever a fault stopped
                resume_all()
            for c in self.clients:
                c.join(timeout=max(0.1, min(5.0, hard_end + 5 - time.monotonic())))
        last_window = self.windows[-1]
        self.windows[-1] = FaultWindow(last_window.fault, last_window.start, time.time(), last_window.injected_at,
                                       last_window.healed_at, last_window.error, last_window.note)

    def _inject(self, name: str, at_m: float, hard_end: float) -> Outcome:
        """Wait for the previous fault (bounded), act at ``at_m``, wait for this one until the run's end."""
        for thread in self._faults:
            thread.join(timeout=max(0.0, hard_end - time.monotonic()))
        if any(t.is_alive() for t in self._faults):
            return Outcome(None, None, "", "not injected: the previous fault was still healing at the end")
        _sleep_until(min(at_m, hard_end), None)
        if time.monotonic() >= hard_end:
            return Outcome(None, None, "", "not injected: no time left in the run")
        if self.target is None and name != "none":
            return Outcome(None, None, "", "no cluster target")
        ctx = FaultContext(self.target, self.rng, self._fault_deadline, self.say,  # type: ignore[arg-type]
                           dcs_outage=self.settings.dcs_outage)
        box: list[Outcome] = []
        thread = threading.Thread(target=lambda: box.append(run_fault(name, ctx)), name=f"verify-fault-{name}",
                                  daemon=True)
        self._faults.append(thread)
        thread.start()
        thread.join(timeout=max(0.0, hard_end - time.monotonic()))
        if box:
            return box[0]
        return Outcome(ctx.injected_at, None, ctx.note, "still healing when the run ended")

    def finish(self, final_dsn: str | None = None) -> Result:
        """Rule 2: the final read, and the accounting."""
        s = self.settings
        for thread in self._faults:
            thread.join(timeout=max(0.0, self._fault_deadline - time.monotonic()))
        notes = [f"fault thread {t.name} still running after its grace" for t in self._faults if t.is_alive()]
        candidates = [final_dsn] if final_dsn else s.dsns
        final, index, last_error = None, 0, ""
        deadline = time.monotonic() + s.settle
        for index, dsn in enumerate(candidates):
            try:
                final = workload.read_final(dsn, self.run_id, max(1.0, deadline - time.monotonic()))
                break
            except (TimeoutError, Exception) as e:  # psycopg.Error included: the next endpoint is tried
                last_error = workload.first_line(e)
        if self.watch is not None:
            self.watch.stop_event.set()
        if final is None:
            raise VerifyError(f"no node accepted writes within {s.settle:.0f}s after the run: {last_error}")
        events = sorted((e for c in self.clients for e in list(c.events)), key=lambda e: e.end)
        report = account(events, final.ledger, self.windows, self.checks,
                         BalanceCheck(time.time(), final.total), self.total or 0, min_gap=s.min_gap,
                         balances=final.balances, initial=s.initial, final_node=final.node)
        return Result(self.run_id, s, report, events, self.windows,
                      list(self.watch.changes) if self.watch else [], self._labels(),
                      connect_errors=sum(len(c.connect_errors) for c in self.clients), final_dsn_index=index,
                      notes=notes)

    def _labels(self) -> dict[str, str]:
        from pgha.postgres.conf import parse_conn_url
        labels: dict[str, str] = {}
        for m in (self.target.members() if self.target is not None else []):
            address = parse_conn_url(m.conn_url)
            if address:
                labels[str(address[1])] = m.name
        layout = getattr(self.target, "layout", None)
        for i in range(layout.nodes if layout is not None else 0):  # when the DCS is down at the end
            labels.setdefault(str(layout.pg_port(i)), layout.name(i))
        return labels


def _sleep_until(at_m: float, stop: threading.Event | None) -> None:
    remaining = at_m - time.monotonic()
    if remaining > 0:
        (stop.wait if stop is not None else time.sleep)(remaining)


def verify(settings: Settings, faults: list[str], duration: float, target: Target | None = None,
           say: Callable[[str], None] = lambda line: None) -> Result:
    """setup, run, finish."""
    v = Verifier(settings, target, say)
    v.setup(timeout=settings.settle)
    v.run(faults, duration)
    return v.finish()
