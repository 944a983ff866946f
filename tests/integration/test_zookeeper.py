"""The integration suite's core on ZooKeeper: bootstrap, replication, switchover, failover and rejoin with a real
ZooKeeper (Debian's zookeeperd jars, started by `LocalCluster` on 127.0.0.1) instead of etcd.

The tests are the etcd suite's own, imported here; the `cluster` fixture (conftest.py) reads ``DCS`` below.
"""

from __future__ import annotations

import pytest

from .test_cluster import test_a_row_written_on_the_leader_appears_on_both_replicas  # noqa: F401
from .test_cluster import test_one_leader_and_two_streaming_replicas as _one_leader
from .test_failover import test_a_node_death_fails_over_and_the_old_leader_rejoins  # noqa: F401
from .test_failover import test_c_graceful_stop_hands_over_without_loss  # noqa: F401
from .test_switchover import test_switchover_to_a_named_candidate  # noqa: F401
from .test_cluster import snapshot

pytestmark = pytest.mark.integration

DCS = "zookeeper"


def test_bootstrap_on_zookeeper(cluster):
    view = snapshot(cluster)
    assert view.leader is not None and view.initialize and view.config is not None
    assert cluster.dcs_kind == "zookeeper"
    _one_leader(cluster)
