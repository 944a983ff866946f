"""Starting HAProxy and the `pgha router` process for a local cluster (`pgha up`), and waiting for their routing.

Rules
1. Processes are started detached (their own session), in the foreground mode of HAProxy (``-db``) so the PID
   recorded is the one to end; the caller records it and ends it by that PID. Nothing is ever killed by name.
2. Every wait is bounded and names what it waited for; a process that exits while waited for is an error that
   shows the end of its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Callable

from pgha.router.haproxy_config import RO, RW
from pgha.router.runtime import HaproxyRuntime, RuntimeApiError


class RouterError(Exception):
    pass


def haproxy_binary() -> str | None:
    """``PGHA_HAPROXY``, else ``haproxy`` on PATH, else /usr/sbin/haproxy (Debian's, not on a user's PATH)."""
    for candidate in (os.environ.get("PGHA_HAPROXY"), shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def check_config(binary: str, config: str) -> None:
    result = subprocess.run([binary, "-c", "-q", "-f", config], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RouterError(f"HAProxy rejects {config}: {(result.stderr or result.stdout).strip()}")


def start_haproxy(binary: str, config: str, log_path: str) -> subprocess.Popen:
    check_config(binary, config)
    with open(log_path, "ab") as log:
        return subprocess.Popen([binary, "-db", "-f", config], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def start_router(ctl_config: str, socket_path: str, log_path: str) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "pgha", "-c", ctl_config, "router", "--socket", socket_path],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until(done: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool],
               log_path: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if not alive():
            raise RouterError(f"exited while waiting for {what}; last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.1)
    raise RouterError(f"timed out after {timeout:.0f}s waiting for {what}; see {log_path}")


def answers(runtime: HaproxyRuntime) -> bool:
    try:
        runtime.command("show info")
        return True
    except RuntimeApiError:
        return False


def routes(runtime: HaproxyRuntime, rw: set[str], ro: set[str]) -> bool:
    """rw sends to exactly ``rw`` and ro to exactly ``ro`` (server names)."""
    try:
        return runtime.up_servers(RW) == rw and runtime.up_servers(RO) == ro
    except RuntimeApiError:
        return False
