"""The operator verbs (patronictl's) end to end on a real 3-node cluster: `pgha` run as a command, as an operator
or a script would run it; interactive prompts driven through a pseudo-terminal (pexpect).

Every wait polls a condition under a deadline; every process started here ends by its PID.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pexpect
import pytest

from .conftest import wait_for
from .test_cluster import snapshot
from .test_switchover import settled

pytestmark = pytest.mark.integration


def pgha(cluster, *args: str, input: str | None = None, timeout: float = 180,
         env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgha", "-c", cluster.layout.ctl_config, *args], input=input,
                          capture_output=True, text=True, timeout=timeout, env=env)


def ok(cluster, *args: str, **kw) -> str:
    r = pgha(cluster, *args, **kw)
    assert r.returncode == 0, f"pgha {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def spawn(cluster, *args: str, env: dict | None = None) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "pgha", "-c", cluster.layout.ctl_config, *args], encoding="utf-8",
                         timeout=90, env=env or dict(os.environ), dimensions=(50, 250))


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    return child.exitstatus


def listed(cluster) -> list[dict]:
    return json.loads(ok(cluster, "list", "-f", "json"))


def test_list_formats_topology_version_history(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    rows = listed(cluster)
    assert sorted((r["Member"], r["Role"]) for r in rows) == sorted(
        (m.name, "Leader" if m.name == view.leader else "Replica") for m in view.members)
    assert all(r["State"] == ("running" if r["Role"] == "Leader" else "streaming") for r in rows)
    table = ok(cluster, "list", "-e")
    assert table.startswith(f"+ Cluster: pgha-local ({view.initialize}) ")
    assert "| Pending restart | Pending restart reason | Scheduled restart | Tags |" in table
    assert "\x1b[" not in table  # no colour codes in a pipe
    assert ok(cluster, "list", "-f", "tsv").splitlines()[0].split("\t")[:3] == ["Cluster", "Member", "Host"]
    assert "- Cluster: pgha-local" in ok(cluster, "list", "-f", "yaml")
    assert f"| {view.leader} " in ok(cluster, "topology")
    version = ok(cluster, "version", "pgha-local")
    assert all(f"{m.name}: pgha " in version and "PostgreSQL 15" in version for m in view.members)
    assert ok(cluster, "history").startswith("+----+-----+")
    assert ok(cluster, "show-config").startswith("loop_wait: 1\n")
    assert ok(cluster, "query", "-c", "SELECT 40 + 2 AS answer").splitlines() == ["answer", "42"]
    assert json.loads(ok(cluster, "query", "-r", "replica", "-c", "SELECT pg_is_in_recovery() AS r",
                         "--format", "json")) == [{"r": True}]


def test_list_watch_refreshes_until_interrupted(cluster):
    child = spawn(cluster, "list", "-w", "0.5", "-t")
    for _ in range(3):
        child.expect(r"\+ Cluster: pgha-local")
    child.kill(2)  # SIGINT, as an operator's ^C; the child is ours
    assert finish(child) == 0


def test_edit_config_pending_restart_and_rolling_restart(cluster):
    wait_for(lambda: settled(cluster), 60, "a settled cluster")
    out = ok(cluster, "edit-config", "-p", "max_connections=110", "-p", "work_mem=8MB", "--force")
    assert "+    max_connections: 110" in out and out.endswith("Configuration changed\n")
    rows = wait_for(lambda: (r := listed(cluster)) and all(x.get("Pending restart") == "*" for x in r) and r, 30,
                    "every member pending restart")
    assert all("max_connections: 100->110" in r["Pending restart reason"] for r in rows)
    assert "work_mem" not in rows[0]["Pending restart reason"]  # applied by the reload
    status = json.loads(__import__("requests").get(
        f"http://127.0.0.1:{cluster.layout.api_port(0)}/patroni", timeout=5).text)
    assert status["pending_restart"] is True and "max_connections" in status["pending_restart_reason"]
    leader = snapshot(cluster).leader
    out = ok(cluster, "restart", "pgha-local", "--pending", "--force")
    done = [line.split()[-1] for line in out.splitlines() if line.startswith("Success: restart on member")]
    assert sorted(done) == ["node0", "node1", "node2"] and done[-1] == leader  # replicas first, the leader last
    wait_for(lambda: not any(r.get("Pending restart") for r in listed(cluster)), 30, "no member pending restart")
    out = ok(cluster, "restart", "pgha-local", "--pending", "--force")
    assert "No member is pending a restart" in out
    wait_for(lambda: settled(cluster), 60, "a settled cluster after the rolling restart")


def test_edit_config_in_the_editor_shows_the_diff_and_asks(cluster, tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^maximum_lag_on_failover: .*/maximum_lag_on_failover: 2097152/' \"$1\"\n")
    editor.chmod(0o755)
    child = spawn(cluster, "edit-config", env={**os.environ, "EDITOR": str(editor)})
    child.expect(r"\+maximum_lag_on_failover: 2097152")
    child.expect(r"Apply these changes\? \[y/N\]: ")
    child.sendline("y")
    child.expect("Configuration changed")
    assert finish(child) == 0
    assert snapshot(cluster).config["maximum_lag_on_failover"] == 2097152


def test_interactive_switchover_with_defaults(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    candidates = sorted(m.name for m in view.members if m.name != view.leader)
    child = spawn(cluster, "switchover")
    child.expect("Current cluster topology")
    child.expect(rf"Primary \[{view.leader}\]: ")
    child.sendline("")
    child.expect_exact(f"Candidate {candidates!r} []: ")
    child.sendline(candidates[1])
    child.expect(r"When should the switchover take place \(e\.g\. [0-9T:-]+ \)  \[now\]: ")
    child.sendline("")
    child.expect(rf"Are you sure you want to switchover cluster pgha-local, demoting current leader {view.leader}\? "
                 r"\[y/N\]: ")
    child.sendline("y")
    child.expect(f'Successfully switched over to "{candidates[1]}"')
    assert finish(child) == 0
    assert wait_for(lambda: settled(cluster), 60, "a settled cluster").leader == candidates[1]


def test_scripted_switchover_failover_and_refusals(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    target = sorted(m.name for m in view.members if m.name != view.leader)[0]
    out = ok(cluster, "switchover", "--leader", view.leader, "--candidate", target, "--force")
    assert f'Successfully switched over to "{target}"' in out
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    other = sorted(m.name for m in view.members if m.name != view.leader)[0]
    assert f'Successfully failed over to "{other}"' in ok(cluster, "failover", "--candidate", other, "--force")
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    r = pgha(cluster, "switchover", "--leader", view.leader, "--candidate", view.leader, "--force")
    assert r.returncode == 1 and f"Error: Member {view.leader} is already the leader" in r.stderr
    r = pgha(cluster, "switchover", "--candidate", "node9", "--force")
    assert r.returncode == 1 and "Error: Member node9 does not exist in cluster pgha-local" in r.stderr
    assert snapshot(cluster).leader == view.leader


def test_scheduled_switchover_and_restart_are_flushed(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)).isoformat()
    target = sorted(m.name for m in view.members if m.name != view.leader)[0]
    out = ok(cluster, "switchover", "--candidate", target, "--scheduled", later, "--force")
    assert "Switchover scheduled" in out and "Switchover scheduled at: " in out
    assert "Success: scheduled switchover deleted" in ok(cluster, "flush", "pgha-local", "switchover")
    assert snapshot(cluster).failover is None
    assert "No pending scheduled switchover" in ok(cluster, "flush", "pgha-local", "switchover")
    out = ok(cluster, "restart", "pgha-local", target, "--scheduled", later, "--force")
    assert f"Success: restart scheduled on member {target}" in out
    assert f"Success: flush scheduled restart for member {target}" in ok(
        cluster, "flush", "pgha-local", target, "restart", "--force")
    assert f"No scheduled restart for member {target}" in ok(cluster, "flush", "pgha-local", target, "restart",
                                                              "--force")


def test_pause_and_resume(cluster):
    wait_for(lambda: settled(cluster), 60, "a settled cluster")
    out = ok(cluster, "pause", "--wait")
    assert "'pause' request sent" in out and out.endswith("Success: cluster management is paused\n")
    assert ok(cluster, "list").rstrip().endswith("Maintenance mode: on")
    wait_for(lambda: all(m.data.get("pause") for m in snapshot(cluster).members), 15, "pause in member data")
    r = pgha(cluster, "pause")
    assert r.returncode == 1 and r.stderr == "Error: Cluster is already paused\n"
    r = pgha(cluster, "reload", "pgha-local", "--force")  # the API and ctl keep working while paused
    assert r.returncode == 0 and r.stdout.count("Reload request received for member") == 3
    assert ok(cluster, "resume", "--wait").endswith("Success: cluster management is resumed\n")
    assert not snapshot(cluster).paused


def test_interactive_restart_of_one_member(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    replica = sorted(m.name for m in view.members if m.name != view.leader)[0]
    child = spawn(cluster, "restart", "pgha-local", replica)
    child.expect(r"When should the restart take place \(e\.g\. [0-9T:-]+\)  \[now\]: ")
    child.sendline("")
    child.expect(rf"Are you sure you want to restart members {replica}\? \[y/N\]: ")
    child.sendline("y")
    child.expect(r"Restart if the PostgreSQL version is less than provided \(e\.g\. 9\.5\.2\)  \[\]: ")
    child.sendline("")
    child.expect(f"Success: restart on member {replica}")
    assert finish(child) == 0
    child = spawn(cluster, "restart", "pgha-local", replica)
    child.expect(r"\[now\]: ")
    child.sendline("")
    child.expect(r"\[y/N\]: ")
    child.sendline("n")
    child.expect("Error: Aborted restart")
    assert finish(child) == 1


def test_remove_a_cluster_from_the_dcs(cluster):
    from pgha.dcs import dcs_from_config
    from pgha.config import load_ctl_config
    target = load_ctl_config(cluster.layout.ctl_config, None, {})
    dcs = dcs_from_config(target.dcs, namespace=target.namespace, scope="ctl-remove-me", ttl=30)
    try:
        assert dcs.claim_initialize() and dcs.set_config({"ttl": 30})
        child = spawn(cluster, "remove", "ctl-remove-me")
        child.expect("Please confirm the cluster name to remove: ")
        child.sendline("ctl-remove-me")
        child.expect(r'please type: "Yes I am aware": ')
        child.sendline("Yes I am aware")
        assert finish(child) == 0
        view = dcs.snapshot()
        assert view.initialize is None and view.config is None
        assert snapshot(cluster).leader is not None  # the real cluster is untouched
    finally:
        dcs.close(revoke=False)
