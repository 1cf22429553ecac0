"""``jobs/train.py`` end to end: config errors before Ray starts, S3 checkpoints, resume by re-running it.

The job runs as a subprocess, as users run it. Runs that train attach to the session's Ray instance
(``--address``) instead of starting their own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB = REPO_ROOT / "jobs" / "train.py"
SAMPLES = REPO_ROOT / "samples" / "mff"

# Small, fast training on the bundled sample pairs (real MFI-WHU crops), 2 workers sharing 1 CPU.
SMALL = [
    "train.crop_size=32",
    "train.batch_size=2",
    "train.cpus_per_worker=0.5",
    "train.max_failures=0",
]


def run_job(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    return proc, time.perf_counter() - started


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture
def minimal_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "no_input.yaml"
    path.write_text("model:\n  task: mff\ntrain:\n  num_workers: 2\n")
    return path


def run_job_checked(*args: str) -> tuple[subprocess.CompletedProcess, float, set[str]]:
    """Run the job with ``-X importtime``: returns the result, its CPU seconds and the modules it imported."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(JOB), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert wall < 5.0, f"{wall:.2f} s wall: something slow (Ray?) ran before the config was validated"
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    message = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, message), cpu, modules


@pytest.mark.parametrize(
    ("case", "field"),
    [
        (["--input", str(SAMPLES), "--set", "train.foo=1"], "train.foo"),
        (["--input", str(SAMPLES), "--set", "train.lr=-0.001"], "train.lr"),
        (["--input", str(SAMPLES), "--set", "train.num_workers=0"], "train.num_workers"),
        (["--input", "/nonexistent/pairs.csv"], "data.input"),
        ("MINIMAL_YAML", "data.input"),
        (["--input", str(SAMPLES), "--set", "storage.path"], "storage.path"),
    ],
    ids=["unknown-key", "negative-lr", "zero-workers", "input-not-found", "input-missing", "malformed-set"],
)
def test_bad_config_fails_fast_naming_the_field(case, field, minimal_yaml):
    args = ["--config", str(minimal_yaml)] if case == "MINIMAL_YAML" else case
    proc, cpu_seconds, modules = run_job_checked(*args)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr, proc.stderr
    assert proc.stdout == ""
    # Under a second of work, and nothing heavy loaded: the config fails before Ray (or torch) is imported.
    # CPU time, not wall time, so that a busy CI machine does not make the check flaky.
    assert cpu_seconds < 1.0, f"{cpu_seconds:.2f} CPU s"
    assert not {"ray", "torch"} & modules


def test_unknown_key_in_yaml_file_is_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(f"data:\n  input: {SAMPLES}\ntrian:\n  lr: 0.1\n")
    proc, cpu_seconds, modules = run_job_checked("--config", str(path))
    assert proc.returncode == 2 and "trian: unknown key; did you mean 'train'?" in proc.stderr, proc.stderr
    assert cpu_seconds < 1.0 and "ray" not in modules


def _session_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _s3_json(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.mark.timeout(400)
def test_job_checkpoints_to_s3_and_rerun_resumes_at_stage_and_epoch(ray_session, s3_server, s3_bucket):
    import boto3
    import torch

    from maugif_core import CheckpointError
    from pipeline.train.training import load_model

    s3 = boto3.client("s3", endpoint_url=s3_server)
    output = f"s3://{s3_bucket}/jobs"
    common = ["--input", str(SAMPLES), "--task", "mff", "--output", output, "--address", _session_address()]

    first, _ = run_job(*common, *sets(*SMALL, "train.epochs_stage1=1", "train.epochs_stage2=0"))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"final model      {output}/final/model.safetensors" in first.stdout
    ckpt = "jobs/maugif-train/checkpoint_s1_e0001/"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="jobs/")["Contents"]}
    assert {ckpt + f for f in ("model.safetensors", "optimizer.pt", "state.json", "config.yaml")} <= keys
    assert {
        "jobs/maugif-train/metrics.csv",
        "jobs/maugif-train/config.yaml",
        "jobs/final/model.safetensors",
    } <= keys
    resolved = s3.get_object(Bucket=s3_bucket, Key=ckpt + "config.yaml")["Body"].read().decode()
    assert "epochs_stage1: 1" in resolved and f"path: {output}" in resolved and "task: mff" in resolved
    state = _s3_json(s3, s3_bucket, ckpt + "state.json")
    assert (state["stage"], state["epoch"]) == (1, 1)
    optimizer = torch.load(
        io.BytesIO(s3.get_object(Bucket=s3_bucket, Key=ckpt + "optimizer.pt")["Body"].read()),
        weights_only=True,
    )
    assert optimizer["optimizer"]["state"], "Adam moments are saved"
    after_stage1 = load_model(f"s3://{s3_bucket}/{ckpt}")

    # The same command with a longer schedule continues mid stage 1 (optimizer restored), then runs stage 2.
    second, _ = run_job(*common, *sets(*SMALL, "train.epochs_stage1=2", "train.epochs_stage2=1"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    history = _s3_json(s3, s3_bucket, "jobs/final/state.json")["history"]
    assert [(r["stage"], r["epoch"]) for r in history] == [(1, 1), (1, 2), (2, 1)]
    assert [r["resumed_at_epoch"] for r in history] == [0, 1, 1]
    assert "checkpoint_s2_e0001" in second.stdout
    csv = s3.get_object(Bucket=s3_bucket, Key="jobs/maugif-train/metrics.csv")["Body"].read().decode()
    assert len(csv.strip().splitlines()) == 1 + 3
    final = load_model(f"{output}/final", expect_task="mff")
    with pytest.raises(CheckpointError, match="expected 'vif'"):
        load_model(f"{output}/final", expect_task="vif")
    moved = [
        not torch.equal(p, q)
        for (_, p), (_, q) in zip(final.named_parameters(), after_stage1.named_parameters(), strict=True)
    ]
    assert any(moved)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rerun_after_driver_crash_continues_where_it_stopped(ray_session, s3_server, s3_bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    output = f"s3://{s3_bucket}/crash"
    args = [
        str(JOB),
        "--input",
        str(SAMPLES),
        "--task",
        "mff",
        "--output",
        output,
        "--address",
        _session_address(),
        *sets(*SMALL, "train.epochs_stage1=2", "train.epochs_stage2=3", "data.crops_per_pair=4"),
    ]
    driver = subprocess.Popen(
        [sys.executable, *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 300
        snapshot = "crash/maugif-train/checkpoint_manager_snapshot.json"
        while time.time() < deadline and driver.poll() is None:
            try:  # wait until Ray Train has committed the first checkpoint (not merely uploaded it)
                if b"checkpoint_s1_e0001" in s3.get_object(Bucket=s3_bucket, Key=snapshot)["Body"].read():
                    break
            except s3.exceptions.NoSuchKey:
                pass
            time.sleep(0.2)
        assert driver.poll() is None, "the first run ended before it could be killed"
        os.kill(driver.pid, 9)  # a driver crash: no cleanup, no final export
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()

    rerun, _ = run_job(*args[1:], timeout=500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    history = _s3_json(s3, s3_bucket, "crash/final/state.json")["history"]
    assert [(r["stage"], r["epoch"]) for r in history] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    resumed = {r["resumed_at_epoch"] for r in history[1:]}
    assert resumed and min(resumed) >= 1 and max(resumed) < 5, history
