"""A worker node lost in the middle of ``batch_fuse``: ``ray.cluster_utils.Cluster`` in its own subprocess.

The cluster (a CPU-0 head and two 1-CPU worker nodes, real raylets) lives in a subprocess with its own
``RAY_TMPDIR``, so it never meets the test session's Ray instance; whatever it leaves behind is killed by that
marker. As soon as the fusion actor is up (or ``delay_s`` later), the worker node that runs it is removed (its
raylet and workers are killed) while pairs are in flight, a fresh node joins, and the job must still produce every
output exactly once. (Fusion of small pairs is fast: a second later the actor may already be done.) Used by
tests/ops/test_faults.py and benchmarks/bench_ops.py (recovery time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from ops.cluster_config import REPO_ROOT
from testsupport.local_ray import isolated_ray_env, private_ray_tmpdir

__all__ = ["run_node_loss"]

_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    import ray
    from ray.cluster_utils import Cluster
    from pipeline.fuse.batch import run_batch_fuse
    from pipeline.config.fuse_config import FuseJobConfig

    config = FuseJobConfig.model_validate_json(sys.argv[1])
    out, delay_s = Path(config.output.uri), float(sys.argv[2])
    store = 150 * 1024**2
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": store, "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=1, object_store_memory=store) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    result = {}

    def run():
        try:
            result["summary"] = run_batch_fuse(config)
        except BaseException as e:  # reported to the caller
            result["error"] = repr(e)

    def outputs():
        return len(list(out.glob("*.png")))

    def actor_hosts():
        from ray._private.state import state

        return {
            a["Address"]["NodeID"]
            for a in state.actor_table(None).values()
            if "FusionPredictor" in a.get("ActorClassName", "") and a.get("State") == "ALIVE"
        }

    thread = threading.Thread(target=run)
    started = time.monotonic()
    thread.start()
    hosts = set()
    while thread.is_alive() and not hosts:  # the fusion actor is up ...
        hosts = actor_hosts()
        time.sleep(0.1)
    deadline = time.monotonic() + delay_s
    while thread.is_alive() and time.monotonic() < deadline:  # ... and has been fusing for a while
        time.sleep(0.05)
    removed_at = first_after = None
    hosted_actor = False
    at_removal = outputs()
    if thread.is_alive():
        alive = actor_hosts()
        victim = next((w for w in workers if w.node_id in (alive or hosts)), workers[0])
        hosted_actor = victim.node_id in alive  # the actor was still running there when the node went
        cluster.remove_node(victim)
        removed_at = time.monotonic()
        cluster.add_node(num_cpus=1, object_store_memory=store)
        while thread.is_alive() and outputs() <= at_removal:
            time.sleep(0.05)
        first_after = time.monotonic()
    thread.join(600)
    summary = result.get("summary") or {}
    print("RESULT " + json.dumps({
        "removed": removed_at is not None,
        "victim_hosted_fusion_actor": hosted_actor,
        "outputs_at_removal": at_removal,
        "recovery_s": (first_after - removed_at) if removed_at else None,
        "elapsed_s": time.monotonic() - started,
        "error": result.get("error"),
        "ok": summary.get("pairs_ok"),
        "failed": summary.get("pairs_failed"),
    }), flush=True)
    ray.shutdown()
    cluster.shutdown()
    """
)


def run_node_loss(pairs: Path, out: Path, delay_s: float = 0.0, timeout: float = 800) -> dict[str, Any]:
    """Run ``batch_fuse`` over the manifest ``pairs`` into ``out`` and remove a node mid-run: the node that runs
    the fusion actor, ``delay_s`` seconds after that actor came up (see module doc).

    Returns the subprocess's report: ``removed``, ``victim_hosted_fusion_actor``, ``outputs_at_removal``,
    ``recovery_s`` (removal → next output written), ``elapsed_s``, ``error``, ``ok``, ``failed``.
    """
    from pipeline.config.fuse_config import FuseJobConfig

    config = FuseJobConfig(
        input=str(pairs),
        output={"uri": str(out)},
        fusion={"batch_size": 2},
        resources={"rows_per_write": 2, "rows_per_decode": 2},
        failures={"max_fraction": 0.0},
    )
    with private_ray_tmpdir("mgn-") as ray_tmp:
        script = Path(ray_tmp) / "node_loss.py"
        script.write_text(_SCRIPT)
        run = subprocess.run(
            [sys.executable, str(script), config.model_dump_json(), str(delay_s)],
            env=isolated_ray_env(ray_tmp),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"node-loss run reported nothing:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT ") :])
