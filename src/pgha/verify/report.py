"""The verifier's accounting: from plain lists of what the clients saw and what the final primary holds, to the
figures per fault. Pure: no I/O, no clock, no threads; every time is a float of seconds on one clock (the run
uses wall-clock epoch seconds, which PostgreSQL's ``clock_timestamp()`` on the same machine shares).

Rules
1. A transaction is *acknowledged* when COMMIT returned (outcome ``ok``). It *failed* otherwise: ``failed`` when
   the error came before COMMIT was sent (it cannot have committed), ``unknown`` when COMMIT itself failed (it may
   have). ``failed_tx`` counts both.
2. *Lost*: acknowledged, yet its ledger row is absent from the final primary. *In doubt*: reported failed, yet
   present (a commit whose acknowledgement was lost); counted apart, never as an error of the cluster.
3. Write-unavailability around a fault: the longest interval between two consecutive acknowledged commits (by
   the time COMMIT returned, all clients together) that ends after the fault was injected and starts before its
   window ends; "last successful commit before, first successful commit after". Intervals shorter than
   ``min_gap`` are ordinary service and count as 0 (the raw figure is ``longest_gap_s``). An interval still open
   when the run ended is reported up to the end, with ``recovered`` false.
4. A transaction belongs to the window in which it ended; those that ended after the last window belong to it.
5. Overlapping writers: writes are grouped by (node, system identifier, timeline) from the ledger rows of the
   final primary and from what each acknowledged commit returned (so writes that were lost count too). Two groups
   overlap when their first-to-last commit intervals interleave: max(first) < min(last).
6. The balance invariant holds in a window when every balance check read in it (and, for the last window or a
   window without a check of its own, the final check) sums to the expected total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


@dataclass(frozen=True)
class TxEvent:
    """One transaction attempt as a client saw it; node/system_id/timeline/server_at come from RETURNING."""

    client: int
    tx: str
    start: float
    end: float
    outcome: str  # OK, FAILED or UNKNOWN (rule 1)
    node: str | None = None
    system_id: str | None = None
    timeline: int | None = None
    server_at: float | None = None
    error: str = ""


@dataclass(frozen=True)
class LedgerRow:
    tx: str
    node: str
    system_id: str
    timeline: int
    at: float  # clock_timestamp() when the row was written
    src: int = 0
    dst: int = 0
    amount: int = 0


@dataclass(frozen=True)
class BalanceCheck:
    at: float
    total: int | None  # None: the sum could not be read


@dataclass(frozen=True)
class FaultWindow:
    fault: str
    start: float
    end: float
    injected_at: float | None = None  # None: not injected (see error)
    healed_at: float | None = None  # when the fault's own recovery (restart, SIGCONT...) was done
    error: str = ""
    note: str = ""


@dataclass(frozen=True)
class Writer:
    node: str
    system_id: str
    timeline: int
    first: float
    last: float
    commits: int

    @property
    def label(self) -> str:
        return f"{self.node} tl{self.timeline}"


@dataclass
class FaultFigures:
    fault: str
    unavailability_s: float
    failed_tx: int
    lost_acked: int
    in_doubt: int
    invariant_ok: bool
    overlapping_writers: list[dict]
    acked: int = 0
    unknown_outcome: int = 0
    lost_acked_before_fault: int = 0
    longest_gap_s: float = 0.0
    last_commit_before: float | None = None
    first_commit_after: float | None = None
    recovered: bool = True
    injected_at: float | None = None
    healed_at: float | None = None
    error: str = ""
    note: str = ""
    lost_tx: list[str] = field(default_factory=list)


@dataclass
class Report:
    start: float
    end: float
    expected_total: int
    final_total: int | None
    invariant_ok: bool
    ledger_matches_balances: bool | None
    acked: int
    failed_tx: int
    lost_acked: int
    in_doubt: int
    writers: list[Writer]
    overlapping_writers: list[dict]
    faults: list[FaultFigures]
    final_node: str | None = None
    # Acknowledged transactions' client-side latency in ms: {"p50", "p95", "p99", "max"} (empty: none acked).
    latency_ms: Mapping[str, float] = field(default_factory=dict)


# --- pieces ------------------------------------------------------------------------------------------------
def writers(rows: Iterable[LedgerRow], events: Iterable[TxEvent] = ()) -> list[Writer]:
    """Rule 5: the (node, system id, timeline) groups and their commit intervals, by first commit."""
    stamps: dict[tuple[str, str, int], list[float]] = {}
    seen: set[str] = set()
    for r in rows:
        seen.add(r.tx)
        stamps.setdefault((r.node, r.system_id, r.timeline), []).append(r.at)
    for e in events:
        if e.outcome == OK and e.tx not in seen and e.node is not None and e.server_at is not None:
            stamps.setdefault((e.node, e.system_id or "", e.timeline or 0), []).append(e.server_at)
    found = [Writer(k[0], k[1], k[2], min(v), max(v), len(v)) for k, v in stamps.items()]
    return sorted(found, key=lambda w: (w.first, w.node, w.timeline))


def overlaps(found: Sequence[Writer]) -> list[dict]:
    """Rule 5: every pair of writer groups whose commit intervals interleave, with the shared span."""
    out = []
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            lo, hi = max(a.first, b.first), min(a.last, b.last)
            if lo < hi:
                out.append({"a": a.label, "b": b.label, "from": lo, "to": hi, "a_commits": a.commits,
                            "b_commits": b.commits})
    return out


def gaps(acks: Sequence[float], start: float, end: float) -> list[tuple[float, float, bool]]:
    """(from, to, closed) intervals without an acknowledged commit, from the first commit (the clients' own
    start-up is not an outage) to ``end``; the last one is open (closed false) as no commit ended it. Without any
    commit, the whole run is one open interval."""
    points = sorted(t for t in acks if start <= t <= end)
    if not points:
        return [(start, end, False)]
    out = [(a, b, True) for a, b in zip(points, points[1:])]
    out.append((points[-1], end, False))
    return out


def unavailability(acks: Sequence[float], run_start: float, run_end: float, ref: float, window_end: float,
                   min_gap: float) -> tuple[float, float, float | None, float | None, bool]:
    """Rule 3: (unavailability, longest gap, last commit before, first commit after, recovered)."""
    best: tuple[float, float, bool] | None = None
    for lo, hi, closed in gaps(acks, run_start, run_end):
        if hi > ref and lo < window_end and (best is None or hi - lo > best[1] - best[0]):
            best = (lo, hi, closed)
    if best is None:
        return 0.0, 0.0, None, None, True
    lo, hi, closed = best
    length = hi - lo
    before = lo if any(t == lo for t in acks) else None
    recovered = closed or length < min_gap  # a run that simply ended between two commits did not fail
    return (length if length >= min_gap else 0.0), length, before, (hi if closed else None), recovered


def balances_match(rows: Iterable[LedgerRow], balances: Mapping[int, int], initial: int) -> bool:
    """Every account's balance is its initial one plus what the ledger moved in, minus what it moved out."""
    expected = {account: initial for account in balances}
    for r in rows:
        expected[r.src] = expected.get(r.src, initial) - r.amount
        expected[r.dst] = expected.get(r.dst, initial) + r.amount
    return all(balances.get(a, initial) == v for a, v in expected.items())


