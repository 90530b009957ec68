"""Ports for the Ray processes we start: picked all at once, so no two components share one
(CI lost a run to `ray start` refusing a node whose object manager and agent got the same port)."""
from __future__ import annotations

import json
import socket

import pytest

from tune.devcluster import HEAD_PORTS, NODE_PORTS, LocalCluster
from tune.nodes import free_port, free_ports


def test_free_ports_are_distinct_and_free():
    ports = free_ports(400)
    assert len(set(ports)) == 400
    with socket.socket() as s:  # free now: one of them can be bound
        s.bind(("127.0.0.1", ports[-1]))
    assert isinstance(free_port(), int) and free_ports(0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        free_ports(-1)


class _Stop(Exception):
    pass


def test_local_cluster_plans_distinct_ports_for_every_node(tmp_path, monkeypatch):
    """The plan written to cluster.json before the first `ray start`: every Ray port of every node
    distinct, and the nodes' worker-port ranges disjoint. `ray start` is replaced by a stop."""
    def no_start(self, node, gcs, log):
        raise _Stop

    monkeypatch.setattr(LocalCluster, "_ray_start", no_start)
    c = LocalCluster(tmp_path / "c", workers=4, mlflow=True)
    with pytest.raises(_Stop):
        c.up()
    plan = json.loads((tmp_path / "c" / "cluster.json").read_text())
    nodes = plan["nodes"]
    assert [n["name"] for n in nodes] == ["head", "worker1", "worker2", "worker3", "worker4"]
    ray_ports = [n["ports"][k] for n in nodes for k in NODE_PORTS + (HEAD_PORTS if n["head"] else ())]
    assert len(ray_ports) == len(HEAD_PORTS) + 5 * len(NODE_PORTS)
    assert len(set(ray_ports)) == len(ray_ports), f"ports shared between components: {sorted(ray_ports)}"
    ranges = sorted((n["ports"]["min_worker"], n["ports"]["max_worker"]) for n in nodes)
    assert all(hi < lo2 for (_, hi), (lo2, _) in zip(ranges, ranges[1:])), ranges
    assert not any(lo <= p <= hi for p in ray_ports for lo, hi in ranges)
