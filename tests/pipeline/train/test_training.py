"""Distributed training on Ray Train: DDP equivalence, learning on real pairs, losing a node mid-run.

Checkpoints on S3 and resuming by re-running are tested through the job, in ``tests/jobs/test_train_job.py``.

Training data: the bundled real sample pairs ``samples/mff`` (centre crops of MFI-WHU, MIT licence; see
``samples/README.md``). Ray tests share the session's 2-CPU Ray instance with 2 workers at 0.5 CPU each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.loading import load_job_config
from pipeline.config.train_config import TrainJobConfig
from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "samples" / "mff"


def make_config(storage_path: str, name: str, **train) -> TrainJobConfig:
    """A small, fast training config on the bundled sample pairs."""
    settings = {
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "batch_size": 2,
        "crop_size": 32,
        "epochs_stage1": 1,
        "epochs_stage2": 1,
        "max_failures": 0,
        **train,
    }
    return TrainJobConfig.model_validate(
        {
            "model": {"task": "mff"},
            "data": {"input": str(SAMPLES)},
            "train": settings,
            "storage": {"path": storage_path, "name": name},
        }
    )


def decoded_samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """pair_id -> (luma_a, luma_b) of the sample pairs, decoded as the training pipeline does."""
    from pipeline.train.data import decode_training_pair

    out = {}
    for path_a in sorted((SAMPLES / "source1").iterdir()):
        row = {"pair_id": path_a.stem, "uri_a": str(path_a), "uri_b": str(SAMPLES / "source2" / path_a.name)}
        (decoded,) = decode_training_pair(row)
        out[path_a.stem] = (decoded["image_a"], decoded["image_b"])
    return out


# ---------------------------------------------------------------------------------------------------------
# Pieces that need no cluster
# ---------------------------------------------------------------------------------------------------------


def test_task_literal_matches_maugif_core():
    import typing

    import maugif_core
    from pipeline.config.train_config import AdditiveTask

    assert typing.get_args(AdditiveTask) == maugif_core.ADDITIVE_TASKS


def test_overrides_are_coerced_and_validated():
    config = load_job_config(
        TrainJobConfig,
        None,
        [
            "train.lr=1e-3",
            "train.use_gpu=false",
            "storage.name=007",
            "train.crop_scale=[0.5, 1]",
            "data.input=x",
        ],
        **{"storage.path": "s3://bucket/run", "model.task": None},
    )
    assert config.train.lr == pytest.approx(1e-3)
    assert config.storage.name == "007"  # string fields keep the text
    assert config.train.crop_scale == (0.5, 1.0)
    assert config.storage.path == "s3://bucket/run"
    assert config.model.task == "general"  # None = flag not given
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key; did you mean 'train\.lr'"):
        load_job_config(TrainJobConfig, None, ["train.lrr=1", "data.input=x"])
    with pytest.raises(ConfigError, match=r"model\.overrides\.decoder_width"):
        load_job_config(TrainJobConfig, None, ["model.overrides.decoder_width=0", "data.input=x"])
    with pytest.raises(ConfigError, match=r"train\.epochs_stage1 and train\.epochs_stage2 are both 0"):
        load_job_config(TrainJobConfig, None, ["train.epochs_stage1=0", "train.epochs_stage2=0", "data.input=x"])


def test_checkpoint_score_never_compares_stages():
    from pipeline.train.checkpoints import checkpoint_score

    # Any stage-2 checkpoint outranks any stage-1 one; within a stage a lower loss wins.
    assert checkpoint_score(2, 1e9) > checkpoint_score(1, 0.0)
    assert checkpoint_score(1, 10.0) > checkpoint_score(1, 20.0)
    assert checkpoint_score(2, 0.5) > checkpoint_score(2, 3.0)
    assert checkpoint_score(2, float("nan")) < checkpoint_score(2, 1e9)


def test_samples_do_not_depend_on_worker_or_order():
    from pipeline.train.data import iter_batches, sample_seed

    config = make_config("/tmp/unused", "x", batch_size=3, crop_size=24)
    planes = decoded_samples()
    rows = [{"pair_id": k, "image_a": a, "image_b": b} for k, (a, b) in planes.items()]
    forward = list(iter_batches(iter(rows), config, stage=1, epoch=2))
    backward = list(iter_batches(iter(rows[::-1]), config, stage=1, epoch=2))
    assert [len(ids) for _, _, ids in forward] == [3, 1]
    assert forward[0][0].shape == (3, 1, 24, 24)
    by_id = {i: (a[j], b[j]) for a, b, ids in forward for j, i in enumerate(ids)}
    for a, b, ids in backward:
        for j, i in enumerate(ids):
            assert np.array_equal(by_id[i][0], a[j]) and np.array_equal(by_id[i][1], b[j])
    assert sample_seed(0, 1, 2, "p", 0) != sample_seed(0, 1, 3, "p", 0) != sample_seed(0, 2, 2, "p", 0)


def test_a_run_folder_of_another_model_is_refused(tmp_path):
    from pipeline.config.loading import save_config
    from pipeline.train.training import check_resumable

    config = make_config(str(tmp_path), "run")
    check_resumable(config)  # no run yet
    save_config(config, str(tmp_path / "run" / "config.yaml"))
    check_resumable(make_config(str(tmp_path), "run", epochs_stage2=50, num_workers=1))  # same model: fine
    other = config.model_copy(update={"model": config.model.model_copy(update={"task": "vif"})})
    with pytest.raises(ConfigError, match="storage.name 'run'.*holds a run of model"):
        check_resumable(other)


def test_checkpoint_folder_round_trip(tmp_path):
    import torch

    from maugif_core import build_model
    from maugif_core.training import make_optimizer, train_step
    from pipeline.train.checkpoints import TrainState, _load_checkpoint_dir, _save_checkpoint_dir

    model = build_model("mff")
    model.set_stage(2)
    optimizer = make_optimizer(model)
    train_step(model, optimizer, torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16), 2)
    state = TrainState(stage=2, epoch=3, history=[{"stage": 1, "epoch": 1, "loss": 2.5}])
    _save_checkpoint_dir(str(tmp_path), model, optimizer, None, state, make_config("/x", "y"))
    restored, opt_state, restored_state = _load_checkpoint_dir(str(tmp_path))
    assert (restored_state.stage, restored_state.epoch, restored_state.history) == (2, 3, state.history)
    for (name, p), (_, q) in zip(model.state_dict().items(), restored.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    fresh = make_optimizer(model)
    fresh.load_state_dict(opt_state["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert "epochs_stage1: 1" in (tmp_path / "config.yaml").read_text()


# ---------------------------------------------------------------------------------------------------------
# Ray Train
# ---------------------------------------------------------------------------------------------------------


def _reference_params(
    config: TrainJobConfig, traces: list[dict], ranks: list[int]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A single process applying, each step, the mean of the gradients of ``ranks``' local batches.

    Returns:
        The final parameters, and the largest absolute averaged gradient each parameter received.
    """
    import torch

    from maugif_core import build_model_from_config
    from maugif_core.config import preset
    from maugif_core.training import make_optimizer
    from pipeline.train.data import make_sample, sample_seed

    planes = decoded_samples()
    train = config.train
    torch.manual_seed(train.seed)
    model = build_model_from_config(preset(config.model.task))
    steps = {
        (r, s["stage"], s["epoch"], s["step"]): s["samples"] for r, trace in enumerate(traces) for s in trace["steps"]
    }
    largest: dict[int, float] = {}
    for stage, epochs in ((1, train.epochs_stage1), (2, train.epochs_stage2)):
        model.set_stage(stage)
        optimizer = make_optimizer(model, lr=train.lr, weight_decay=train.weight_decay)
        trainable = [p for p in model.parameters() if p.requires_grad]
        for epoch in range(1, epochs + 1):
            for step in range(sum(1 for key in steps if key[0] == 0 and key[1:3] == (stage, epoch))):
                grads = []
                for rank in ranks:
                    crops = [
                        make_sample(*planes[pid], config, sample_seed(train.seed, stage, epoch, pid, k))
                        for pid, k in steps[(rank, stage, epoch, step)]
                    ]
                    luma_a = torch.stack([c[0] for c in crops])
                    luma_b = torch.stack([c[1] for c in crops])
                    model.zero_grad(set_to_none=True)
                    model(luma_a, luma_b, stage=stage)["loss"].backward()
                    grads.append([p.grad.detach().clone() for p in trainable])
                for i, param in enumerate(trainable):
                    param.grad = sum(g[i] for g in grads) / len(grads)
                    largest[id(param)] = max(largest.get(id(param), 0.0), float(param.grad.abs().max()))
                optimizer.step()
    params = {name: p.detach().numpy().copy() for name, p in model.named_parameters()}
    return params, {name: largest.get(id(p), 0.0) for name, p in model.named_parameters()}


