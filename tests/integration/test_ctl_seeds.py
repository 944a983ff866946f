"""The operator flows of the seed guides (shared/seeds 001 and 002), as written, with `pgha` in place of
`patronictl`, on a real 3-node cluster.

Every wait polls a condition under a deadline; every process started here ends by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from .conftest import wait_for
from .test_cluster import snapshot
from .test_ctl import finish, listed, ok, pgha, spawn
from .test_switchover import settled

pytestmark = pytest.mark.integration

# Seed 001: PGTune's suggestion for 4 GB / 2 CPUs, typed into edit-config's editor. (shared_buffers is also set
# in `pgha up`'s local configuration, which wins, as Patroni's does; wal_buffers needs the restart.)
PGTUNE = """    max_connections: 100
    shared_buffers: '1GB'
    effective_cache_size: '3GB'
    maintenance_work_mem: '256MB'
    checkpoint_completion_target: 0.9
    wal_buffers: '16MB'
    default_statistics_target: 100
    random_page_cost: 1.1
    effective_io_concurrency: 200
    work_mem: '2621kB'
    min_wal_size: '1GB'
    max_wal_size: '4GB'
"""


def test_seed_001_pgtune_with_edit_config_then_restart(cluster, tmp_path):
    wait_for(lambda: settled(cluster), 60, "a settled cluster")
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\npath = sys.argv[1]\ntext = open(path).read()\n"
                      f"text = text.replace('  parameters:\\n', '  parameters:\\n' + {PGTUNE!r}, 1)\n"
                      "open(path, 'w').write(text)\n")
    child = spawn(cluster, "edit-config", env={**os.environ, "EDITOR": f"{shutil.which('python3')} {editor}"})
    child.expect_exact("+    wal_buffers: '16MB'")
    child.expect_exact("Apply these changes? [y/N]: ")
    child.sendline("y")
    child.expect_exact("Configuration changed")
    assert finish(child) == 0
    wait_for(lambda: all(r.get("Pending restart") == "*" for r in listed(cluster)), 30, "pending restart shown")
    table = ok(cluster, "list")
    assert "| Pending restart |" in table and "wal_buffers: " in table
    child = spawn(cluster, "restart", "pgha-local")
    child.expect(r"When should the restart take place \(e\.g\. [0-9T:-]+\)  \[now\]: ")
    child.sendline("")
    child.expect_exact("Are you sure you want to restart members node0, node1, node2? [y/N]: ")
    child.sendline("y")
    child.expect_exact("Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)  []: ")
    child.sendline("")
    for _ in range(3):
        child.expect(r"Success: restart on member node\d")
    assert finish(child) == 0
    shown = ok(cluster, "show-config")
    for line in ("effective_cache_size: 3GB", "wal_buffers: 16MB", "work_mem: 2621kB", "random_page_cost: 1.1"):
        assert f"    {line}\n" in shown
    wait_for(lambda: not any(r.get("Pending restart") for r in listed(cluster)), 30, "no pending restart")
    wait_for(lambda: settled(cluster), 60, "a settled cluster")


def test_seed_002_piped_pg_hba_and_parameters(cluster, tmp_path):
    wait_for(lambda: settled(cluster), 60, "a settled cluster")
    hba = ("host replication replicator 0.0.0.0/0 md5\nlocal all all  trust\nhost all all 127.0.0.1/32 trust\n"
           "host all all localhost trust\n")
    if shutil.which("jq"):
        piped = subprocess.run(["jq", "-R", "-s", 'split("\\n") | .[0:-1] | {"postgresql": {"pg_hba": .}}'],
                               input=hba, capture_output=True, text=True, timeout=30, check=True).stdout
    else:  # the same JSON jq writes
        piped = json.dumps({"postgresql": {"pg_hba": hba.split("\n")[:-1]}})
    out = ok(cluster, "edit-config", "--apply", "-", "--force", "pgha-local", input=piped)
    assert out.endswith("Configuration changed\n")
    assert "  - local all all  trust\n" in ok(cluster, "show-config")
    conf = '"postgresql": {\n"parameters": {\n\t"max_connections" : 101\n}\n}\n'
    r = pgha(cluster, "edit-config", "--apply", "-", "pgha-local", input=conf)
    assert r.returncode == 0 and r.stdout.endswith("Use --force option to apply changes\n")
    assert ok(cluster, "edit-config", "--apply", "-", "--force", "pgha-local", input=conf).endswith(
        "Configuration changed\n")
    wait_for(lambda: all(r.get("Pending restart") == "*" for r in listed(cluster)), 30, "pending restart shown")
    # (pg_hba.conf itself keeps `pgha up`'s local postgresql.pg_hba, which wins over the DCS one, as in Patroni.)
    out = ok(cluster, "restart", "pgha-local", "--force")
    assert out.count("Success: restart on member") == 3
    wait_for(lambda: not any(r.get("Pending restart") for r in listed(cluster)), 30, "no pending restart")


def test_seed_002_switchover_to_a_named_candidate(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    target = sorted(m.name for m in view.members if m.name != view.leader)[-1]
    child = spawn(cluster, "switchover")
    child.expect_exact(f"Primary [{view.leader}]: ")
    child.sendline("")
    child.expect(r"Candidate \[.*\] \[\]: ")
    child.sendline(target)
    child.expect(r"\[now\]: ")
    child.sendline("")
    child.expect_exact(f"Are you sure you want to switchover cluster pgha-local, demoting current leader "
                       f"{view.leader}? [y/N]: ")
    child.sendline("y")
    child.expect_exact(f'Successfully switched over to "{target}"')
    assert finish(child) == 0
    assert wait_for(lambda: settled(cluster), 60, "a settled cluster").leader == target


def test_seed_002_reinit_of_a_failed_member(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    name = sorted(m.name for m in view.members if m.name != view.leader)[0]
    i = int(name.removeprefix("node"))
    data = os.path.join(cluster.layout.node_dir(i), "data")
    with open(os.path.join(data, "postgresql.base.conf"), "a") as f:
        f.write("\nthis is not a setting\n")  # PostgreSQL will refuse to start with it
    with open(os.path.join(data, "postmaster.pid")) as f:
        os.kill(int(f.readline()), signal.SIGKILL)  # the postmaster this test's cluster started
    wait_for(lambda: (m := snapshot(cluster).member(name)) and m.state not in ("running", "starting"), 60,
             f"{name} failing to start")
    out = ok(cluster, "reinit", name, "--force", "--wait")  # as the seed writes it: the member right after reinit
    assert f"Success: reinitialize for member {name}" in out and f"Reinitialize is completed on: {name}" in out
    rows = wait_for(lambda: (r := {x["Member"]: x for x in listed(cluster)}) and
                    r[name]["State"] == "streaming" and r, 60, f"{name} streaming again")
    assert rows[name]["Role"] == "Replica"
