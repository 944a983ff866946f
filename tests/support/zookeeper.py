"""A real standalone ZooKeeper for tests, on a free 127.0.0.1 port in a temporary directory.

Debian's ``zookeeper`` package (pulled in by ``zookeeperd``) ships the server jars; we run them with our own
configuration (pgha.local.zookeeper: tickTime 500 ms, so sessions of 1 s to 60 s can be negotiated -- contract
tests use 2-3 s TTLs), never the system service, which would listen on 2181 (we never use that port).

Rules
1. Only 127.0.0.1; the admin server is off. Only the process this object started is ever signalled, by its PID.
2. Every wait is bounded: start-up polls the ``srvr`` command for at most ``start_timeout`` s; stop() waits at most
   ``stop_timeout`` s after SIGTERM, then SIGKILLs.
3. No ZooKeeper jars or no java is a failure with a clear message (``ZooKeeperMissing``), never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from pgha.local.zookeeper import ZooKeeperMissing, java_binary, server_mode, write_config, zookeeper_command
from tests.support.etcd import free_port

__all__ = ["ZooKeeperMissing", "ZooKeeperServer"]


class ZooKeeperServer:
    """``with ZooKeeperServer() as zk: ... zk.hosts`` -- a running standalone ZooKeeper until the block ends."""

    def __init__(self, start_timeout: float = 30.0, stop_timeout: float = 10.0, extra_config: str = ""):
        java_binary()  # ZooKeeperMissing before anything is created
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="pgha-zk-"))
        self.port = free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "zookeeper.log"

    def start(self) -> "ZooKeeperServer":
        """Start (or restart, same port and data) and wait until it serves requests."""
        if self.running:
            return self
        cfg = write_config(str(self.dir), str(self.dir / "data"), self.port, self.extra_config)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(zookeeper_command(str(self.dir), cfg), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode} at start-up:\n{self.log_tail()}")
            if server_mode(self.port) == "standalone":
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"ZooKeeper did not serve within {self.start_timeout}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(self.stop_timeout)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "ZooKeeperServer":
        for attempt in range(3):  # another process may take the free port before ZooKeeper binds it
            try:
                return self.start()
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 2:
                    self.close()
                    raise
                self.port = free_port()
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        self.close()
