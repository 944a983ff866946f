"""A few hundred seeded random fault schedules keep every invariant, in each synchronous mode (the full 10,000 run,
every mode mixed, is a CI step of its own: ``python -m pgha sim --schedules 10000 --seed 1``).

Safety (single writer, lease and lag at promotion, no agent error, and with synchronous replication no
acknowledged write lost) admits no exception. One liveness gap of the
current core is tolerated here as an xfail, listed with the command that replays each schedule: a node left
*diverged* from the leader's WAL and never rewound (``invariants.NOT_REWOUND``). Its causes, open in the core:
an ordinary replica that holds WAL the new leader never had (only former primaries are checked for divergence),
a leader elected from an older timeline than the cluster's newest, and two forks that got the same timeline id
(pg_rewind and ``diverged_from`` compare timeline ids). When those are fixed, ``TOLERATED`` goes.
"""

from __future__ import annotations

import pytest

from pgha.sim import runner
from pgha.sim.invariants import NOT_REWOUND

SCHEDULES = 120  # per mode
SEED = 1
TOLERATED = NOT_REWOUND


def _tolerated(outcome: runner.Outcome) -> bool:
    return all(v.invariant == "converge" and TOLERATED in v.message for v in outcome.failures)


def _describe(outcome: runner.Outcome) -> str:
    first = outcome.failures[0]
    return (f"{outcome.seed} [{','.join(outcome.kinds)}] {first.invariant}: {first.message}\n"
            f"    replay: pgha sim --replay {outcome.seed} --sync-mode {outcome.mode}")


@pytest.mark.parametrize("mode", ["off", "on", "quorum"])
def test_random_schedules_keep_the_invariants(mode: str):
    summary = runner.run_many(SCHEDULES, SEED, workers=2, sync_mode=mode)
    assert summary.schedules == SCHEDULES and set(summary.modes) == {mode}
    broken = [o for o in summary.failed if not _tolerated(o)]
    assert not broken, f"{len(broken)} schedule(s) broke an invariant:\n" + "\n".join(map(_describe, broken))
    if mode != "off":  # any loss already failed the acked-writes invariant above; this says it was counted
        assert summary.modes[mode].lost_writes == 0 and summary.modes[mode].acked_writes > 0
    if summary.failed:
        pytest.xfail(f"{len(summary.failed)} schedule(s) end with a node diverged and not rewound (open core "
                     "gap):\n" + "\n".join(map(_describe, summary.failed)))
