"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.support.etcd import EtcdMissing, EtcdServer


@pytest.fixture(scope="session")
def etcd_server():
    """One real etcd for the session; tests keep apart by using their own scope (key prefix)."""
    try:
        server = EtcdServer()
    except EtcdMissing as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        yield server
