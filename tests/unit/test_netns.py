"""`pgha up --netns` without creating anything: the topology's names and addresses, what the state file keeps,
which network a cluster gets, the node configs and HAProxy config it leads to, the CLI's entry into the hub, and
the verifier's partition operation against a stand-in topology (what is cut, that it is always healed)."""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from pgha.local import netns
from pgha.local.layout import Layout, ctl_config, new_secrets, node_config
from pgha.local.netns import Loopback, NetnsError, Topology, network_for, subnet_for
from pgha.router.haproxy_config import RouterPorts, Server, render
from pgha.verify.faults import NETNS_MISSING, FaultContext, run_fault
from pgha.verify.partition import NetnsTarget, heal_pending


def test_one_private_subnet_per_base_port():
    assert subnet_for(5440) == "10.21.64"
    assert subnet_for(22400) == "10.87.128"
    assert len({subnet_for(p) for p in range(1024, 65001, 10)}) == len(range(1024, 65001, 10))
    with pytest.raises(NetnsError, match="out of range"):
        subnet_for(70000)


def test_names_and_addresses():
    t = Topology.for_cluster(5440, 3)
    assert t.namespaces == ["pgha-5440-hub", "pgha-5440-dcs", "pgha-5440-n0", "pgha-5440-n1", "pgha-5440-n2"]
    assert (t.hub_host, t.dcs_host, t.node_host(0), t.node_host(2)) == ("10.21.64.1", "10.21.64.2", "10.21.64.10",
                                                                        "10.21.64.12")
    assert t.where("dcs") == ("pgha-5440-dcs", "10.21.64.2")
    assert t.where("node1") == ("pgha-5440-n1", "10.21.64.11")
    for bad in ("node3", "nodeX", "hub", ""):
        with pytest.raises(NetnsError, match="is not a member"):
            t.where(bad)
    assert t.node_prefix(1) == ["ip", "netns", "exec", "pgha-5440-n1"]
    assert t.dcs_prefix() == ["ip", "netns", "exec", "pgha-5440-dcs"]
    assert t.client_net == "10.21.64.0/24"


def test_the_state_record_round_trips():
    t = Topology.for_cluster(30010, 2)
    record = json.loads(json.dumps(t.record()))
    assert record["namespaces"] == t.namespaces
    assert Topology.from_record(record, 2) == t


def test_remove_refuses_a_namespace_that_is_not_the_clusters():
    t = Topology.for_cluster(30010, 2)
    with pytest.raises(NetnsError, match="refusing to delete pgha-30020-hub"):
        t.remove(["pgha-30020-hub"])
    with pytest.raises(NetnsError, match="refusing to delete default"):
        t.remove(["default"])


def test_namespaces_of_another_cluster_are_neither_used_nor_removed(monkeypatch):
    t = Topology.for_cluster(30010, 1)
    there = {"pgha-30010-hub": "7:1", "pgha-30010-dcs": "7:2", "pgha-30010-n0": "7:9"}  # n0: not the one made
    made = {"pgha-30010-hub": "7:1", "pgha-30010-dcs": "7:2", "pgha-30010-n0": "7:3"}
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(netns, "exists", lambda ns: ns in there)
    monkeypatch.setattr(netns, "identity", lambda ns: there.get(ns))
    monkeypatch.setattr(netns, "ip", lambda *args, check=True: calls.append(args))
    assert t.foreign(made) == ["pgha-30010-n0"]
    assert t.foreign({}) == t.namespaces  # none recorded: none is ours
    assert t.identities() == there
    with pytest.raises(NetnsError, match="left pgha-30010-n0 in place: not made by this cluster"):
        t.remove(t.namespaces, made)
    assert calls == [("netns", "delete", "pgha-30010-hub"), ("netns", "delete", "pgha-30010-dcs")]


def test_which_network_a_cluster_gets():
    assert isinstance(network_for(5440, 3, {}, False), Loopback)
    made = network_for(5440, 3, {}, True)
    assert isinstance(made, Topology) and made.cid == "5440"
    recorded = {"netns": Topology.for_cluster(6000, 3).record()}
    assert network_for(5440, 3, recorded, False).cid == "6000"  # the directory remembers its namespaces
    with pytest.raises(NetnsError, match="made without --netns"):
        network_for(5440, 3, {"nodes": 3, "base_port": 5440}, True)


def test_node_configs_use_the_namespace_addresses():
    layout = Layout("/tmp/x", 3, 5440)
    t = Topology.for_cluster(5440, 3)
    cfg = node_config(layout, 1, new_secrets(), {"ttl": 4}, net=t)
    assert cfg["postgresql"]["listen"] == cfg["postgresql"]["connect_address"] == "10.21.64.11:5441"
    assert cfg["restapi"]["listen"] == cfg["restapi"]["connect_address"] == "10.21.64.11:5541"
    assert cfg["etcd3"]["hosts"] == ["10.21.64.2:5640"]
    assert "host replication replicator 10.21.64.0/24 scram-sha-256" in cfg["postgresql"]["pg_hba"]
    pw = new_secrets()
    plain = node_config(layout, 1, pw, {"ttl": 4})
    assert plain == node_config(layout, 1, pw, {"ttl": 4}, net=Loopback())
    assert plain["postgresql"]["listen"] == "127.0.0.1:5441" and plain["etcd3"]["hosts"] == ["127.0.0.1:5640"]
    assert "host all all 127.0.0.1/32 scram-sha-256" in plain["postgresql"]["pg_hba"]
    assert ctl_config(layout, dcs_host=t.dcs_host)["etcd3"]["hosts"] == ["10.21.64.2:5640"]


