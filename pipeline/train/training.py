"""Distributed MAUGIF training on Ray Train (SPEC §2 "Training").

Data path: pair discovery (:func:`pipeline.io.pairs.iter_pairs`, what ``read_pairs`` streams) → decode both
images to unit-float luma planes on CPU tasks (:func:`decode_training_pair`, a ``flat_map`` that drops bad
pairs with a logged reason) → Ray Train shards the rows over the workers (``streaming_split``, equal row
counts). Each worker draws its crops: the same random-resized crop and flip for both images, seeded by
``(seed, stage, epoch, pair_id, k)`` so that a sample does not depend on which worker got it, and steps the
model through a ``DistributedDataParallel`` wrapper (Gloo on CPU, NCCL on GPU; bf16/fp16 autocast on GPU).

Schedule: stage 1 trains the two encoders, stage 2 both injector decoders with the encoders frozen; a fresh
Adam per stage (SPEC §1.1). A checkpoint is committed after every epoch (:data:`MODEL_FILE` in the
maugif_core format, :data:`OPTIMIZER_FILE`, :data:`STATE_FILE` with stage, epoch and the metric history,
:data:`CONFIG_FILE`); Ray Train keeps the latest plus ``storage.keep_best`` by :func:`checkpoint_score`. A
worker or node failure restarts the worker group from the latest checkpoint (``FailureConfig``); re-running
the same job (same ``storage.path`` and ``storage.name``) after a driver crash continues where it stopped
(Ray Train V2 restores from the run folder).

Outputs: ``<storage.path>/<storage.name>/`` (Ray Train's run folder: checkpoints, ``metrics.csv``,
``config.yaml``, ``trace/``) and ``<storage.path>/final/`` (``model.safetensors``, loadable with
:func:`load_model` from a local path or ``s3://``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import schema as S
from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.config.loading import config_to_yaml, save_config
from pipeline.config.train_config import TrainJobConfig
from pipeline.errors import ConfigError, PipelineError, RasterReadError

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "TrainSummary",
    "build_dataset",
    "build_trainer",
    "check_resumable",
    "checkpoint_score",
    "decode_training_pair",
    "load_model",
    "run_training",
    "sample_seed",
    "train_loop_per_worker",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
TRACE_DIR = "trace"
SCORE = "score"
_FIXED_COLUMNS = (
    "global_epoch",
    "stage",
    "epoch",
    "loss",
    "samples",
    "steps",
    "seconds",
    "samples_per_s",
    SCORE,
)
_TERM_COLUMNS = ("shared", "content_b", "content_a", "recon_b", "grad_b", "recon_a", "grad_a")


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------


def decode_training_pair(
    row: Mapping[str, Any], read: ReadConfig | None = None, storage: StorageConfig | None = None
) -> list[dict[str, Any]]:
    """Decode one pair into its two luma planes (a ``flat_map`` function: a bad pair yields nothing).

    The planes are what the model trains on and what :meth:`AdditiveMAUGIF.fuse` feeds it: unit-float luma,
    grey inputs (also grey stored as three equal channels) taken as they are
    (``maugif_core.additive.prepare_pair``).

    Returns:
        ``[{pair_id, image_a, image_b}]`` with ``(H, W)`` float32 luma of A and B, or ``[]`` (reason logged)
        when a file cannot be read or the two sizes differ.
    """
    from maugif_core.additive import prepare_pair
    from maugif_core.errors import MaugifError
    from pipeline.io.readers import read_image

    pair_id = row[S.PAIR_ID]
    try:
        image_a, _ = read_image(row[S.URI_A], config=read, storage=storage)
        image_b, _ = read_image(row[S.URI_B], config=read, storage=storage)
        prepared = prepare_pair(image_a, image_b)
    except (RasterReadError, MaugifError) as e:
        logger.warning("training pair %s skipped: %s", pair_id, e)
        return []
    return [{S.PAIR_ID: pair_id, S.IMAGE_A: prepared.luma_a, S.IMAGE_B: prepared.luma_b}]


def build_dataset(config: TrainJobConfig) -> tuple[Any, dict[str, int]]:
    """The training rows as a Ray Dataset (call on the driver after ``ray.init``).

    Returns:
        ``(dataset, counts)``: rows ``pair_id, image_a, image_b`` (luma planes); counts of usable pairs
        (``pairs``), discovery failures (``discovery_failures``), pairs of other tasks (``other_task``)
        and, when materialized, ``samples`` / ``decode_failures``.

    Raises:
        PipelineError: no usable pair in ``data.input``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray

    from pipeline.io.pairs import iter_pairs

    data = config.data
    tasks = _trainable_tasks(config.model.task)
    counts = {"pairs": 0, "discovery_failures": 0, "other_task": 0}
    refs = []
    # Discovery streams batch by batch (pipeline.io.pairs); the usable rows are put into the object store from the
    # driver, so they live on the driver's node: losing a worker node never loses (and never has to rebuild)
    # the pair list, which would need free CPUs that the training workers may be holding.
    for batch in iter_pairs(data.input or "", task=config.model.task, config=data.pairs, storage=config.storage.s3):
        counts["discovery_failures"] += batch.failures.num_rows
        for row in batch.failures.to_pylist()[:20]:
            logger.warning("pair %s skipped at discovery: %s", row[S.PAIR_ID], row[S.ERROR])
        usable = batch.pairs.filter(pc.is_in(batch.pairs[S.TASK], value_set=pa.array(tasks)))
        counts["other_task"] += batch.pairs.num_rows - usable.num_rows
        if data.max_pairs is not None:
            usable = usable.slice(0, max(0, data.max_pairs - counts["pairs"]))
        if usable.num_rows:
            counts["pairs"] += usable.num_rows
            refs.append(ray.put(usable.select(list(S.PAIR_COLUMNS))))
    if counts["discovery_failures"]:
        logger.warning("%d pairs of %s failed discovery", counts["discovery_failures"], data.input)
    if counts["other_task"]:
        logger.warning(
            "%d pairs of %s are for tasks other than %s: not trained on",
            counts["other_task"],
            data.input,
            "/".join(tasks),
        )
    if counts["pairs"] == 0:
        raise PipelineError(f"data.input {data.input!r}: no usable pairs to train on")
    ok = ray.data.from_arrow_refs(refs)
    samples = ok.flat_map(
        decode_training_pair,
        fn_kwargs={"read": data.read, "storage": config.storage.s3},
        num_cpus=data.decode_cpus,
    )
    train = config.train
    total_cpus = float(ray.cluster_resources().get("CPU", 0.0))
    free = total_cpus - train.num_workers * train.cpus_per_worker
    if data.materialize == "always" or (data.materialize == "auto" and free < data.decode_cpus):
        logger.info(
            "materializing decoded pairs before training (cluster CPUs %.1f, workers take %.1f, decode needs %.1f)",
            total_cpus,
            train.num_workers * train.cpus_per_worker,
            data.decode_cpus,
        )
        samples = samples.materialize()
        counts["samples"] = samples.count()
        counts["decode_failures"] = counts["pairs"] - counts["samples"]
        if counts["samples"] == 0:
            raise PipelineError(f"data.input {data.input!r}: none of the {counts['pairs']} pairs could be decoded")
    return samples, counts


