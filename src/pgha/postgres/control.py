"""Running PostgreSQL's own programs for the agent: initdb, pg_ctl, pg_basebackup, pg_controldata.

Rules
1. Every command runs as the PostgreSQL account (osuser.py) with a deadline; a command that overruns it is
   killed and reported as failed. Nothing here waits without a bound.
2. Stopping escalates: the requested mode first, then ``immediate``, then SIGKILL of the postmaster, so a
   demotion never hangs on a stuck shutdown.
3. Errors carry the command's last output lines, never a password (passwords travel in pgpass/pwfile only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from pgha.osuser import Account
from pgha.procutil import pid_alive, wait_gone


class CommandError(Exception):
    pass


class PgCommands:
    def __init__(self, bin_dir: str, data_dir: str, account: Account, env: dict | None = None) -> None:
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.account = account
        self.extra_env = env or {}

    def binary(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    def run(self, name: str, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
        return self._run(name, [self.binary(name), *args], timeout, check)

    def run_script(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return self._run(os.path.basename(argv[0]), argv, timeout, True)

    def _run(self, name: str, cmd: list[str], timeout: float, check: bool) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
                                  env=self.account.env(self.extra_env), **self.account.subprocess_kwargs())
        except subprocess.TimeoutExpired:
            raise CommandError(f"{name} did not finish within {timeout:.0f}s") from None
        except OSError as e:
            raise CommandError(f"{name}: {e}") from None
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            raise CommandError(f"{name} exited with {proc.returncode}: " + " | ".join(tail))
        return proc

    def controldata(self) -> dict[str, str]:
        proc = self.run("pg_controldata", "-D", self.data_dir, timeout=10, check=False)
        if proc.returncode != 0:
            return {}
        out = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def leftover_pids(self) -> list[int]:
        """Processes still working in this data directory (backends of a killed postmaster): a new postmaster
        cannot start while they hold the old shared memory."""
        target = os.path.realpath(self.data_dir)
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdecimal():
                try:
                    if os.readlink(f"/proc/{entry}/cwd") == target:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def start(self, timeout: float, log_file: str) -> None:
        deadline = time.monotonic() + 15
        while self.postmaster_pid() is None and self.leftover_pids() and time.monotonic() < deadline:
            time.sleep(0.1)  # they exit on their own once they notice the postmaster is gone
        self._remove_stale_pid_file()
        self.run("pg_ctl", "start", "-D", self.data_dir, "-w", "-t", str(int(max(1, timeout))), "-l", log_file,
                 timeout=timeout + 5)

    def stop(self, mode: str, timeout: float) -> None:
        """Stop with ``mode``, escalating to immediate and then SIGKILL; returns once no postmaster runs."""
        for step in (mode, "immediate"):
            try:
                self.run("pg_ctl", "stop", "-D", self.data_dir, "-m", step, "-w", "-t", str(int(max(1, timeout))),
                         timeout=timeout + 5)
                return
            except CommandError:
                if not self.postmaster_pid():
                    return
        pid = self.postmaster_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)

    def _remove_stale_pid_file(self) -> None:
        """A killed postmaster nobody reaped (no init process reaping orphans, as in many containers) stays a
        zombie, and PostgreSQL's own check (kill(pid, 0)) then refuses to start ("lock file already exists").
        With no live postmaster and nothing left running in the directory, the lock file is stale."""
        path = os.path.join(self.data_dir, "postmaster.pid")
        if not os.path.exists(path) or self.postmaster_pid() is not None or self.leftover_pids():
            return
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        # Lines: pid, data dir, start time, port, first socket directory, ... (PostgreSQL's miscadmin.h)
        if len(lines) >= 5 and lines[3].strip().isdecimal() and lines[4].strip():
            socket_lock = os.path.join(lines[4].strip(), f".s.PGSQL.{lines[3].strip()}.lock")
            try:
                with open(socket_lock) as f:
                    if f.readline().strip() == lines[0].strip():  # held by the same dead postmaster
                        os.unlink(socket_lock)
            except OSError:
                pass
        os.unlink(path)

    def promote(self, timeout: float) -> None:
        self.run("pg_ctl", "promote", "-D", self.data_dir, "-w", "-t", str(int(max(1, timeout))),
                 timeout=timeout + 5)

    def reload(self) -> None:
        self.run("pg_ctl", "reload", "-D", self.data_dir, timeout=15)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid from postmaster.pid, or None when none runs."""
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and _is_postgres(pid) else None


def _is_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() in ("postgres", "postmaster")
    except OSError:
        return True  # no /proc: trust the pid file
