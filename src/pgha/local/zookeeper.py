"""A standalone ZooKeeper on loopback for ``pgha up --dcs zookeeper``, from Debian's ``zookeeper`` jars.

We run ``org.apache.zookeeper.server.quorum.QuorumPeerMain`` with our own zoo.cfg in the cluster's directory, never
Debian's service (which would take port 2181). The client port is the one etcd would use (``Layout.etcd_port``):
a local cluster runs one DCS or the other. tickTime is 500 ms, so sessions of 1 s to 60 s can be negotiated
(pgha's default ttl is 4 s).

Rules: only 127.0.0.1; the admin server (an HTTP port) is off; every wait is bounded; the process is ended by the
PID we started, never by name.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Any

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"  # its manifest's Class-Path names the jars it needs
LOG4J_JARS = ("/usr/share/java/log4j-1.2.jar", "/usr/share/java/slf4j-log4j12.jar")
TICK_MS = 500
ZOOKEEPER_INSTALL_HINT = ("ZooKeeper is not installed: run `apt-get install -y zookeeperd` (Debian; its jars and "
                          "a Java runtime) and try again")
_LOG4J = """log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}@%L - %m%n
"""


class ZooKeeperMissing(Exception):
    pass


def java_binary() -> str:
    java = shutil.which("java")
    if java is None or not os.path.isfile(ZOOKEEPER_JAR):
        raise ZooKeeperMissing(ZOOKEEPER_INSTALL_HINT)
    return java


def write_config(conf_dir: str, data_dir: str, client_port: int, extra: str = "") -> str:
    """zoo.cfg and log4j.properties in ``conf_dir``; returns the zoo.cfg path."""
    os.makedirs(conf_dir, mode=0o700, exist_ok=True)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(conf_dir, "log4j.properties"), "w") as f:
        f.write(_LOG4J)
    path = os.path.join(conf_dir, "zoo.cfg")
    with open(path, "w") as f:
        f.write(f"tickTime={TICK_MS}\ndataDir={data_dir}\nclientPort={client_port}\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\nmaxSessionTimeout=60000\n4lw.commands.whitelist=srvr,ruok\n"
                "maxClientCnxns=0\n" + extra)
    return path


def zookeeper_command(conf_dir: str, zoo_cfg: str) -> list[str]:
    logging = [jar for jar in LOG4J_JARS if os.path.isfile(jar)]
    classpath = ":".join([conf_dir, ZOOKEEPER_JAR, *(logging if len(logging) == len(LOG4J_JARS) else [])])
    return [java_binary(), "-Xmx256m", "-XX:+UseSerialGC", "-Dzookeeper.admin.enableServer=false",
            f"-Dlog4j.configuration=file:{os.path.join(conf_dir, 'log4j.properties')}", "-cp", classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", zoo_cfg]


def start_zookeeper(directory: str, client_port: int, log_path: str, detach: bool = True) -> subprocess.Popen:
    """ZooKeeper with its configuration and data under ``directory``."""
    command = zookeeper_command(directory, write_config(directory, os.path.join(directory, "data"), client_port))
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=detach)


def server_mode(client_port: int, timeout: float = 0.5) -> str:
    """"standalone", "leader", "follower", or "" when it does not answer the ``srvr`` command."""
    try:
        with socket.create_connection(("127.0.0.1", client_port), timeout=timeout) as s:
            s.sendall(b"srvr")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError:
        return ""
    for line in answer.decode(errors="replace").splitlines():
        if line.startswith("Mode: "):
            return line[len("Mode: "):].strip()
    return ""


def wait_healthy(client_port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"ZooKeeper exited with code {proc.returncode} while starting")
        if server_mode(client_port) in ("standalone", "leader", "follower"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"ZooKeeper on 127.0.0.1:{client_port} did not serve within {timeout:.0f}s")


def use_zookeeper(config: dict[str, Any], client_port: int) -> dict[str, Any]:
    """A node or ctl configuration (layout.node_config / ctl_config) with its DCS section made ``zookeeper``."""
    out = {k: v for k, v in config.items() if k not in ("etcd3", "etcd")}
    out["zookeeper"] = {"hosts": [f"127.0.0.1:{client_port}"]}
    return out


def local_dcs(client_port: int, scope: str, ttl: int = 10) -> Any:
    """What ``LocalCluster.dcs()`` returns on ZooKeeper: the cluster as an observer reads it."""
    from pgha.dcs.zookeeper import ZooKeeperDcs
    return ZooKeeperDcs([("127.0.0.1", client_port)], namespace="/service", scope=scope, ttl=ttl)
