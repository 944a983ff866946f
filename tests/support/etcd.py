"""A real single-member etcd for tests, on free 127.0.0.1 ports in a temporary directory.

Rules
1. Only 127.0.0.1. Only the process this object started is ever signalled, by its PID.
2. Every wait is bounded: start-up polls /health for at most ``start_timeout`` s; stop() waits at most
   ``stop_timeout`` s after SIGTERM, then SIGKILLs.
3. No etcd binary is a failure with a clear message (``EtcdMissing``), never a skip: CI installs etcd.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests


class EtcdMissing(RuntimeError):
    pass


http = requests.Session()  # for tests talking to etcd directly; ignores proxy settings from the environment
http.trust_env = False


def etcd_binary() -> str:
    for candidate in ("/usr/bin/etcd", shutil.which("etcd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EtcdMissing("etcd binary not found (looked at /usr/bin/etcd and PATH); install etcd "
                      "(Debian: apt-get install etcd-server) to run these tests")


@dataclass(frozen=True)
class TlsFiles:
    cacert: str
    cert: str  # server certificate (also used as client certificate: extendedKeyUsage allows both)
    key: str


def make_test_certs(directory: Path) -> TlsFiles:
    """A throw-away CA and one certificate for IP 127.0.0.1, made with the openssl command (EC P-256)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=pgha-ca"],
                ["req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "node.crt", "-days", "2", "-extfile", "ext.cnf"]):
        subprocess.run(["openssl", *cmd], cwd=d, check=True, capture_output=True, timeout=30)
    return TlsFiles(cacert=str(d / "ca.crt"), cert=str(d / "node.crt"), key=str(d / "node.key"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """``with EtcdServer() as etcd: ... etcd.endpoint`` -- a running single-member etcd until the block ends."""

    def __init__(self, name: str = "pgha-test", extra_args: list[str] | None = None,
                 start_timeout: float = 20.0, stop_timeout: float = 10.0, tls: TlsFiles | None = None):
        self.name, self.tls = name, tls
        self.extra_args = list(extra_args or [])
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.binary = etcd_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="pgha-etcd-"))
        self.port, self.peer_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    def _command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [self.binary, "--name", self.name, "--data-dir", str(self.dir / "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}", "--logger", "zap", *self._tls_args(), *self.extra_args]

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        return ["--cert-file", self.tls.cert, "--key-file", self.tls.key, "--trusted-ca-file", self.tls.cacert,
                "--client-cert-auth"]

    def start(self) -> "EtcdServer":
        """Start (or restart, same ports and data) and wait until /health answers."""
        if self.running:
            return self
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode} at start-up:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"etcd did not answer /health within {self.start_timeout}s:\n{self.log_tail()}")

    def healthy(self, timeout: float = 0.5) -> bool:
        try:
            tls = {"verify": self.tls.cacert, "cert": (self.tls.cert, self.tls.key)} if self.tls else {}
            r = http.get(f"{self.url}/health", timeout=timeout, **tls)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (requests.RequestException, ValueError):
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` s."""
        if not self.running:
            return
        assert self.proc is not None
        self._signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
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
        """Stop and remove the temporary directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        for attempt in range(3):  # another process may take a free port between free_port() and etcd's bind
            try:
                return self.start()
            except RuntimeError as e:
                if "address already in use" not in str(e) or attempt == 2:
                    self.close()
                    raise
                self.port, self.peer_port = free_port(), free_port()
                shutil.rmtree(self.dir / "data", ignore_errors=True)
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        self.close()
