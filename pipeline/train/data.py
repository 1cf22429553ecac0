"""Training data: pairs decoded to unit-float luma planes on CPU tasks, and the per-worker seeded crops."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from pipeline import schema as S
from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.config.train_config import TrainJobConfig
from pipeline.errors import PipelineError, RasterReadError

__all__ = [
    "build_dataset",
    "decode_training_pair",
    "iter_batches",
    "make_sample",
    "sample_seed",
]

logger = logging.getLogger(__name__)


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
