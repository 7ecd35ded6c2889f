"""Two Ray nodes on this machine (``ray.cluster_utils.Cluster``), each with a camera host and an
inference actor: prints one JSON object saying which node each inference actor is on and from which
nodes the frames it analysed came. Run by tests/test_pool_locality_e2e.py in its own process (it
starts a Ray cluster of its own, which a test session sharing one Ray cannot host)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray
import yaml
from ray.cluster_utils import Cluster

from flux_secu.actors.graph import NAMESPACE, Deployment
from flux_secu.actors.supervisor import CAMERA_RESOURCE
from flux_secu.config import parse_config

CAMERAS = 4
PER_HOST = 2
RUN_S = 12.0


def main(config_path: Path) -> None:
    node = {"num_cpus": 1, "resources": {CAMERA_RESOURCE: PER_HOST}, "object_store_memory": 96 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    cluster.add_node(**node)
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    try:
        data = yaml.safe_load(config_path.read_text())
        camera = data["sites"][0]["cameras"][0]
        data["sites"][0]["cameras"] = [dict(camera, id=f"cam-{i}") for i in range(CAMERAS)]
        # One inference actor per node: each node has one CPU and an inference actor takes one.
        data["inference"] = {"actors": 2, "cpus_per_actor": 1, "max_batch": 2}
        data["camera_hosts"] = {"cameras_per_host": PER_HOST}
        config = parse_config(data, config_path.parent)
        dep = Deployment.build(config)
        site = config.sites[0]
        for cam in site.cameras:  # a host takes both slots of a node: one host per node
            dep.add_camera(site.id, cam, options={"resources": {CAMERA_RESOURCE: PER_HOST}})
        time.sleep(RUN_S)
        members = ray.get(dep.pool.actor_handles.remote())
        actors = ray.get([m.stats.remote() for m in members])
        hosts = {h.name: ray.get(h.actor.node.remote()) for h in dep.hosts}
        pool = ray.get(dep.pool.stats.remote())
        dep.stop()
        print(json.dumps({"actors": actors, "hosts": hosts, "pool": pool,
                          "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