@pytest.mark.timeout(240)
def test_ddp_two_workers_equal_single_process_gradient_average(ray_session, tmp_path):
    from pipeline.train.training import load_model, run_training

    config = make_config(str(tmp_path), "ddp", trace=True, seed=3, batch_size=1)
    summary = run_training(config)

    traces = [json.loads((tmp_path / "ddp" / "trace" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [t["world_size"] for t in traces] == [2, 2]
    # Identical parameters on both ranks after every step of both stages.
    assert traces[0]["param_digest"] == traces[1]["param_digest"]
    # Each rank saw its own samples: 2 of the 4 pairs, 2 steps of batch 1 per stage.
    for stage in (1, 2):
        seen = [{tuple(x) for s in t["steps"] if s["stage"] == stage for x in s["samples"]} for t in traces]
        assert len(seen[0]) == len(seen[1]) == 2 and not seen[0] & seen[1]

    trained = {n: p.detach().numpy() for n, p in load_model(summary.final_uri).named_parameters()}
    expected, largest_grad = _reference_params(config, traces, ranks=[0, 1])
    # Conv biases feeding a training-mode BatchNorm get a zero gradient in exact arithmetic (BN subtracts the
    # batch mean); Adam scales their float-rounding gradients up to full steps, so they are not comparable.
    # Check that this is exactly the set excluded, and compare everything else.
    scale = max(largest_grad.values())
    noise_only = {n for n, g in largest_grad.items() if g < 1e-5 * scale}
    assert noise_only == {f"decoder_{d}.conv{i}.bias" for d in "ab" for i in (1, 2, 4)}
    for name, value in expected.items():
        if name not in noise_only:
            np.testing.assert_allclose(trained[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # The comparison is sensitive: rank 0's gradients alone give other weights.
    alone, _ = _reference_params(config, traces, ranks=[0])
    assert max(np.abs(alone[n] - expected[n]).max() for n in expected if n not in noise_only) > 1e-4


@pytest.mark.timeout(240)
def test_loss_decreases_on_real_pairs(ray_session, tmp_path):
    from pipeline.train.training import run_training

    config = make_config(
        str(tmp_path),
        "learn",
        batch_size=4,
        crop_size=64,
        epochs_stage1=4,
        epochs_stage2=4,
        lr=2e-3,
    )
    config = config.model_copy(update={"data": config.data.model_copy(update={"crops_per_pair": 8})})
    summary = run_training(config)
    rows = summary.history
    assert [(r["stage"], r["epoch"]) for r in rows] == [(s, e) for s in (1, 2) for e in (1, 2, 3, 4)]
    for stage in (1, 2):
        losses = [r["loss"] for r in rows if r["stage"] == stage]
        assert losses[-1] < 0.9 * losses[0], (stage, losses)
        assert all(r["samples"] == 32 and r["samples_per_s"] > 0 for r in rows)
    # The CSV next to the checkpoints has one row per epoch with every loss term.
    csv = (tmp_path / "learn" / "metrics.csv").read_text().splitlines()
    assert len(csv) == 1 + 8
    assert {"loss", "shared", "content_a", "content_b", "recon_b", "grad_b", "recon_a", "grad_a"} <= set(
        csv[0].split(",")
    )


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("amp", ["off", "auto"])
def test_gpu_training_with_and_without_amp(ray_session, tmp_path, amp):
    import torch

    from pipeline.train.training import run_training

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config = make_config(str(tmp_path), f"gpu-{amp}", num_workers=1, use_gpu=True, amp=amp, crop_size=64, batch_size=4)
    summary = run_training(config)
    assert [(r["stage"], r["epoch"]) for r in summary.history] == [(1, 1), (2, 1)]
    assert all(np.isfinite(r["loss"]) for r in summary.history)


# ---------------------------------------------------------------------------------------------------------
# A worker node killed mid-training (own cluster, in a subprocess: the session's Ray stays untouched)
# ---------------------------------------------------------------------------------------------------------

_NODE_LOSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    import boto3
    import ray
    from ray.cluster_utils import Cluster
    from pipeline.train.training import run_training
    from pipeline.config.train_config import TrainJobConfig

    config = TrainJobConfig.model_validate_json(sys.argv[1])
    bucket, committed = sys.argv[2], sys.argv[3]  # kill the node once this checkpoint is committed
    # Cluster() advertises itself in /tmp/ray/ray_current_cluster, where any other ray.init() on this machine
    # would find and join it: keep this test cluster private.
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 150 * 1024**2, "include_dashboard": False},
    )
    node_args = {"num_cpus": 1, "object_store_memory": 150 * 1024**2, "labels": {"pool": "train"}}
    train_node = cluster.add_node(**node_args)
    ray.init(address=cluster.address, log_to_driver=False)
    result = {}

    def fit():
        try:
            result["summary"] = run_training(config)
        except BaseException as e:  # reported to the test
            result["error"] = repr(e)

    thread = threading.Thread(target=fit)
    thread.start()
    s3 = boto3.client("s3")
    deadline = time.time() + 300
    seen = False
    while not seen and thread.is_alive() and time.time() < deadline:
        try:  # committed = listed in Ray Train's checkpoint snapshot, not merely uploaded
            seen = b"checkpoint_s1_e0001" in s3.get_object(Bucket=bucket, Key=committed)["Body"].read()
        except s3.exceptions.NoSuchKey:
            pass
        time.sleep(0.2)
    killed = seen and thread.is_alive()
    if killed:
        cluster.remove_node(train_node, allow_graceful=False)  # a crash: SIGKILL, no draining
        killed = thread.is_alive()  # the run was still going when its node went
        time.sleep(2)
        cluster.add_node(**node_args)
    thread.join(400)
    summary = result.get("summary")
    print("RESULT " + json.dumps({
        "killed": killed,
        "error": result.get("error"),
        "history": summary.history if summary else None,
        "final": summary.final_uri if summary else None,
    }), flush=True)
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_node_killed_mid_training_resumes_and_finishes(s3_server, s3_bucket, tmp_path):
    from pipeline.train.training import load_model

    config = make_config(
        f"s3://{s3_bucket}/nodeloss",
        "nodeloss",
        epochs_stage1=3,
        epochs_stage2=3,
        crop_size=48,
        max_failures=3,
        label_selector={"pool": "train"},
    )
    config = config.model_copy(update={"data": config.data.model_copy(update={"crops_per_pair": 4})})
    script = tmp_path / "node_loss.py"
    script.write_text(_NODE_LOSS_SCRIPT)
    committed = "nodeloss/nodeloss/checkpoint_manager_snapshot.json"
    run = subprocess.run(
        [sys.executable, str(script), config.model_dump_json(), s3_bucket, committed],
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
        capture_output=True,
        text=True,
        timeout=580,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, run.stdout[-3000:] + run.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["killed"], "training finished before the node could be killed"
    assert result["error"] is None, result["error"]
    history = result["history"]
    # Every epoch of both stages exactly once, and the epochs after the loss restarted from a checkpoint.
    assert [(r["stage"], r["epoch"]) for r in history] == [(s, e) for s in (1, 2) for e in (1, 2, 3)]
    assert any(r["resumed_at_epoch"] >= 1 for r in history), history
    assert load_model(result["final"]).config.task == "mff"
