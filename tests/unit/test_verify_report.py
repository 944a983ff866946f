"""The verifier's accounting (pgha.verify.report) on plain values: loss, doubt, unavailability, the invariant,
overlapping writers, and which window a transaction belongs to."""

from __future__ import annotations

import pytest

from pgha.verify.report import (FAILED, OK, UNKNOWN, BalanceCheck, FaultWindow, LedgerRow, TxEvent, account,
                                balances_match, buckets, gaps, ok, overlaps, unavailability, writers)

SYS = "7000000000000000001"


def ack(tx: str, end: float, node: str = "5440", tl: int = 1, client: int = 0) -> TxEvent:
    return TxEvent(client, tx, end - 0.002, end, OK, node, SYS, tl, end - 0.001)


def row(tx: str, at: float, node: str = "5440", tl: int = 1, src: int = 0, dst: int = 1, amount: int = 5):
    return LedgerRow(tx, node, SYS, tl, at, src, dst, amount)


def steady(start: float, end: float, step: float = 0.02, node: str = "5440", tl: int = 1, prefix: str = "t"):
    """Acknowledged transactions every ``step`` seconds, and their ledger rows."""
    events, rows = [], []
    n = int(round((end - start) / step))
    for k in range(n + 1):
        t = round(start + k * step, 6)
        events.append(ack(f"{prefix}{k}", t, node, tl))
        rows.append(row(f"{prefix}{k}", t - 0.001, node, tl))
    return events, rows


def one_window(fault="none", start=0.0, end=10.0, injected=None, healed=None):
    return [FaultWindow(fault, start, end, injected if injected is not None else start, healed)]


def test_a_quiet_run_has_no_loss_no_unavailability_and_keeps_the_invariant():
    events, rows = steady(0.0, 10.0)
    r = account(events, rows, one_window(), [], BalanceCheck(10.0, 1000), 1000)
    f = r.faults[0]
    assert (f.unavailability_s, f.failed_tx, f.lost_acked, f.in_doubt) == (0.0, 0, 0, 0)
    assert f.invariant_ok and f.overlapping_writers == [] and f.recovered
    assert f.longest_gap_s == pytest.approx(0.02)
    assert r.acked == len(events) and ok(r)


def test_an_acknowledged_commit_absent_from_the_final_primary_is_lost():
    events, rows = steady(0.0, 5.0)
    r = account(events, rows[:-3], one_window(end=5.0, injected=1.0), [], BalanceCheck(5.0, 1000), 1000)
    assert r.lost_acked == 3 and r.faults[0].lost_acked == 3
    assert r.faults[0].lost_tx == sorted(e.tx for e in events[-3:])
    assert r.faults[0].lost_acked_before_fault == 0  # all three were acknowledged after the fault at 1.0
    assert not ok(r)


def test_lost_before_the_fault_is_counted_apart():
    events, rows = steady(0.0, 5.0)
    kept = [x for x in rows if x.tx != "t10"]  # t10 ended at 0.2 s, before the fault at 1.0
    r = account(events, kept, one_window(end=5.0, injected=1.0), [], BalanceCheck(5.0, 1000), 1000)
    assert r.faults[0].lost_acked == 1 and r.faults[0].lost_acked_before_fault == 1


def test_a_failed_transaction_that_committed_is_in_doubt_not_lost():
    events, rows = steady(0.0, 2.0)
    events.append(TxEvent(1, "u1", 1.0, 1.01, UNKNOWN, error="server closed the connection"))
    events.append(TxEvent(1, "f1", 1.1, 1.11, FAILED, error="terminating connection"))
    rows.append(row("u1", 1.005))
    r = account(events, rows, one_window(end=2.0), [], BalanceCheck(2.0, 1000), 1000)
    f = r.faults[0]
    assert (f.failed_tx, f.in_doubt, f.lost_acked, f.unknown_outcome) == (2, 1, 0, 1)
    assert ok(r)  # doubt is not a fault of the cluster


