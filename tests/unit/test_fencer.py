"""The fencer process, with a stand-in postmaster (a sleeping process we start): it signals exactly at a missed
deadline, never when re-armed or disarmed in time, and still fences after its agent died."""

from __future__ import annotations

import subprocess
import sys
import time

from pgha.agent.fencer import Fencer


def start_fake_postmaster(data_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (data_dir / "postmaster.pid").write_text(f"{proc.pid}\n{data_dir}\n")
    return proc


def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_a_missed_deadline_fences(tmp_path):
    pm = start_fake_postmaster(tmp_path)
    fencer = Fencer(str(tmp_path))
    try:
        fencer.arm(time.monotonic() + 0.5)
        assert wait_exit(pm, 10) == -3  # SIGQUIT: PostgreSQL's immediate shutdown
    finally:
        fencer.close()
        pm.kill()


def test_rearming_and_disarming_in_time_never_fences(tmp_path):
    pm = start_fake_postmaster(tmp_path)
    fencer = Fencer(str(tmp_path))
    try:
        for _ in range(5):
            fencer.arm(time.monotonic() + 0.6)
            time.sleep(0.2)
        fencer.disarm()
        assert wait_exit(pm, 1.5) is None
    finally:
        fencer.close()
        pm.kill()
        pm.wait()


def test_the_deadline_survives_the_agent(tmp_path):
    pm = start_fake_postmaster(tmp_path)
    fencer = subprocess.Popen([sys.executable, "-m", "pgha.agent.fencer", str(tmp_path)], stdin=subprocess.PIPE)
    try:
        fencer.stdin.write(f"arm {time.monotonic() + 1.0:.3f}\n".encode())
        fencer.stdin.close()  # the agent is gone
        assert wait_exit(pm, 10) == -3
        assert wait_exit(fencer, 10) == 0
    finally:
        pm.kill()
        fencer.kill()


def test_a_primary_started_after_the_missed_deadline_is_fenced_too(tmp_path):
    """A start already on its way when the agent froze must not leave a primary running past the lease."""
    fencer = Fencer(str(tmp_path))
    try:
        fencer.arm(time.monotonic() + 0.3)  # nothing runs at the deadline
        time.sleep(0.6)  # pacing: the deadline passes with no postmaster (the start is still on its way)
        replica = start_fake_postmaster(tmp_path)
        (tmp_path / "standby.signal").write_text("")
        assert wait_exit(replica, 1.0) is None  # a replica is no writer: left alone
        replica.kill()
        replica.wait()
        (tmp_path / "standby.signal").unlink()
        late_primary = start_fake_postmaster(tmp_path)
        assert wait_exit(late_primary, 10) == -3
        fencer.arm(time.monotonic() + 30)  # the agent speaks again: the fence is lifted
        again = start_fake_postmaster(tmp_path)
        assert wait_exit(again, 1.0) is None
        again.kill()
        again.wait()
    finally:
        fencer.close()
