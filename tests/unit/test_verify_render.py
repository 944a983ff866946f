"""The verifier's outputs from a made-up run: the JSON fields scripts rely on, the terminal table, the PNG, and
that no password is written."""

from __future__ import annotations

import json

from pgha.verify.render import plot, redact, table, to_json
from pgha.verify.report import FAILED, OK, BalanceCheck, FaultWindow, LedgerRow, TxEvent, account
from pgha.verify.runner import Result, Settings

T0 = 1_800_000_000.0
SYS = "7000000000000000001"


def made_up_run() -> Result:
    events, ledger = [], []
    for k in range(100):  # node 5440 on timeline 1 until 2.45 s, then 5441 from 7 s on timeline 2
        t = T0 + k * 0.05 if k < 50 else T0 + 7.0 + (k - 50) * 0.05
        node, tl = ("5440", 1) if k < 50 else ("5441", 2)
        events.append(TxEvent(k % 2, f"c{k}", t - 0.01, t, OK, node, SYS, tl, t - 0.005))
        if k != 49:  # the last commit before the fault is lost
            ledger.append(LedgerRow(f"c{k}", node, SYS, tl, t - 0.005, 0, 1, 1))
    events.append(TxEvent(0, "f1", T0 + 5.5, T0 + 5.6, FAILED, error="connection refused"))
    windows = [FaultWindow("kill-leader", T0, T0 + 10.0, T0 + 5.0, T0 + 9.0, note="SIGKILL node0")]
    balances = {0: 1000 - 99, 1: 1000 + 99}
    report = account(events, ledger, windows, [], BalanceCheck(T0 + 10, 2000), 2000, balances=balances,
                     initial=1000, final_node="5441")
    settings = Settings(dsns=["host=127.0.0.1 port=5740 user=postgres password=s3cret"], clients=2, seed=4)
    return Result("run-1", settings, report, events, windows, [(T0 + 0.1, "node0"), (T0 + 6.9, "node1")],
                  {"5440": "node0", "5441": "node1"})


def test_json_has_the_fields_per_fault_in_seconds_since_the_start():
    data = to_json(made_up_run())
    json.dumps(data)  # serialisable
    (f,) = data["faults"]
    assert f["fault"] == "kill-leader" and f["lost_acked"] == 1 and f["failed_tx"] == 1 and f["in_doubt"] == 0
    assert f["invariant_ok"] is True and f["overlapping_writers"] == []
    assert f["unavailability_s"] == 4.55 and f["injected_at"] == 5.0 and f["healed_at"] == 9.0
    assert data["ok"] is False and data["lost_acked"] == 1 and data["final_node"] == "node1 (5441)"
    assert [w["node"] for w in data["writers"]] == ["node0 (5440)", "node1 (5441)"]
    assert data["leader_changes"][1] == {"at": 6.9, "leader": "node1"}


def test_no_password_is_written():
    data = json.dumps(to_json(made_up_run()))
    assert "s3cret" not in data and "***" in data
    assert "s3cret" not in redact("postgresql://u:s3cret@127.0.0.1:5440/postgres")


def test_the_table_names_each_fault_and_the_verdict():
    text = table(made_up_run())
    assert "kill-leader" in text and "4.55" in text and "SIGKILL node0" in text
    assert "1 acknowledged and lost" in text and "final primary node1 (5441)" in text
    assert "verdict: FAILED" in text


def test_the_timeline_is_a_png(tmp_path):
    path = tmp_path / "t.png"
    plot(made_up_run(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