def _window_of(t: float, windows: Sequence[FaultWindow]) -> int:
    for i, w in enumerate(windows):
        if t < w.end:
            return i
    return len(windows) - 1


# --- the report --------------------------------------------------------------------------------------------
def account(events: Sequence[TxEvent], ledger: Sequence[LedgerRow], windows: Sequence[FaultWindow],
            checks: Sequence[BalanceCheck], final: BalanceCheck | None, expected_total: int,
            min_gap: float = 0.5, balances: Mapping[int, int] | None = None, initial: int = 0,
            final_node: str | None = None) -> Report:
    """Every figure of the run, per fault window and overall (rules 1-6)."""
    if not windows:
        raise ValueError("at least one window")
    start, end = windows[0].start, windows[-1].end
    present = {r.tx for r in ledger}
    acks = [e.end for e in events if e.outcome == OK]
    found = writers(ledger, events)
    pairs = overlaps(found)
    final_ok = final is not None and final.total == expected_total
    per: list[list[TxEvent]] = [[] for _ in windows]
    for e in events:
        per[_window_of(e.end, windows)].append(e)
    figures = []
    for i, w in enumerate(windows):
        mine = per[i]
        ref = w.injected_at if w.injected_at is not None else w.start
        unavail, longest, before, after, recovered = unavailability(acks, start, end, ref, w.end, min_gap)
        lost = [e for e in mine if e.outcome == OK and e.tx not in present]
        own = [c for c in checks if w.start < c.at <= w.end]
        uses_final = i == len(windows) - 1 or not own
        invariant = all(c.total == expected_total for c in own) and (final_ok or not uses_final)
        figures.append(FaultFigures(
            fault=w.fault, unavailability_s=round(unavail, 3),
            failed_tx=sum(1 for e in mine if e.outcome != OK),
            lost_acked=len(lost),
            in_doubt=sum(1 for e in mine if e.outcome != OK and e.tx in present),
            invariant_ok=invariant,
            overlapping_writers=[p for p in pairs if p["from"] < w.end and p["to"] > w.start],
            acked=sum(1 for e in mine if e.outcome == OK),
            unknown_outcome=sum(1 for e in mine if e.outcome == UNKNOWN),
            lost_acked_before_fault=sum(1 for e in lost if w.injected_at is not None and e.end < w.injected_at),
            longest_gap_s=round(longest, 3), last_commit_before=before, first_commit_after=after,
            recovered=recovered, injected_at=w.injected_at, healed_at=w.healed_at, error=w.error, note=w.note,
            lost_tx=sorted(e.tx for e in lost)[:20]))
    matches = balances_match(ledger, balances, initial) if balances is not None else None
    return Report(start=start, end=end, expected_total=expected_total,
                  final_total=final.total if final else None, invariant_ok=final_ok and all(
                      c.total == expected_total for c in checks),
                  ledger_matches_balances=matches,
                  acked=len(acks), failed_tx=sum(1 for e in events if e.outcome != OK),
                  lost_acked=sum(f.lost_acked for f in figures), in_doubt=sum(f.in_doubt for f in figures),
                  writers=found, overlapping_writers=pairs, faults=figures, final_node=final_node,
                  latency_ms=latency([e.end - e.start for e in events if e.outcome == OK]))


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """Percentiles (nearest rank) of acknowledged transactions' durations, in ms: the price of synchronous commit
    shows here."""
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(p * len(ordered) + 0.999999) - 1))] * 1000, 2)
    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(ordered[-1] * 1000, 2)}


def ok(report: Report) -> bool:
    """The safety verdict: nothing acknowledged was lost, the sum held, the ledger matches, one writer at a time."""
    return (report.lost_acked == 0 and report.invariant_ok and report.ledger_matches_balances is not False
            and not report.overlapping_writers)


def buckets(events: Sequence[TxEvent], start: float, end: float, width: float = 0.1,
            ) -> tuple[list[float], dict[str, list[int]], list[int]]:
    """For the timeline: bucket starts (relative to ``start``), acknowledged commits per bucket and writer node,
    failed transactions per bucket."""
    n = max(1, int((end - start) / width + 1e-9) + 1)
    times = [round(i * width, 6) for i in range(n)]
    ok_by_node: dict[str, list[int]] = {}
    failed = [0] * n
    for e in events:
        k = min(n - 1, max(0, int((e.end - start) / width + 1e-9)))
        if e.outcome == OK:
            ok_by_node.setdefault(e.node or "?", [0] * n)[k] += 1
        else:
            failed[k] += 1
    return times, ok_by_node, failed
