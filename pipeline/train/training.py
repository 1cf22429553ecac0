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

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config.io_config import StorageConfig
from pipeline.config.loading import save_config
from pipeline.config.train_config import TrainJobConfig
from pipeline.errors import ConfigError, PipelineError
from pipeline.train.checkpoints import (
    CONFIG_FILE,
    MODEL_FILE,
    SCORE,
    STATE_FILE,
    TrainState,
    _write_bytes,
)
from pipeline.train.data import build_dataset
from pipeline.train.worker import train_loop_per_worker

__all__ = [
    "TrainSummary",
    "build_trainer",
    "check_resumable",
    "export_final",
    "load_model",
    "run_training",
    "storage_for_ray",
]

logger = logging.getLogger(__name__)


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