def _trainable_tasks(task: str) -> tuple[str, ...]:
    """Pair tasks a model of ``task`` trains on: its own, or every additive task for the ``general`` model."""
    from typing import get_args

    from pipeline.config.train_config import AdditiveTask

    return get_args(AdditiveTask) if task == "general" else (task,)


def sample_seed(seed: int, stage: int, epoch: int, pair_id: str, k: int) -> int:
    """Seed of the ``k``-th crop of ``pair_id`` in (``stage``, ``epoch``), whatever worker and row order."""
    digest = hashlib.blake2b(f"{seed}/{stage}/{epoch}/{k}/{pair_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_sample(luma_a: np.ndarray, luma_b: np.ndarray, config: TrainJobConfig, seed: int) -> tuple[Any, Any]:
    """One training sample: the joint random-resized crop + flip of both planes, ``(1, S, S)`` each."""
    import torch

    from maugif_core.training import joint_random_resized_crop

    train = config.train
    generator = torch.Generator().manual_seed(seed)
    return joint_random_resized_crop(
        torch.from_numpy(np.ascontiguousarray(luma_a, dtype=np.float32))[None],
        torch.from_numpy(np.ascontiguousarray(luma_b, dtype=np.float32))[None],
        train.crop_size,
        generator=generator,
        scale=tuple(train.crop_scale),
        ratio=tuple(train.crop_ratio),
        flip_p=train.flip_p,
    )


def iter_batches(
    rows: Iterator[Mapping[str, Any]], config: TrainJobConfig, stage: int, epoch: int
) -> Iterator[tuple[Any, Any, list[tuple[str, int]]]]:
    """Batches of ``train.batch_size`` samples (the last one may be smaller) from decoded rows.

    Yields:
        ``(luma_a, luma_b, ids)``: ``(B, 1, S, S)`` float32 tensors and the ``(pair_id, k)`` of each sample.
    """
    import torch

    batch_a, batch_b, ids = [], [], []
    for row in rows:
        pair_id = str(row[S.PAIR_ID])
        for k in range(config.data.crops_per_pair):
            seed = sample_seed(config.train.seed, stage, epoch, pair_id, k)
            crop_a, crop_b = make_sample(row[S.IMAGE_A], row[S.IMAGE_B], config, seed)
            batch_a.append(crop_a)
            batch_b.append(crop_b)
            ids.append((pair_id, k))
            if len(ids) == config.train.batch_size:
                yield torch.stack(batch_a), torch.stack(batch_b), ids
                batch_a, batch_b, ids = [], [], []
    if ids:
        yield torch.stack(batch_a), torch.stack(batch_b), ids


def _shard_rows(shard: Any, config: TrainJobConfig, epoch_key: int, rank: int) -> Iterator[Mapping[str, Any]]:
    buffer = config.data.shuffle_buffer
    batches = shard.iter_batches(
        batch_size=16,
        batch_format="numpy",
        local_shuffle_buffer_size=buffer or None,
        local_shuffle_seed=(config.train.seed * 1_000_003 + epoch_key * 101 + rank) if buffer else None,
    )
    for batch in batches:
        for i in range(len(batch[S.PAIR_ID])):
            yield {
                S.PAIR_ID: batch[S.PAIR_ID][i],
                S.IMAGE_A: batch[S.IMAGE_A][i],
                S.IMAGE_B: batch[S.IMAGE_B][i],
            }


# ------------------------------------------------------------------------------------------------------------
# Checkpoints and metrics
# ------------------------------------------------------------------------------------------------------------


def checkpoint_score(stage: int, loss: float) -> float:
    """Score Ray Train ranks checkpoints by (higher is better): ``stage - loss / (1 + loss)``.

    Stage-1 and stage-2 losses measure different things, so they are never compared: every stage-2 checkpoint
    (score in (1, 2]) outranks every stage-1 one (score in (0, 1]); within a stage a lower loss scores higher.
    "Best" is therefore the best epoch of the latest stage reached.
    """
    if not math.isfinite(loss) or loss < 0:
        return float(stage - 1)
    return float(stage) - loss / (1.0 + loss)


@dataclass
class TrainState:
    """Where a run stands, as stored in :data:`STATE_FILE` of every checkpoint."""

    stage: int = 0  # stage of the last completed epoch; 0 = nothing done yet
    epoch: int = 0  # last completed epoch within that stage
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"stage": self.stage, "epoch": self.epoch, "history": self.history}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        return cls(stage=int(data["stage"]), epoch=int(data["epoch"]), history=list(data.get("history", [])))


