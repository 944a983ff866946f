"""Patroni 4.1.5's own patronictl pointed at a pgha cluster: it lists it with the right roles and states, shows its
configuration and history, and completes a switchover.

patronictl comes from the benchmark's virtualenv when it holds 4.1.5 (bench/patroni_env.py builds it), else it
is installed here into a virtualenv under /tmp (pip install patroni[etcd3]==4.1.5), bounded in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from .conftest import wait_for
from .test_switchover import settled

pytestmark = pytest.mark.integration

VERSION = "4.1.5"
CANDIDATES = [os.environ.get("PGHA_BENCH_PATRONI_VENV", "/opt/pgha-bench/patroni-venv"),
              os.path.join(tempfile.gettempdir(), f"pgha-patronictl-{VERSION}")]


def _usable(venv: str) -> bool:
    exe = os.path.join(venv, "bin", "patronictl")
    if not os.access(exe, os.X_OK):
        return False
    try:
        r = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip() == f"patronictl version {VERSION}"


@pytest.fixture(scope="module")
def patronictl() -> str:
    for venv in CANDIDATES:
        if _usable(venv):
            return os.path.join(venv, "bin", "patronictl")
    venv = CANDIDATES[-1]
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    steps = [[python, "-m", "venv", "--clear", venv],
             [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
              f"patroni[etcd3]=={VERSION}", "psycopg[binary]"]]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(step)} failed:\n{(r.stdout + r.stderr)[-2000:]}"
    assert _usable(venv), f"patronictl {VERSION} still not usable from {venv}"
    return os.path.join(venv, "bin", "patronictl")


def run(patronictl: str, cluster, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "PYTHON", "VIRTUAL_ENV"))}
    r = subprocess.run([patronictl, "-c", cluster.layout.ctl_config, *args], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, f"patronictl {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_patronictl_lists_shows_config_history_and_switches_over(patronictl, cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    rows = json.loads(run(patronictl, cluster, "list", "-f", "json"))
    assert sorted((r["Member"], r["Role"], r["State"]) for r in rows) == sorted(
        (m.name, "Leader", "running") if m.name == view.leader else (m.name, "Replica", "streaming")
        for m in view.members)
    assert all(r["TL"] == view.member(view.leader).timeline for r in rows)
    table = run(patronictl, cluster, "list")
    assert table.startswith(f"+ Cluster: pgha-local ({view.initialize}) ")
    ours = subprocess.run([sys.executable, "-m", "pgha", "-c", cluster.layout.ctl_config, "list"],
                          capture_output=True, text=True, timeout=60).stdout
    assert [line.split("|")[1:5] for line in table.splitlines()[3:6]] == \
        [line.split("|")[1:5] for line in ours.splitlines()[3:6]]  # same members, hosts, roles, states
    assert "ttl: 5" in run(patronictl, cluster, "show-config")
    assert run(patronictl, cluster, "history").startswith("+----+-----+--------+-----------+------------+")
    target = sorted(m.name for m in view.members if m.name != view.leader)[0]
    out = run(patronictl, cluster, "switchover", "--leader", view.leader, "--candidate", target, "--force")
    assert f'Successfully switched over to "{target}"' in out
    after = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    assert after.leader == target
    history = json.loads(run(patronictl, cluster, "history", "-f", "json"))
    assert history[-1]["New Leader"] == target
    rows = json.loads(run(patronictl, cluster, "list", "-f", "json"))
    assert {r["Member"]: r["Role"] for r in rows}[target] == "Leader"