def test_unavailability_is_the_gap_between_the_last_commit_before_and_the_first_after():
    before, rows1 = steady(0.0, 3.0, prefix="a")
    after, rows2 = steady(5.5, 8.0, prefix="b", node="5441", tl=2)
    r = account(before + after, rows1 + rows2, one_window("kill-leader", end=8.0, injected=3.0, healed=7.0), [],
                BalanceCheck(8.0, 1000), 1000)
    f = r.faults[0]
    assert f.unavailability_s == pytest.approx(2.5)
    assert f.last_commit_before == pytest.approx(3.0) and f.first_commit_after == pytest.approx(5.5)
    assert f.recovered and f.overlapping_writers == []
    assert [w.label for w in r.writers] == ["5440 tl1", "5441 tl2"]


def test_a_gap_that_began_just_before_the_fault_counts_and_one_that_ended_before_it_does_not():
    acks = [0.0, 0.5, 2.5, 2.6, 2.7, 6.0, 6.1]  # a 2 s pause before the fault at 2.65; the outage 2.7 -> 6.0
    assert unavailability(acks, 0.0, 7.0, 2.65, 7.0, 0.5)[:2] == pytest.approx((3.3, 3.3))
    # after 6.05 only the 0.9 s tail to the end of the run: under min_gap it is no outage, and not "unrecovered"
    value, longest, _, after, recovered = unavailability(acks, 0.0, 7.0, 6.05, 7.0, 1.0)
    assert value == 0.0 and longest == pytest.approx(0.9) and after is None and recovered


def test_short_pauses_are_service_not_unavailability():
    acks = [0.0, 0.3, 0.6, 0.9]
    value, longest, *_ = unavailability(acks, 0.0, 0.9, 0.0, 0.9, 0.5)
    assert value == 0.0 and longest == pytest.approx(0.3)


def test_an_outage_that_lasts_until_the_end_is_not_recovered():
    events, rows = steady(0.0, 2.0)
    r = account(events, rows, one_window("freeze-leader", end=6.0, injected=2.0), [], BalanceCheck(6.0, 1000), 1000)
    f = r.faults[0]
    assert f.unavailability_s == pytest.approx(4.0) and not f.recovered and f.first_commit_after is None


def test_no_commit_at_all_is_one_open_gap():
    assert gaps([], 0.0, 3.0) == [(0.0, 3.0, False)]
    assert gaps([1.0, 2.0], 0.0, 3.0) == [(1.0, 2.0, True), (2.0, 3.0, False)]


def test_interleaving_commits_of_two_nodes_are_overlapping_writers():
    a_events, a_rows = steady(0.0, 5.0, node="5440", tl=1, prefix="a")
    b_events, b_rows = steady(3.0, 8.0, node="5441", tl=2, prefix="b")
    r = account(a_events + b_events, a_rows + b_rows, one_window(end=8.0), [], BalanceCheck(8.0, 1000), 1000)
    (pair,) = r.overlapping_writers
    assert (pair["a"], pair["b"]) == ("5440 tl1", "5441 tl2")
    assert pair["from"] == pytest.approx(2.999) and pair["to"] == pytest.approx(4.999)
    assert r.faults[0].overlapping_writers == [pair] and not ok(r)


def test_lost_writes_still_count_as_writers_through_what_the_client_was_told():
    a_events, _ = steady(0.0, 5.0, node="5440", tl=1, prefix="a")  # none of them reached the final primary
    b_events, b_rows = steady(1.0, 6.0, node="5441", tl=2, prefix="b")
    found = writers(b_rows, a_events + b_events)
    assert {w.label for w in found} == {"5440 tl1", "5441 tl2"}
    assert len(overlaps(found)) == 1


def test_a_handover_and_a_restart_in_place_do_not_overlap():
    rows = [row("a", 1.0, "5440", 1), row("b", 2.0, "5440", 1), row("c", 3.0, "5441", 2), row("d", 4.0, "5441", 2),
            row("e", 5.0, "5441", 2), row("f", 6.0, "5440", 3)]
    assert overlaps(writers(rows)) == []


