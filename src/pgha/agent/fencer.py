"""The fencer: a small watchdog process that stops this node's PostgreSQL if the agent misses its lease deadline.

Why: the HA loop fences its primary before the lease can expire (docs/safety.md), but only while it runs. An
agent that is frozen (SIGSTOP, a VM pause, a stuck thread) or killed leaves PostgreSQL accepting writes after the
lease has run out and another node may have promoted. Patroni answers this with a hardware or softdog watchdog
that reboots the machine; the fencer does the narrow thing instead: it stops PostgreSQL (immediate shutdown,
every session ended) at the moment the agent itself would have.

Protocol, one line per message on the fencer's stdin:
    arm <deadline>     fence at <deadline> (CLOCK_MONOTONIC seconds, the same clock in every process) unless a
                       later arm or a disarm arrives first
    disarm             do nothing until armed again
    exit               stop the fencer (the agent is shutting down cleanly)
End of input (the agent died) keeps the last deadline: the fencer fences then, and exits.
Once a deadline has passed while the agent is alive but silent (frozen), the fence stays in force until the next
command: a PostgreSQL that comes up as a primary afterwards (a start already on its way when the agent froze) is
stopped too, every ``ENFORCE_POLL`` seconds. One coming up with standby.signal (a replica) is left alone.

Rules
1. The fencer never starts anything and never touches the DCS; it can only stop PostgreSQL, by the pid in its
   own data directory's postmaster.pid, and only after a deadline the agent gave it.
2. It runs in its own process group, so stopping the agent's process (or group) does not stop it.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time

log = logging.getLogger(__name__)

ENFORCE_POLL = 0.1  # seconds between looks for a primary started after the deadline


def postmaster_pid(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def fence(data_dir: str) -> bool:
    """Immediate shutdown of the postmaster (SIGQUIT): every backend ends at once."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return False
    return True


def serve(data_dir: str, fd: int | None = None) -> None:
    """Read commands from ``fd`` (stdin) and fence when an armed deadline passes. Reads the raw descriptor:
    a buffered reader could hold a second command that select() would then never report."""
    fd = sys.stdin.fileno() if fd is None else fd
    deadline: float | None = None
    enforcing = False  # the deadline passed and the agent has said nothing since
    fenced_pid: int | None = None  # the postmaster already sent SIGQUIT (it may take a moment to go)
    pending = b""
    open_input = True
    while open_input or (deadline is not None and not enforcing):
        if enforcing:
            timeout: float | None = ENFORCE_POLL
        else:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = select.select([fd], [], [], timeout)[0] if open_input else []
        if not open_input:
            time.sleep(timeout or 0)
        if ready:
            chunk = os.read(fd, 4096)
            open_input = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                word, _, arg = line.decode().strip().partition(" ")
                if word == "exit":
                    return
                deadline = float(arg) if word == "arm" else None
                enforcing = False
            continue
        if enforcing:
            pid = postmaster_pid(data_dir)
            if pid is not None and pid != fenced_pid and \
                    not os.path.exists(os.path.join(data_dir, "standby.signal")) and fence(data_dir):
                fenced_pid = pid
                print("pgha fencer: a primary started after the missed deadline; stopped (immediate)",
                      file=sys.stderr, flush=True)
            continue
        if deadline is not None and time.monotonic() >= deadline:
            fenced_pid = postmaster_pid(data_dir)
            fenced = fence(data_dir)
            print(f"pgha fencer: the agent missed its lease deadline; PostgreSQL "
                  f"{'stopped (immediate)' if fenced else 'was not running'}", file=sys.stderr, flush=True)
            enforcing = open_input  # a dead agent's fencer exits; a silent one keeps the fence in force
            if not open_input:
                deadline = None


class Fencer:
    """The agent's handle on its fencer process."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.armed_until: float | None = None

    def _ensure(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-m", "pgha.agent.fencer", self.data_dir],
                                         stdin=subprocess.PIPE, text=True, start_new_session=True)
        return self.proc

    def _send(self, line: str) -> None:
        try:
            proc = self._ensure()
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (OSError, ValueError) as e:
            log.warning("fencer: %s", e)
            self.proc = None

    def arm(self, deadline: float) -> None:
        if deadline != self.armed_until:
            self._send(f"arm {deadline:.3f}")
            self.armed_until = deadline

    def disarm(self) -> None:
        if self.armed_until is not None:
            self._send("disarm")
            self.armed_until = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._send("exit")
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


if __name__ == "__main__":
    serve(sys.argv[1])
