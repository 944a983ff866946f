"""Fixtures for real-process tests: a local cluster (etcd + PostgreSQL nodes + agents) on 127.0.0.1.

Every process is started by the code under test and ended by PID (`LocalCluster.down`). Waits poll a condition
under a deadline.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import time
from typing import Callable, TypeVar

import psycopg
import pytest

from pgha.local.cluster import LocalCluster
from pgha.local.layout import Layout

T = TypeVar("T")

# Short timings so "3 x ttl" style checks stay short; still inside pgha's timeout rule.
TEST_TIMING = {"ttl": 5, "loop_wait": 1, "retry_timeout": 1}


def port_block_free(base: int) -> bool:
    ports = [base + i for i in range(5)] + [base + 100 + i for i in range(5)] + [base + 150 + i for i in range(5)]
    # etcd; HAProxy (pgha's P+300..302, tests' own), PgBouncer (`pgha up --pgbouncer`: P+303)
    ports += [base + 200, base + 201] + [base + 300 + i for i in range(10)]
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_base_port() -> int:
    for _ in range(50):
        base = random.randrange(20000, 40000, 10)
        if port_block_free(base):
            return base
    raise RuntimeError("no free block of loopback ports found")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # the condition may fail while the system settles
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})"
                                                                              if last_error else ""))


def make_workdir() -> str:
    # Under /tmp: PostgreSQL runs as an unprivileged account that cannot enter root's home.
    path = tempfile.mkdtemp(prefix="pgha-test-", dir="/tmp")
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def cluster(request):
    # A module may run the shared tests on another DCS: `DCS = "zookeeper"` at its top (test_zookeeper.py), and
    # ask for PgBouncer in front (`pgha up --pgbouncer`): `PGBOUNCER = True` at its top (test_pgbouncer.py).
    yield from local_cluster(getattr(request.module, "DCS", "etcd"), getattr(request.module, "PGBOUNCER", False))


def local_cluster(dcs_kind: str, pgbouncer: bool = False):
    root = make_workdir()
    layout = Layout(os.path.join(root, "c"), 3, free_base_port())
    local = LocalCluster(layout, say=lambda line: None, dcs_kind=dcs_kind, pgbouncer=pgbouncer)
    try:
        local.up(timeout=240, timing=TEST_TIMING)
        yield local
    finally:
        local.down()
        if not os.environ.get("PGHA_KEEP_TEST_DIRS"):  # set it to read the agents' logs after a failure
            shutil.rmtree(root, ignore_errors=True)


def connect(layout: Layout, i: int, **kw) -> psycopg.Connection:
    import yaml
    with open(os.path.join(layout.node_dir(i), "pgha.yml")) as f:
        password = yaml.safe_load(f)["postgresql"]["authentication"]["superuser"]["password"]
    return psycopg.connect(host="127.0.0.1", port=layout.pg_port(i), user="postgres", password=password,
                           dbname="postgres", connect_timeout=3, autocommit=True, **kw)


def api_auth(layout: Layout) -> tuple[str, str]:
    """The REST API credentials `pgha up` generated (restapi.authentication in each node's pgha.yml)."""
    import yaml
    with open(os.path.join(layout.node_dir(0), "pgha.yml")) as f:
        auth = yaml.safe_load(f)["restapi"]["authentication"]
    return auth["username"], auth["password"]