def _metrics_csv(history: list[dict[str, float]]) -> bytes:
    terms = [c for c in _TERM_COLUMNS if any(c in row for row in history)]
    extra = sorted({k for row in history for k in row} - set(_FIXED_COLUMNS) - set(_TERM_COLUMNS))
    columns = [*_FIXED_COLUMNS, *terms, *extra]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in columns})
    return out.getvalue().encode()


def _write_bytes(uri: str, data: bytes, storage: StorageConfig) -> None:
    from pipeline.io.fsutil import atomic_write_bytes
    from pipeline.io.storage import get_filesystem

    fs, _ = get_filesystem(uri, storage)
    atomic_write_bytes(uri, data, fs=fs)


def _save_checkpoint_dir(
    folder: str, model: Any, optimizer: Any, scaler: Any, state: TrainState, config: TrainJobConfig
) -> None:
    import torch

    from maugif_core import save_checkpoint

    save_checkpoint(model, os.path.join(folder, MODEL_FILE))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None},
        os.path.join(folder, OPTIMIZER_FILE),
    )
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as handle:
        handle.write(state.to_json())
    with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config_to_yaml(config))


def _load_checkpoint_dir(folder: str) -> tuple[Any, dict[str, Any], TrainState]:
    import torch

    from maugif_core import load_checkpoint

    model = load_checkpoint(os.path.join(folder, MODEL_FILE))
    # weights_only: optimizer state is tensors and plain containers; nothing else is ever unpickled.
    opt_state = torch.load(os.path.join(folder, OPTIMIZER_FILE), map_location="cpu", weights_only=True)
    with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as handle:
        state = TrainState.from_json(handle.read())
    return model, opt_state, state


