"""The verifier's fault menu against a stand-in Target: what each fault does to the processes it is given, in
which order, that a stopped process is always resumed, that errors are reported and not raised, and that the
partition faults say they need `pgha up --netns`."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from pgha.procutil import pid_alive
from pgha.verify.faults import FAULTS, NETNS_MISSING, FaultContext, FaultError, check_menu, run_fault
from pgha.verify.target import Target
from pgha.verify.workload import with_defaults


class FakeTarget(Target):
    kind = "fake"
    capabilities = frozenset({"api", "sql", "processes"})

    def __init__(self, names=("n0", "n1", "n2"), ttl=0.2) -> None:
        self.names = list(names)
        self.leader_name: str | None = names[0]
        self.procs = {n: self._sleeper() for n in names}
        self.calls: list[str] = []
        self._ttl = ttl

    @staticmethod
    def _sleeper() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def leader(self):
        if self.leader_name and not pid_alive(self.procs[self.leader_name].pid):
            self.procs[self.leader_name].poll()
            self.leader_name = next(n for n in self.names if n != self.leader_name)  # "failover"
        return self.leader_name

    def members(self):
        from pgha.core.model import Member
        return [Member(name=n) for n in self.names]

    def ttl(self) -> float:
        return self._ttl

    def healthy(self) -> bool:
        return True

    def agent_pid(self, name):
        proc = self.procs[name]
        proc.poll()
        return proc.pid if proc.returncode is None else None

    def postmaster_pid(self, name):
        return None

    def start_agent(self, name, timeout):
        self.calls.append(f"start {name}")
        self.procs[name] = self._sleeper()

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@pytest.fixture
def fake():
    target = FakeTarget()
    yield target
    target.cleanup()


def ctx(target, seconds=20.0, seed=1) -> FaultContext:
    return FaultContext(target, random.Random(seed), time.monotonic() + seconds)


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0]


def test_kill_leader_kills_its_agent_waits_for_a_new_leader_and_restarts_it(fake):
    old = fake.procs["n0"]
    out = run_fault("kill-leader", ctx(fake))
    assert out.error == "" and out.injected_at is not None and out.healed_at >= out.injected_at
    assert old.wait(5) == -signal.SIGKILL
    assert fake.leader_name == "n1" and fake.calls == ["start n0"]


def test_freeze_leader_always_resumes_the_agent(fake):
    pid = fake.procs["n0"].pid
    out = run_fault("freeze-leader", ctx(fake))
    assert out.error == "" and "SIGSTOP n0" in out.note
    assert state(pid) != "T"  # running (or sleeping) again


def test_stop_leader_terms_and_restarts(fake):
    old = fake.procs["n0"]
    out = run_fault("stop-leader", ctx(fake))
    assert out.error == "" and old.wait(5) == -signal.SIGTERM and fake.calls == ["start n0"]


def test_restart_all_restarts_every_agent_in_seeded_order(fake):
    out = run_fault("restart-all", ctx(fake, seed=3))
    order = random.Random(3).sample(["n0", "n1", "n2"], 3)
    assert out.error == "" and fake.calls == [f"start {n}" for n in order]


class FakeDcsTarget(FakeTarget):
    """Adds a DCS process (a sleeper) and records when it is started again."""

    def __init__(self) -> None:
        super().__init__()
        self.dcs = self._sleeper()
        self.dcs_started: list[float] = []

    def dcs_pids(self):
        return [self.dcs.pid] if self.dcs.poll() is None else []

    def start_dcs(self, timeout):
        self.dcs_started.append(time.monotonic())
        self.dcs = self._sleeper()

    def cleanup(self) -> None:
        super().cleanup()
        if self.dcs.poll() is None:
            self.dcs.kill()
        self.dcs.wait(5)


@pytest.mark.parametrize("outage, expected", [(None, 0.2), (0.8, 0.8)])
def test_kill_dcs_member_holds_the_dcs_down_for_ttl_or_the_outage_given(outage, expected):
    target = FakeDcsTarget()
    try:
        old = target.dcs
        context = ctx(target)
        context.dcs_outage = outage
        started = time.monotonic()
        out = run_fault("kill-dcs-member", context)
        assert out.error == "" and old.wait(5) == -signal.SIGKILL
        assert len(target.dcs_started) == 1 and target.dcs_started[0] - started >= expected
        assert f"restarted after {expected:.0f}s ({'ttl' if outage is None else 'given'})" in out.note
    finally:
        target.cleanup()


def test_an_error_is_reported_not_raised(fake):
    fake.procs["n0"].kill()
    fake.procs["n0"].wait(5)
    fake.leader_name = "n0"
    fake.leader = lambda: "n0"  # the DCS still names the dead node
    out = run_fault("stop-leader", ctx(fake))
    assert "the agent of n0 is not running" in out.error and out.injected_at is None and out.healed_at is None


def test_a_wait_ends_at_the_deadline(fake):
    fake.leader = lambda: None
    started = time.monotonic()
    out = run_fault("kill-leader", ctx(fake, seconds=0.5))
    assert "timed out waiting for the cluster to have a leader" in out.error
    assert time.monotonic() - started < 3


def test_partitions_need_netns():
    for name in ("partition-leader-dcs", "partition-leader-replicas", "isolate-leader"):
        with pytest.raises(FaultError, match="needs `pgha up --netns`"):
            check_menu([name], FakeTarget.__new__(FakeTarget))
        assert NETNS_MISSING in run_fault(name, ctx(Target())).error


def test_the_menu_is_checked_before_the_run():
    with pytest.raises(FaultError, match="unknown fault 'kill-everything'"):
        check_menu(["kill-everything"], None)
    with pytest.raises(FaultError, match="needs a cluster"):
        check_menu(["switchover"], None)
    check_menu(["none"], None)
    with pytest.raises(FaultError, match="needs processes, which a ctl-config target"):
        from pgha.verify.target import CtlTarget
        check_menu(["kill-leader"], CtlTarget.__new__(CtlTarget))
    assert set(FAULTS) >= {"kill-leader", "freeze-leader", "crash-postgres", "stop-leader", "switchover",
                           "terminate-backends", "restart-all", "kill-dcs-member"}


def test_connection_defaults_do_not_override_the_dsn():
    from psycopg.conninfo import conninfo_to_dict
    d = conninfo_to_dict(with_defaults("host=127.0.0.1 port=5440 connect_timeout=9"))
    assert d["connect_timeout"] == "9" and d["application_name"] == "pgha-verify"
    assert "options" not in d  # PgBouncer refuses it: each transfer sets its statement_timeout itself
    d = conninfo_to_dict(with_defaults("postgresql://u@127.0.0.1:5440/db?application_name=mine"))
    assert d["application_name"] == "mine" and d["user"] == "u"
