"""The loop run by every Ray Train worker: DDP wrapping, AMP, epochs, checkpoint commits, Ray metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from pipeline.config.train_config import TrainJobConfig
from pipeline.errors import PipelineError
from pipeline.train.checkpoints import (
    METRICS_FILE,
    SCORE,
    TRACE_DIR,
    TrainState,
    _load_checkpoint_dir,
    _metrics_csv,
    _save_checkpoint_dir,
    _write_bytes,
    checkpoint_score,
)
from pipeline.train.data import _shard_rows, iter_batches

__all__ = [
    "train_loop_per_worker",
]

logger = logging.getLogger(__name__)


def _param_digest(model: Any) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _amp(config: TrainJobConfig, device: Any) -> tuple[Any, Any]:
    import torch

    if device.type != "cuda" or config.train.amp == "off":
        return None, None
    amp = config.train.amp
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


class _RayMetrics:
    """Per-epoch gauges exported through ``ray.util.metrics`` (dashboard / Prometheus), set by rank 0."""

    def __init__(self, run: str) -> None:
        from ray.util.metrics import Gauge

        tags = ("run", "stage")
        self._run = run
        self.loss = Gauge("maugif_train_loss", "Mean training loss of the last epoch.", tag_keys=tags)
        self.rate = Gauge("maugif_train_samples_per_s", "Training samples per second (all workers).", tag_keys=tags)
        self.epoch = Gauge("maugif_train_global_epoch", "Last completed epoch (stage 1 then 2).", tag_keys=tags)

    def set(self, row: Mapping[str, float]) -> None:
        tags = {"run": self._run, "stage": str(int(row["stage"]))}
        self.loss.set(row["loss"], tags=tags)
        self.rate.set(row["samples_per_s"], tags=tags)
        self.epoch.set(row["global_epoch"], tags=tags)


def _run_epoch(
    ddp_model: Any,
    optimizer: Any,
    shard: Any,
    config: TrainJobConfig,
    stage: int,
    epoch: int,
    ctx: Any,
    amp: Any,
) -> tuple[dict[str, float], list[list[tuple[str, int]]]]:
    """Train one epoch; returns the epoch's metrics (reduced over ranks) and this rank's step composition."""
    import torch
    import torch.distributed as dist

    from maugif_core.training import train_step

    device = next(ddp_model.parameters()).device
    world = ctx.get_world_size()
    global_epoch = epoch if stage == 1 else config.train.epochs_stage1 + epoch
    sums: dict[str, float] = {}
    steps = samples = 0
    trace: list[list[tuple[str, int]]] = []
    started = time.perf_counter()
    batches = iter_batches(_shard_rows(shard, config, global_epoch, ctx.get_world_rank()), config, stage, epoch)
    while True:
        batch = next(batches, None)
        if world > 1:
            # Ranks must step in lockstep (every step is an all-reduce): stop all as soon as one runs dry.
            flag = torch.tensor([0 if batch is None else 1], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if int(flag) == 0:
                for _ in batches:  # drain, so the shard's epoch completes
                    pass
                break
        elif batch is None:
            break
        luma_a, luma_b, ids = batch
        terms = train_step(
            ddp_model,
            optimizer,
            luma_a.to(device),
            luma_b.to(device),
            stage,
            autocast_dtype=amp[0],
            scaler=amp[1],
        )
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        steps += 1
        samples += len(ids)
        if config.train.trace:
            trace.append([tuple(i) for i in ids])
    elapsed = time.perf_counter() - started
    names = sorted(sums)
    totals = torch.tensor([sums[n] for n in names] + [float(steps), float(samples)], dtype=torch.float64)
    longest = torch.tensor([elapsed], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(totals)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    all_steps, all_samples = float(totals[-2]), float(totals[-1])
    if all_samples == 0:
        raise PipelineError(f"stage {stage} epoch {epoch}: no training samples reached the workers")
    row = {n: float(totals[i]) / all_steps for i, n in enumerate(names)}
    row.update(
        global_epoch=global_epoch,
        stage=stage,
        epoch=epoch,
        samples=int(all_samples),
        steps=int(all_steps),
        seconds=float(longest),
        samples_per_s=all_samples / max(float(longest), 1e-9),
    )
    row[SCORE] = checkpoint_score(stage, row["loss"])
    return row, trace


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function: restore, then run the remaining epochs of both stages.

    Args:
        loop_config: ``{"config": TrainJobConfig.model_dump(mode="json")}``.
    """
    import ray.train
    import torch
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model

    from maugif_core import build_model_from_config
    from maugif_core.config import preset
    from maugif_core.training import make_optimizer

    config = TrainJobConfig.model_validate(loop_config["config"])
    train = config.train
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(train.torch_threads or max(1, int(train.cpus_per_worker)))
    torch.manual_seed(train.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)

    model = build_model_from_config(preset(config.model.task, **config.model.overrides))
    state, opt_state = TrainState(), None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            saved_model, opt_state, state = _load_checkpoint_dir(folder)
        model.load_state_dict(saved_model.state_dict())
        logger.info("rank %d resumes after stage %d epoch %d", rank, state.stage, state.epoch)
    resumed_at = len(state.history)
    device = get_device()
    amp = _amp(config, device)
    metrics = _RayMetrics(config.storage.name) if rank == 0 else None
    trace: list[dict[str, Any]] = []
    epochs = {1: train.epochs_stage1, 2: train.epochs_stage2}

    for stage in (1, 2):
        first = 1
        if state.stage > stage:
            continue
        if state.stage == stage:
            first = state.epoch + 1
        if first > epochs[stage]:
            continue
        model.set_stage(stage)
        ddp_model = prepare_model(model)
        optimizer = make_optimizer(model, lr=train.lr, weight_decay=train.weight_decay)
        if opt_state is not None and state.stage == stage:
            optimizer.load_state_dict(opt_state["optimizer"])
            if amp[1] is not None and opt_state.get("scaler"):
                amp[1].load_state_dict(opt_state["scaler"])
        for epoch in range(first, epochs[stage] + 1):
            shard = ray.train.get_dataset_shard("train")
            row, steps = _run_epoch(ddp_model, optimizer, shard, config, stage, epoch, ctx, amp)
            row["resumed_at_epoch"] = resumed_at
            state = TrainState(stage=stage, epoch=epoch, history=[*state.history, row])
            trace += [{"stage": stage, "epoch": epoch, "step": i, "samples": s} for i, s in enumerate(steps)]
            name = f"checkpoint_s{stage}_e{epoch:04d}"
            if rank == 0:
                _write_bytes(f"{config.run_uri}/{METRICS_FILE}", _metrics_csv(state.history), config.storage.s3)
                metrics.set(row)
                logger.info("stage %d epoch %d: %s", stage, epoch, json.dumps(row))
                with tempfile.TemporaryDirectory() as folder:
                    _save_checkpoint_dir(folder, model, optimizer, amp[1], state, config)
                    ray.train.report(row, checkpoint=Checkpoint.from_directory(folder), checkpoint_dir_name=name)
            else:
                ray.train.report(row, checkpoint=None, checkpoint_dir_name=name)
    if train.trace:
        record = {
            "rank": rank,
            "world_size": ctx.get_world_size(),
            "steps": trace,
            "param_digest": _param_digest(model),
        }
        _write_bytes(f"{config.run_uri}/{TRACE_DIR}/rank{rank}.json", json.dumps(record).encode(), config.storage.s3)