# ------------------------------------------------------------------------------------------------------------
# The loop run by every Ray Train worker
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------


def storage_for_ray(config: TrainJobConfig) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for ``RunConfig``.

    ``s3://`` goes through the pipeline's s3fs settings (endpoint, profile, retries) wrapped for pyarrow, so
    checkpoints reach the same S3 as the data; local paths need no filesystem.
    """
    from pipeline.io.storage import get_filesystem, is_s3

    path = config.storage.path
    if not is_s3(path):
        return path, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, fs_path = get_filesystem(path, config.storage.s3)
    return fs_path.rstrip("/"), PyFileSystem(FSSpecHandler(fs))


def build_trainer(config: TrainJobConfig, dataset: Any) -> Any:
    """The ``TorchTrainer`` for a validated config and its training rows."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    train = config.train
    resources = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        resources["GPU"] = train.gpus_per_worker
    storage_path, filesystem = storage_for_ray(config)
    backend = None if train.backend == "auto" else train.backend
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json")},
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker=resources,
            label_selector=train.label_selector,
        ),
        run_config=RunConfig(
            name=config.storage.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.storage.keep_best,
                checkpoint_score_attribute=SCORE,
                checkpoint_score_order="max",
            ),
        ),
        datasets={"train": dataset},
    )


@dataclass(frozen=True)
class TrainSummary:
    """What a training run produced.

    Attributes:
        run_uri: Ray Train's run folder (checkpoints, metrics.csv, config.yaml).
        final_uri: Folder of the exported model (``model.safetensors``).
        checkpoint_uri: The checkpoint exported.
        history: One metrics row per completed epoch (both stages), as in metrics.csv.
        counts: Pairs discovered / failed (see :func:`build_dataset`).
        seconds: Wall time of the run on the driver.
    """

    run_uri: str
    final_uri: str
    checkpoint_uri: str
    history: list[dict[str, float]]
    counts: dict[str, int]
    seconds: float


def _checkpoint_uri(config: TrainJobConfig, checkpoint: Any) -> str:
    scheme = config.storage.path.split("://", 1)[0] + "://" if "://" in config.storage.path else ""
    return scheme + checkpoint.path


