"""A single-member etcd on loopback, started from the system's etcd binary (Debian's etcd-server).

Used by ``pgha up`` and by the tests. Rules: only 127.0.0.1, or (``pgha up --netns``) the address of the DCS
namespace pgha created, etcd then started through ``ip netns exec`` (``prefix``); every wait is bounded; the
process is ended by the PID we started, never by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import requests



class EtcdMissing(Exception):
    pass


ETCD_INSTALL_HINT = "etcd is not installed: run `apt-get install -y etcd-server` (Debian) and try again"


def etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if path is None:
        raise EtcdMissing(ETCD_INSTALL_HINT)
    return path


def etcd_command(data_dir: str, client_port: int, peer_port: int, name: str = "pgha",
                 host: str = "127.0.0.1") -> list[str]:
    client = f"http://{host}:{client_port}"
    peer = f"http://{host}:{peer_port}"
    return [etcd_binary(), "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
            "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"]


def start_etcd(data_dir: str, client_port: int, peer_port: int, log_path: str, detach: bool = True,
               host: str = "127.0.0.1", prefix: list[str] | None = None) -> subprocess.Popen:
    """``prefix``: e.g. ``ip netns exec NS``, which execs etcd in place (the PID stays etcd's)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    command = (prefix or []) + etcd_command(data_dir, client_port, peer_port, host=host)
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=detach)


def wait_healthy(client_port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None,
                 host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{host}:{client_port}/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"etcd exited with code {proc.returncode} while starting")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"etcd on {host}:{client_port} did not become healthy within {timeout:.0f}s")
