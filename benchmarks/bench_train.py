"""Training throughput and checkpoint I/O of the Ray Train loop (issue 4's measured figures).

1. ``scaling``: samples/s of the real training loop (:func:`pipeline.train.training.run_training`) with
   1 worker x 2 torch threads vs 2 DDP workers x 1 thread each, on a 2-CPU local Ray instance, at the same
   global batch (8 = 1 x 8 = 2 x 4). The decoded pairs are materialized first in both, so decoding is off the
   critical path; the first epoch of each stage (warm-up) is left out. The two set-ups alternate ``--rounds``
   times and medians are compared: the ratio (2 x 1) / (1 x 2) is the DDP overhead.
2. ``checkpoint``: save and restore time of one training checkpoint (model.safetensors + optimizer.pt +
   state.json + config.yaml) to a real S3 API server (moto, in a child process): serialising it, uploading it
   the way Ray Train does (``pyarrow.fs.copy_files`` to the run's storage filesystem), and restoring it
   (``Checkpoint.to_directory`` then loading), through both filesystems one can hand Ray Train: the pipeline's
   s3fs wrapped in ``PyFileSystem(FSSpecHandler)`` (what :func:`pipeline.train.training.storage_for_ray` uses) and
   pyarrow's native ``S3FileSystem``.
3. ``gpu`` (only where CUDA exists): samples/s at crop 480, batch 8, AMP off vs on.

Training data: the 20 MFI-WHU pairs, read in place from ``../shared/datasets/MFI-WHU`` (MIT; JPEG RGB,
~500-900 px).

Run:
    .venv/bin/python benchmarks/bench_train.py --parts scaling,checkpoint --crop 192 --epochs 3 --crops 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MFI_WHU = REPO.parent / "shared" / "datasets" / "MFI-WHU"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a child process (its CPU is not charged here); returns (process, endpoint)."""
    port = _free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer; "
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}); s.start(); time.sleep(10**6)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, **S3_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def write_manifest(folder: Path, pairs: int) -> Path:
    """A manifest of the first ``pairs`` MFI-WHU pairs, pointing at the shared files (nothing is copied)."""
    path = folder / "manifest.csv"
    rows = ["pair_id,uri_a,uri_b,task"]
    for i in range(1, pairs + 1):
        rows.append(f"mfiwhu_{i},{MFI_WHU}/source1/{i}.jpg,{MFI_WHU}/source2/{i}.jpg,mff")
    path.write_text("\n".join(rows) + "\n")
    return path


def bench_scaling(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import ray

    from pipeline.config.train_config import TrainJobConfig
    from pipeline.train.training import run_training

    manifest = write_manifest(workdir, args.pairs)
    ray.init(
        address="local", num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False
    )
    results = []
    try:
        # Alternate the two set-ups, so that a change in machine load hits both alike.
        for run, (workers, threads) in enumerate(((1, 2), (2, 1)) * args.rounds):
            config = TrainJobConfig.model_validate(
                {
                    "model": {"task": "mff"},
                    "data": {"input": str(manifest), "materialize": "always", "crops_per_pair": args.crops},
                    "train": {
                        "num_workers": workers,
                        "cpus_per_worker": 2 / workers,
                        "torch_threads": threads,
                        "batch_size": args.global_batch // workers,
                        "crop_size": args.crop,
                        "epochs_stage1": args.epochs,
                        "epochs_stage2": args.epochs,
                        "max_failures": 0,
                    },
                    "storage": {"path": str(workdir / "runs"), "name": f"run{run}-w{workers}x{threads}"},
                }
            )
            summary = run_training(config)
            load = os.getloadavg()[0]
            for stage in (1, 2):
                rows = [r for r in summary.history if r["stage"] == stage][1:]  # drop the warm-up epoch
                rate = sum(r["samples"] for r in rows) / sum(r["seconds"] for r in rows)
                results.append(
                    {"workers": workers, "threads": threads, "stage": stage, "samples_per_s": rate, "load": load}
                )
                print(
                    f"  {workers} worker(s) x {threads} thread(s), stage {stage}: {rate:.2f} samples/s "
                    f"(load average {load:.1f})",
                    flush=True,
                )
    finally:
        ray.shutdown()
    for stage in (1, 2):
        one, two = (
            statistics.median(r["samples_per_s"] for r in results if r["stage"] == stage and r["workers"] == w)
            for w in (1, 2)
        )
        print(f"  stage {stage}: medians {one:.2f} (1 x 2) vs {two:.2f} (2 x 1) samples/s, ratio {two / one:.3f}")
    return results


def _checkpoint_state() -> tuple[Any, Any, Any, Any]:
    """A reference-size model with Adam state after one step, a state and a config: what a checkpoint holds."""
    import torch

    from maugif_core import build_model
    from maugif_core.training import make_optimizer, train_step
    from pipeline.config.train_config import TrainJobConfig
    from pipeline.train.training import TrainState

    model = build_model("mff")
    model.set_stage(2)
    optimizer = make_optimizer(model)
    train_step(model, optimizer, torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), 2)
    config = TrainJobConfig.model_validate({"data": {"input": "x"}})
    history = [{"stage": 1, "epoch": e, "loss": 1.0} for e in range(100)]
    return model, optimizer, TrainState(2, 1, history), config


