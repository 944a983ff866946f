"""Shared pytest fixtures."""

from __future__ import annotations

import signal

import pytest

from tests.support.etcd import EtcdMissing, EtcdServer


def pytest_configure(config):
    """A shell that starts the tests in the background (`cmd &` without job control, nohup) makes them ignore
    SIGINT and SIGQUIT, and every process they start inherits that: an operator's ^C to the ctl, or the fencer's
    SIGQUIT to a stand-in postmaster, would then do nothing. The tests send those signals on purpose, so they start
    from the default dispositions however they were launched."""
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def etcd_server():
    """One real etcd for the session; tests keep apart by using their own scope (key prefix)."""
    try:
        server = EtcdServer()
    except EtcdMissing as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        yield server
