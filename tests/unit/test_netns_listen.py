"""Rule 6 of src/pgha/local/netns.py: a `pgha up --netns` node's PostgreSQL listens on every address of its own
namespace (a VIP added to its link reaches it), and its own loopback is let in (the agent's probe)."""

from __future__ import annotations

from pgha.local.layout import Layout, new_secrets, node_config
from pgha.local.netns import Topology, listen_everywhere


def test_a_netns_node_listens_everywhere_in_its_namespace_and_is_reached_as_before():
    layout = Layout("/tmp/x", 3, 5440)
    t = Topology.for_cluster(5440, 3)
    cfg = listen_everywhere(node_config(layout, 1, new_secrets(), {"ttl": 4}, net=t), layout.pg_port(1))
    pg = cfg["postgresql"]
    assert pg["listen"] == "0.0.0.0:5441"
    assert pg["connect_address"] == "10.21.64.11:5441"  # what peers, HAProxy and the DCS see: unchanged
    assert cfg["restapi"]["listen"] == "10.21.64.11:5541"
    assert pg["pg_hba"][0] == "local all all peer"
    assert pg["pg_hba"][1] == "host all all 127.0.0.1/32 scram-sha-256"
    assert "host all all 10.21.64.0/24 scram-sha-256" in pg["pg_hba"]
    assert "host replication replicator 10.21.64.0/24 scram-sha-256" in pg["pg_hba"]
    again = listen_everywhere(cfg, layout.pg_port(1))  # idempotent
    assert again["postgresql"]["pg_hba"].count("host all all 127.0.0.1/32 scram-sha-256") == 1
