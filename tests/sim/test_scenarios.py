"""The hand-written scenarios (tests/sim/scenarios/*.txt) produce exactly their expected transcripts.

Each file is a datadriven script (see pgha.sim.script): commands, each followed by ``----`` and the transcript it
must produce. After an intended change of behaviour, regenerate them and review the diff:

    PGHA_SIM_REWRITE=1 python -m pytest tests/sim/test_scenarios.py    (or: pgha sim --script FILE --rewrite)
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from pgha.sim.script import run_script

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))
REWRITE = os.environ.get("PGHA_SIM_REWRITE") == "1"


def test_every_fault_case_has_a_scenario():
    names = {p.name.split("_")[0] for p in SCENARIOS}
    assert {"a", "b", "c", "d", "e"} <= names
    # synchronous replication: f sync standby wins, g quorum needs the other voter, h strict blocks writes,
    # i the lagging sync standby wins over the more advanced asynchronous replica, j maximum_lag_on_syncnode
    assert {"f", "g", "h", "i", "j"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path):
    expected = path.read_text(encoding="utf-8")
    actual, _ = run_script(expected)
    if REWRITE:
        path.write_text(actual, encoding="utf-8")
        return
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            "expected", "actual"))
        pytest.fail(f"{path.name} differs (PGHA_SIM_REWRITE=1 to accept):\n{diff}", pytrace=False)
