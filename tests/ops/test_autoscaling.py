"""The autoscaling path of ``ray_cluster.yaml`` on one machine: Ray's ``fake_multinode`` provider.

The worker node types of the AWS file (resources, labels, bounds) drive a real autoscaler that starts real raylets
as "nodes". The head has CPU 0, as on AWS, so every task and actor needs an autoscaled node. When
``jobs/batch_fuse.py`` asks for GPU actors (``fusion.num_gpus_per_actor=0.5``) a GPU node type must be launched.
Scheduling only: torch sees no CUDA here and the predictor's device "auto" falls back to the CPU. The fake provider
runs under autoscaler v1, which ignores ``priority`` (see ops/cluster_config.make_fake_multinode_config): that
``gpu_spot`` rather than ``gpu_ondemand`` is launched follows from v1's tie-break by name, not from the priorities.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ops.cluster_config import load_cluster_config, make_fake_multinode_config
from testsupport.local_ray import HeadNode, local_ports, short_temp_dir, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

_NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("NODES " + json.dumps([
    {"id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"], "labels": n.get("Labels", {})}
    for n in ray.nodes()
]))
"""


def _nodes(head: HeadNode) -> list[dict]:
    run = subprocess.run(
        [sys.executable, "-c", _NODES, head.gcs_address], env=head.process_env(), capture_output=True, text=True
    )
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("NODES ")), None)
    assert line, run.stderr[-3000:]
    return json.loads(line[len("NODES ") :])


def _fake_cluster():
    """A fake cluster with the node types of ray_cluster.yaml (CPU-0 head, autoscaled workers)."""
    ports, temp_dir = local_ports(), short_temp_dir("mgf-")
    config = make_fake_multinode_config(
        load_cluster_config(), gcs_address=f"127.0.0.1:{ports.gcs}", cpus_per_node=2, max_workers_per_type=1
    )
    path = Path(temp_dir) / "fake.yaml"
    path.write_text(yaml.safe_dump(config))
    head_cpus = int(config["available_node_types"]["ray.head.default"]["resources"]["CPU"])
    head = HeadNode(
        env={"RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"},
        num_cpus=head_cpus,
        autoscaling_config=str(path),
        dashboard=False,
        ports=ports,
        temp_dir=temp_dir,
    )
    return head, config


def _run_gpu_job(head: HeadNode, pairs: Path, out: Path) -> float:
    started = time.monotonic()
    job = subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "jobs" / "batch_fuse.py"), "--address", head.gcs_address,
            "--input", str(pairs), "--output", str(out),
            "--set", "fusion.num_gpus_per_actor=0.5", "--set", "fusion.num_actors=1",
        ],
        env=head.process_env(), capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-5000:]
    pair_ids = [line.split(",")[0] for line in pairs.read_text().splitlines()[1:]]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(pair_ids)
    return time.monotonic() - started


def _monitor_log(head: HeadNode) -> str:
    logs = sorted(Path(head.temp_dir).glob("**/session_*/logs/monitor.log"))
    assert logs, f"no monitor.log under {head.temp_dir}"
    return logs[0].read_text()


def test_gpu_actors_scale_up_a_gpu_node_type_then_scale_down(crop_pairs, tmp_path):
    head, config = _fake_cluster()
    with head:
        before = _nodes(head)
        assert len(before) == 1 and before[0]["resources"].get("CPU", 0) == 0  # the CPU-0 head, nothing else

        elapsed = _run_gpu_job(head, crop_pairs, tmp_path / "fused")

        nodes = _nodes(head)
        gpu_nodes = [n for n in nodes if n["alive"] and n["resources"].get("GPU", 0) > 0]
        assert gpu_nodes, f"no GPU node was launched: {nodes}"
        # A GPU type with the resources the YAML declares (CPU capped for one host); gpu_spot by v1's name order.
        spot = config["available_node_types"]["gpu_spot"]
        assert all(n["labels"].get("market") == "spot" for n in gpu_nodes), gpu_nodes
        assert gpu_nodes[0]["resources"]["GPU"] == spot["resources"]["GPU"]
        log = _monitor_log(head)
        assert "Adding 1 node(s) of type gpu_spot" in log
        assert "of type gpu_ondemand" not in log
        print(f"batch_fuse with GPU actors on the fake cluster: {elapsed:.1f} s, nodes: {len(nodes)}")

        # Idle nodes go away again after idle_timeout_minutes (1 minute here): the cluster scales back to the head.
        wait_for(
            lambda: [n for n in _nodes(head) if n["alive"] and n["resources"].get("GPU", 0) > 0] == [],
            240,
            interval=10,
            what="the idle GPU node to be terminated",
        )
