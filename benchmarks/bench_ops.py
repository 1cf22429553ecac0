"""Operations timings: ``ray up`` to the first fused pair, and recovery after a node loss.

1. ``up_to_first_pair``: the local-provider variant of ``ray_cluster.yaml`` (testsupport/local_cluster.py: real SSH
   through an ``sshd -i`` ProxyCommand, real rsync and Ray CLI) goes from nothing to ``ray up`` done, then
   ``ray job submit --no-wait … jobs/batch_fuse.py`` with the cluster's token, until the first fused PNG appears
   in the output folder. Reported: ``ray up`` seconds, submit → first pair seconds, and the sum; the job is then
   followed to its end and the cluster is torn down with ``ray down`` (checked gone). Needs root, openssh-server
   and rsync (apt-get installs them when missing).
2. ``node_loss``: ``batch_fuse`` on a ``ray.cluster_utils.Cluster`` (CPU-0 head, two 1-CPU workers); the worker
   running the fusion actor is removed ``--kill-delay`` s after the actor came up, and a fresh node joins.
   Reported: seconds from the removal to the next output written (recovery), total job time, and whether every
   pair was fused exactly once.

Prints one JSON object per measurement and the exact command line. Results are not written anywhere.

Run:
    python benchmarks/bench_ops.py --pairs 96 --size 64 --repeats 1
    python benchmarks/bench_ops.py --only node_loss --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testsupport.local_ray import wait_for  # noqa: E402
from testsupport.node_loss import run_node_loss  # noqa: E402
from testsupport.sample_pairs import write_crop_pairs  # noqa: E402


def bench_up_to_first_pair(manifest: Path, pairs: int) -> dict:
    from testsupport.local_cluster import LocalProviderCluster

    with LocalProviderCluster.create() as cluster:
        out = Path(cluster.ray_tmpdir) / "fused"
        try:
            started = time.monotonic()
            cluster.up()
            up_s = time.monotonic() - started
            submit_at = time.monotonic()
            cluster.job_submit(
                ["python", "jobs/batch_fuse.py", "--input", str(manifest), "--output", str(out)],
                submission_id="bench",
                wait=False,
            )
            wait_for(lambda: any(out.glob("*.png")), 600, interval=0.1, what="the first fused pair")
            first_s = time.monotonic() - submit_at
            wait_for(lambda: len(list(out.glob("*.png"))) >= pairs, 900, interval=0.5, what="all pairs")
            all_s = time.monotonic() - submit_at
        finally:
            down_started = time.monotonic()
            cluster.down()
            down_s = time.monotonic() - down_started
            gone = cluster.is_gone()
    return {
        "measure": "up_to_first_pair",
        "ray_up_s": round(up_s, 1),
        "submit_to_first_pair_s": round(first_s, 1),
        "ray_up_to_first_pair_s": round(up_s + first_s, 1),
        "submit_to_all_pairs_s": round(all_s, 1),
        "pairs": pairs,
        "ray_down_s": round(down_s, 1),
        "cluster_gone_after_down": gone,
    }


def bench_node_loss(manifest: Path, pairs: int, delay_s: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-nodeloss-"))
    try:
        result = run_node_loss(manifest, out, delay_s=delay_s)
        produced = len(list(out.glob("*.png")))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "measure": "node_loss",
        "recovery_s": None if result["recovery_s"] is None else round(result["recovery_s"], 1),
        "job_s": round(result["elapsed_s"], 1),
        "removed_node_ran_fusion_actor": result["victim_hosted_fusion_actor"],
        "outputs_at_removal": result["outputs_at_removal"],
        "all_pairs_once": produced == pairs and result["ok"] == pairs and not result["failed"],
        "error": result["error"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=96, help="Pairs fused per run (crops of the bundled samples).")
    parser.add_argument("--size", type=int, default=64, help="Crop side in pixels.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs per measurement.")
    parser.add_argument(
        "--kill-delay", type=float, default=0.0, help="Seconds after the fusion actor is up until its node is removed."
    )
    parser.add_argument("--only", choices=["up_to_first_pair", "node_loss"], help="Run one measurement only.")
    args = parser.parse_args(argv)
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    data = Path(tempfile.mkdtemp(prefix="bench-ops-"))
    try:
        manifest = write_crop_pairs(data, args.pairs, size=args.size, seed=0)
        for _ in range(args.repeats):
            if args.only in (None, "up_to_first_pair"):
                if os.geteuid() != 0:
                    print(json.dumps({"measure": "up_to_first_pair", "skipped": "needs root (namespaces, sshd)"}))
                else:
                    print(json.dumps(bench_up_to_first_pair(manifest, args.pairs)), flush=True)
            if args.only in (None, "node_loss"):
                print(json.dumps(bench_node_loss(manifest, args.pairs, args.kill_delay)), flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