def bench_checkpoint(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import boto3
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from pipeline.config.io_config import StorageConfig
    from pipeline.io.storage import get_filesystem
    from pipeline.train.training import _load_checkpoint_dir, _save_checkpoint_dir

    proc, endpoint = start_s3()
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    results = []
    model, optimizer, state, config = _checkpoint_state()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        fs, _ = get_filesystem("s3://bench/x", StorageConfig())
        filesystems = {
            "s3fs via FSSpecHandler": pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
            "pyarrow S3FileSystem": pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1"),
        }
        for label, filesystem in filesystems.items():
            save, upload, restore = [], [], []
            for i in range(args.repeats):
                local = workdir / f"ckpt-{i}"
                local.mkdir()
                started = time.perf_counter()
                _save_checkpoint_dir(str(local), model, optimizer, None, state, config)
                saved = time.perf_counter()
                size = sum(p.stat().st_size for p in local.iterdir())
                target = f"bench/{label.split()[0]}/checkpoint_{i:04d}"
                pafs.copy_files(str(local), target, destination_filesystem=filesystem)
                uploaded = time.perf_counter()
                restored_dir = Checkpoint(path=target, filesystem=filesystem).to_directory(str(workdir / f"r-{i}"))
                _load_checkpoint_dir(restored_dir)
                done = time.perf_counter()
                save.append(saved - started)
                upload.append(uploaded - saved)
                restore.append(done - uploaded)
                shutil.rmtree(local)
                shutil.rmtree(restored_dir)
            row = {
                "filesystem": label,
                "bytes": size,
                "serialise_ms": 1e3 * statistics.median(save),
                "upload_ms": 1e3 * statistics.median(upload),
                "restore_ms": 1e3 * statistics.median(restore),
                "repeats": args.repeats,
            }
            results.append(row)
            print(
                f"  {label}: {size / 1024:.0f} KiB; serialise {row['serialise_ms']:.1f} ms, "
                f"upload {row['upload_ms']:.1f} ms, download + load {row['restore_ms']:.1f} ms "
                f"(medians of {args.repeats})",
                flush=True,
            )
    finally:
        proc.kill()
        proc.wait()
    return results


def bench_gpu(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import ray
    import torch

    from pipeline.config.train_config import TrainJobConfig
    from pipeline.train.training import run_training

    if not torch.cuda.is_available():
        print("  no CUDA: skipped")
        return []
    manifest = write_manifest(workdir, args.pairs)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    results = []
    try:
        for amp in ("off", "auto"):
            config = TrainJobConfig.model_validate(
                {
                    "model": {"task": "mff"},
                    "data": {"input": str(manifest), "materialize": "always", "crops_per_pair": args.crops},
                    "train": {
                        "num_workers": 1,
                        "use_gpu": True,
                        "batch_size": 8,
                        "crop_size": 480,
                        "epochs_stage1": args.epochs,
                        "epochs_stage2": args.epochs,
                        "amp": amp,
                    },
                    "storage": {"path": str(workdir / "gpu"), "name": f"amp-{amp}"},
                }
            )
            summary = run_training(config)
            for stage in (1, 2):
                rows = [r for r in summary.history if r["stage"] == stage][1:]
                rate = sum(r["samples"] for r in rows) / sum(r["seconds"] for r in rows)
                results.append({"amp": amp, "stage": stage, "samples_per_s": rate})
                print(f"  amp={amp}, stage {stage}: {rate:.1f} samples/s", flush=True)
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="scaling,checkpoint", help="comma list of scaling, checkpoint, gpu")
    parser.add_argument("--pairs", type=int, default=20, help="MFI-WHU pairs to train on")
    parser.add_argument("--crops", type=int, default=2, help="crops per pair per epoch")
    parser.add_argument("--crop", type=int, default=128, help="crop size (scaling part)")
    parser.add_argument("--global-batch", type=int, default=8, help="samples per step over all workers")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage (the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=20, help="checkpoint save/restore repetitions")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two scaling set-ups")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print("command: " + " ".join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part, fn in (("scaling", bench_scaling), ("checkpoint", bench_checkpoint), ("gpu", bench_gpu)):
            if part in args.parts.split(","):
                print(f"[{part}]", flush=True)
                results[part] = fn(args, Path(tmp))
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