def test_haproxy_connects_through_the_hub_and_listens_there_too():
    servers = [Server("node0", "10.21.64.10", 5440, "10.21.64.10", 5540, namespace="pgha-5440-hub")]
    text = render(servers, RouterPorts(5740, 5741, 5742, also_in=("pgha-5440-hub",)), "/tmp/h.sock")
    lines = [line.strip() for line in text.splitlines()]
    for port in (5740, 5741, 5742):
        assert f"bind 127.0.0.1:{port}" in lines
        assert f"bind 127.0.0.1:{port} namespace pgha-5440-hub" in lines
    assert lines.count("server node0 10.21.64.10:5440 maxconn 100 check port 5540 namespace pgha-5440-hub") == 2
    plain = render([Server("node0", "127.0.0.1", 5440, "127.0.0.1", 5540)], RouterPorts(5740, 5741, 5742), "/s")
    assert "namespace" not in plain


def test_the_cli_enters_the_hub_only_for_a_netns_cluster(tmp_path, monkeypatch):
    config = tmp_path / "pgha.yml"
    config.write_text("scope: x\n")
    assert netns.enter_for_config(str(config)) is None  # no state.json
    (tmp_path / "state.json").write_text(json.dumps({"nodes": 3, "base_port": 5440}))
    assert netns.enter_for_config(str(config)) is None  # a loopback cluster
    (tmp_path / "state.json").write_text(json.dumps({"netns": Topology.for_cluster(64990, 3).record()}))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match="run pgha as root"):
        netns.enter_for_config(str(config))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(NetnsError, match="pgha-64990-hub does not exist: start it with `pgha up --dir"):
        netns.enter_for_config(str(config))


def test_up_without_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match="run pgha as root"):
        Topology.for_cluster(64990, 3).create()


def test_the_refusal_names_the_option():
    assert "needs `pgha up --netns`" in NETNS_MISSING


# --- the verifier's partition operation, on a stand-in topology --------------------------------------------
class FakeTopology:
    def __init__(self, fail_on: str | None = None) -> None:
        self.cuts: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.log: list[str] = []
        self.fail_on = fail_on

    def cut(self, a, b):
        if f"{a}-{b}" == self.fail_on:
            raise NetnsError(f"`ip -n x route replace blackhole` failed: boom ({a}-{b})")
        self.cuts.add((a, b))
        self.log.append(f"cut {a} {b}")

    def join(self, a, b):
        self.cuts.discard((a, b))
        self.log.append(f"join {a} {b}")

    def isolate(self, name):
        self.down.add(name)
        self.log.append(f"isolate {name}")

    def rejoin(self, name):
        self.down.discard(name)
        self.log.append(f"rejoin {name}")


class StandIn(NetnsTarget):
    """A NetnsTarget without a cluster: three nodes, node1 leads, healthy unless a cut is in place."""

    def __init__(self, topology: FakeTopology) -> None:
        self.layout = Layout("/nowhere", 3, 5440)
        self.topology = topology  # type: ignore[assignment]
        self.seen_during: list[bool] = []

    def leader(self):
        return "node1"

    def ttl(self) -> float:
        return 0.1

    def healthy(self) -> bool:
        self.seen_during.append(bool(self.topology.cuts or self.topology.down))
        return not (self.topology.cuts or self.topology.down)


def run(kind_fault: str, topo: FakeTopology):
    target = StandIn(topo)
    ctx = FaultContext(target, random.Random(1), time.monotonic() + 0.5)  # the hold ends at the deadline
    return run_fault(kind_fault, ctx), target


def test_partition_leader_dcs_cuts_holds_and_heals():
    topo = FakeTopology()
    out, target = run("partition-leader-dcs", topo)
    assert out.error == "" and out.injected_at is not None and out.healed_at is not None
    assert topo.log == ["cut node1 dcs", "join node1 dcs"]
    assert "cut node1 off the DCS" in out.note and "ttl + 2" in out.note
    assert target.seen_during == [False]  # health is waited for once healed


def test_partition_leader_replicas_cuts_every_peer():
    topo = FakeTopology()
    out, _ = run("partition-leader-replicas", topo)
    assert out.error == ""
    assert topo.log == ["cut node1 node0", "cut node1 node2", "join node1 node2", "join node1 node0"]
    assert "cut node1 off node0, node2" in out.note


def test_isolate_sets_the_link_down_then_up():
    topo = FakeTopology()
    out, _ = run("isolate-leader", topo)
    assert out.error == "" and topo.log == ["isolate node1", "rejoin node1"] and not topo.down


def test_a_cut_that_fails_half_way_is_undone_and_reported():
    topo = FakeTopology(fail_on="node1-node2")
    out, _ = run("partition-leader-replicas", topo)
    assert "boom (node1-node2)" in out.error and out.healed_at is None
    assert not topo.cuts and topo.log[-1] == "join node1 node0"
    assert heal_pending() == []  # nothing left pending