def export_final(config: TrainJobConfig, checkpoint: Any) -> tuple[str, TrainState]:
    """Copy a checkpoint's model, config and state to ``<storage.path>/final``; returns its URI and state."""
    files: dict[str, bytes] = {}
    with checkpoint.as_directory() as folder:
        for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE):
            with open(os.path.join(folder, name), "rb") as handle:
                files[name] = handle.read()
    for name, data in files.items():
        _write_bytes(f"{config.final_uri}/{name}", data, config.storage.s3)
    return f"{config.final_uri}/{MODEL_FILE}", TrainState.from_json(files[STATE_FILE].decode())


def check_resumable(config: TrainJobConfig) -> None:
    """Refuse to continue a run folder that holds another model (task or model overrides differ).

    Anything else may change between runs of one name (epochs to extend it, workers, batch size, storage
    settings); the model must not, or the restored weights would be trained as something they are not.

    Raises:
        ConfigError: ``<storage.path>/<storage.name>/config.yaml`` describes another model.
    """
    import yaml

    from pipeline.io.storage import get_filesystem

    uri = f"{config.run_uri}/{CONFIG_FILE}"
    fs, path = get_filesystem(uri, config.storage.s3)
    try:
        previous = yaml.safe_load(fs.cat_file(path)) or {}
    except FileNotFoundError:
        return
    before = previous.get("model", {})
    now = config.model.model_dump(mode="json")
    if before != now:
        raise ConfigError(
            f"storage.name {config.storage.name!r} under {config.storage.path!r} holds a run of model "
            f"{before}; this config trains {now}: choose another storage.name (or storage.path) for a new run"
        )


def run_training(config: TrainJobConfig) -> TrainSummary:
    """Train (or resume) a run end to end on the connected Ray cluster and export the final model.

    Args:
        config: A validated config; relative local paths are made absolute here.

    Raises:
        ConfigError: the run folder holds another model (see :func:`check_resumable`).
        PipelineError: no usable input pairs.
        ray.train.TrainingFailedError: training failed beyond ``train.max_failures``.
    """
    started = time.perf_counter()
    config = config.with_absolute_paths()
    check_resumable(config)
    save_config(config, f"{config.run_uri}/{CONFIG_FILE}", storage=config.storage.s3)
    dataset, counts = build_dataset(config)
    result = build_trainer(config, dataset).fit()
    if result.error is not None:
        raise result.error
    checkpoint = result.checkpoint
    if config.train.export == "best" and result.best_checkpoints:
        checkpoint = max(result.best_checkpoints, key=lambda item: item[1].get(SCORE, -math.inf))[0]
    if checkpoint is None:
        raise PipelineError(f"run {config.run_uri}: training finished without a checkpoint")
    final, state = export_final(config, checkpoint)
    return TrainSummary(
        run_uri=config.run_uri,
        final_uri=final,
        checkpoint_uri=_checkpoint_uri(config, checkpoint),
        history=state.history,
        counts=counts,
        seconds=time.perf_counter() - started,
    )


def load_model(uri: str, *, storage: StorageConfig | None = None, expect_task: str | None = None) -> Any:
    """Load a MAUGIF model from a local or ``s3://`` checkpoint: a ``.safetensors`` file or a folder holding
    ``model.safetensors`` (``<output>/final``, or any training checkpoint folder).

    Raises:
        ConfigError: the URI cannot be read. ``maugif_core.CheckpointError``: not a valid MAUGIF checkpoint.
    """
    from maugif_core import load_checkpoint
    from pipeline.io.storage import get_filesystem

    target = uri if uri.endswith(".safetensors") else f"{uri.rstrip('/')}/{MODEL_FILE}"
    try:
        fs, path = get_filesystem(target, storage)
        data = fs.cat_file(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model checkpoint {target!r} cannot be read: {e}") from e
    return load_checkpoint(data, expect_task=expect_task)