def test_transactions_belong_to_the_window_they_ended_in():
    events, rows = steady(0.0, 9.98)
    windows = [FaultWindow("switchover", 0.0, 5.0, 1.0, 2.0), FaultWindow("stop-leader", 5.0, 10.0, 6.0, 8.0)]
    events.append(TxEvent(0, "late", 9.99, 10.2, FAILED))  # ended after the last window: the last one's
    r = account(events, rows, windows, [BalanceCheck(5.0, 1000)], BalanceCheck(10.0, 1000), 1000)
    assert [f.acked for f in r.faults] == [250, 250]
    assert [f.failed_tx for f in r.faults] == [0, 1]
    assert [f.fault for f in r.faults] == ["switchover", "stop-leader"]


def test_the_invariant_per_window_uses_its_own_checks_and_the_final_one_for_the_last():
    events, rows = steady(0.0, 9.98)
    windows = [FaultWindow("a", 0.0, 5.0, 1.0), FaultWindow("b", 5.0, 10.0, 6.0)]
    r = account(events, rows, windows, [BalanceCheck(4.9, 999)], BalanceCheck(10.0, 1000), 1000)
    assert [f.invariant_ok for f in r.faults] == [False, True] and not r.invariant_ok
    r = account(events, rows, windows, [BalanceCheck(4.9, 1000)], BalanceCheck(10.0, 1001), 1000)
    assert [f.invariant_ok for f in r.faults] == [True, False] and not r.invariant_ok
    r = account(events, rows, windows, [], BalanceCheck(10.0, 1000), 1000)  # no check of its own: the final one
    assert [f.invariant_ok for f in r.faults] == [True, True] and r.invariant_ok


def test_an_unreadable_final_sum_is_not_an_invariant_that_holds():
    events, rows = steady(0.0, 1.0)
    r = account(events, rows, one_window(end=1.0), [], BalanceCheck(1.0, None), 1000)
    assert not r.invariant_ok and not r.faults[0].invariant_ok


def test_the_ledger_explains_every_balance():
    rows = [row("a", 1.0, src=0, dst=1, amount=5), row("b", 2.0, src=1, dst=2, amount=3)]
    assert balances_match(rows, {0: 95, 1: 102, 2: 103}, 100)
    assert not balances_match(rows, {0: 95, 1: 105, 2: 100}, 100)  # the second transfer's balances are missing
    assert not balances_match(rows[:1], {0: 95, 1: 102, 2: 103}, 100)  # a transfer without its ledger row


def test_a_window_whose_fault_was_not_injected_measures_from_its_start_and_keeps_the_error():
    events, rows = steady(0.0, 4.0)
    r = account(events, rows, [FaultWindow("kill-leader", 0.0, 4.0, None, None, "the agent of node0 is gone")], [],
                BalanceCheck(4.0, 1000), 1000)
    f = r.faults[0]
    assert f.error == "the agent of node0 is gone" and f.injected_at is None and f.lost_acked_before_fault == 0


def test_buckets_count_commits_per_node_and_failures():
    events = [ack("a", 0.05, "5440"), ack("b", 0.07, "5440"), ack("c", 0.25, "5441"),
              TxEvent(0, "d", 0.1, 0.15, FAILED)]
    times, by_node, failed = buckets(events, 0.0, 0.3, 0.1)
    assert times == [0.0, 0.1, 0.2, 0.3]
    assert by_node == {"5440": [2, 0, 0, 0], "5441": [0, 0, 1, 0]} and failed == [0, 1, 0, 0]


def test_account_needs_a_window():
    with pytest.raises(ValueError):
        account([], [], [], [], None, 0)


def test_latency_percentiles_are_nearest_rank_in_ms():
    from pgha.verify.report import latency
    assert latency([]) == {}
    got = latency([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert got == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert latency([0.004]) == {"p50": 4.0, "p95": 4.0, "p99": 4.0, "max": 4.0}
