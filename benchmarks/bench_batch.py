"""Batch-fusion throughput vs a hand-written single-process loop, and per-pair cost at scale (issue 5).

    .venv/bin/python benchmarks/bench_batch.py --pairs 2000 [--size 256] [--scale 20000] [--actors 1]

Both sides do the same work on the same files with the same model: decode both PNGs → ``model.fuse`` → encode PNG →
write. The pipeline figure includes Ray start-up (``ray.init``) and shutdown. Pairs are random crops of the bundled
MFI-WHU samples (real images), written once to a scratch folder. Each pipeline run is its own driver process, so its
driver memory figure is that process's peak RSS (``ru_maxrss``) minus its RSS just before the job starts.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_pairs(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """Write n distinct PNG pairs (crops of the bundled sample pairs) and a manifest; returns the manifest."""
    rng = np.random.default_rng(seed)
    src = sorted((REPO / "samples" / "mff" / "source1").glob("*.png"))
    sources = [(np.asarray(Image.open(p)), np.asarray(Image.open(str(p).replace("source1", "source2")))) for p in src]
    folder.mkdir(parents=True, exist_ok=True)
    unique = min(n, 200)  # 200 distinct files, reused by many pair ids: same decode/encode work per pair
    for i in range(unique):
        a, b = sources[i % len(sources)]
        top = rng.integers(0, a.shape[0] - size + 1)
        left = rng.integers(0, a.shape[1] - size + 1)
        Image.fromarray(a[top : top + size, left : left + size]).save(folder / f"{i:04d}_a.png", compress_level=1)
        Image.fromarray(b[top : top + size, left : left + size]).save(folder / f"{i:04d}_b.png", compress_level=1)
    manifest = folder / f"pairs_{n}.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair_id", "uri_a", "uri_b", "task"])
        for i in range(n):
            j = i % unique
            writer.writerow([f"pair{i:06d}", f"{j:04d}_a.png", f"{j:04d}_b.png", "mff"])
    return manifest


def hand_loop(manifest: Path, out: Path, threads: int) -> float:
    """decode → fuse → encode → write, one pair at a time, in this process; returns pairs/s."""
    import torch

    import maugif_core

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    model = maugif_core.pretrained("mff")
    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    start = time.perf_counter()
    for row in rows:
        a = np.asarray(Image.open(manifest.parent / row["uri_a"]))
        b = np.asarray(Image.open(manifest.parent / row["uri_b"]))
        fused = model.fuse(a, b)
        buf = io.BytesIO()
        Image.fromarray(fused).save(buf, format="PNG")
        tmp = out / f".{row['pair_id']}.png.tmp"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, out / f"{row['pair_id']}.png")
    return len(rows) / (time.perf_counter() - start)


def pipeline_run(
    manifest: Path, out: Path, actors: int, batch_size: int, resources: dict | None = None
) -> tuple[float, dict, float]:
    """The Ray pipeline, ray.init included; returns (pairs/s, summary, driver RSS growth in MB)."""
    import ray

    from pipeline.config.fuse_config import FuseJobConfig
    from pipeline.fuse.batch import run_batch_fuse

    config = FuseJobConfig(
        input=str(manifest),
        task="mff",
        output={"uri": str(out)},
        fusion={"num_actors": actors, "batch_size": batch_size},
        resources=resources or {},
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        summary = run_batch_fuse(config)
    finally:
        ray.shutdown()
    elapsed = time.perf_counter() - start
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    return summary["pairs_ok"] / elapsed, summary, growth


def pipeline_subprocess(
    manifest: Path, out: Path, actors: int, batch_size: int, resources: dict | None = None
) -> tuple[float, dict, float]:
    """:func:`pipeline_run` in a fresh driver process (clean peak-RSS figure); same return value."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--one",
            str(manifest),
            "--out",
            str(out),
            "--actors",
            str(actors),
            "--batch-size",
            str(batch_size),
            "--resources",
            json.dumps(resources or {}),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"pipeline run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    return result["rate"], result["summary"], result["growth_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scale", type=int, default=0, help="Also run the pipeline on this many pairs.")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--resources", default="{}", help='JSON of job "resources" settings, e.g. \'{"rows_per_decode": 64}\''
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one pipeline run on this manifest
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    resources = json.loads(args.resources)
    if args.one:
        rate, summary, growth = pipeline_run(Path(args.one), Path(args.out), args.actors, args.batch_size, resources)
        print("RESULT " + json.dumps({"rate": rate, "summary": summary, "growth_mb": growth}, default=str))
        return
    work = Path(tempfile.mkdtemp(prefix="maugif-bench-"))
    try:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; pairs {args.pairs} of {args.size}x{args.size}")
        results = {}
        if args.scale:
            manifest = make_pairs(work / "in", args.scale, args.size)
            rate, summary, growth = pipeline_subprocess(
                manifest, work / "out_scale", args.actors, args.batch_size, resources
            )
            results["scale"] = (rate, growth)
            print(
                f"pipeline {args.scale} pairs: {rate:.2f} pairs/s, {1000 / rate:.2f} ms/pair, driver +{growth:.0f} MB"
            )
        manifest = make_pairs(work / "in", args.pairs, args.size)
        rate, summary, growth = pipeline_subprocess(
            manifest, work / "out_pipe", args.actors, args.batch_size, resources
        )
        print(
            f"pipeline {args.pairs} pairs: {rate:.2f} pairs/s, {1000 / rate:.2f} ms/pair, driver +{growth:.0f} MB "
            f"(ok {summary['pairs_ok']}, failed {summary['pairs_failed']})"
        )
        loop = hand_loop(manifest, work / "out_loop", args.threads)
        print(f"hand loop {args.pairs} pairs: {loop:.2f} pairs/s, {1000 / loop:.2f} ms/pair")
        print(f"ratio pipeline / loop: {rate / loop:.3f}")
        if args.scale:
            print(f"per-pair cost {args.scale} vs {args.pairs}: {(1 / results['scale'][0]) / (1 / rate):.3f}")
            print(f"driver peak growth {args.scale} vs {args.pairs}: {results['scale'][1] - growth:+.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
