"""The real app through `flwr run` on a Ray cluster that already exists (two nodes on this host)."""

from __future__ import annotations

import json

import pytest

from fedcredit.deploy.localrun import LocalFlower
from fedcredit.deploy.raycluster import LocalRayCluster, actor_nodes

pytestmark = pytest.mark.e2e


def test_simulation_on_an_existing_two_node_ray_cluster_runs_client_apps_on_both_nodes(tmp_path):
    out = tmp_path / "out"
    with LocalRayCluster(num_cpus=1) as cluster, LocalFlower(tmp_path / "flwr") as flower:
        # What a user does: the SuperLink's environment names the cluster; Flower passes no init_args.
        flower.env["RAY_ADDRESS"] = cluster.address
        result = flower.run(
            {
                "num-server-rounds": 1,
                "partitioning": "iid",
                "local-epochs": 1,
                "personalize.epochs": 0,
                "output-dir": str(out),
            },
            "num-supernodes=4 client-resources-num-cpus=1",
            timeout=600,
        )
        assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
        nodes, actors = actor_nodes(cluster.address)
    assert cluster.pgids and not cluster.running()  # its own process groups are gone (never `ray stop`)
    assert len(nodes) == 2
    # One CPU per node and one per ClientApp: Flower's pool holds one actor per node, and both served banks.
    assert sorted(set(actors["ClientAppActor"])) == sorted(nodes), actors
    history = json.loads((next(out.iterdir()) / "history.json").read_text())
    assert history["status"] == "completed" and len(history["banks"]) == 4
    assert "fedcredit round 1/1: banks train 4/4 ok, evaluate 4/4 ok" in result.logs
    print(f"two-node Ray cluster: flwr run {result.seconds:.1f} s")
