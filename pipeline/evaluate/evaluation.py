"""Fusion-quality evaluation on Ray: every method on every pair, scored per pair, aggregated on the driver.

The job is a Ray Data pipeline shaped like batch fusion::

    read_pairs (driver, streamed) → map(decode_pair) (tasks) → flat_map(PairEvaluator) (actors) → rows

A :class:`PairEvaluator` actor loads the MAUGIF model once, runs each method on the pair it is handed, scores
the result and returns long rows ``(pair_id, method, metric, value)`` plus a ``seconds`` row per method; a
pair or a method that fails becomes a failure row with the reason and the job goes on. The driver collects the
rows (one row per metric: evaluation sets of up to ~10⁵ pairs fit easily) and
:mod:`pipeline.evaluate.evaluation_report` writes the CSVs, the Markdown table, the plots and ``report.html``.

What a method sees and how it is scored:

* additive tasks: both sources as decoded; :func:`maugif_core.metrics.evaluate` against the two sources, in
  the configured convention (``en … psnr``);
* ``pansharpen`` / ``hsi_msi``, ``protocol="wald"`` (reduced resolution): A (MS / HS) and B (PAN / MS) are
  each low-passed by a Gaussian whose gain at the low-resolution Nyquist frequency is ``nyquist_gain_a`` /
  ``nyquist_gain_b`` and decimated by the pair's ratio r (:func:`maugif_core.metrics.degrade_pan`, band by
  band); methods fuse the degraded pair and are compared with the original A: ``sam`` (degrees), ``ergas``,
  ``q2n``, ``psnr`` (unit range, peak 1). Pairs on one grid (ratio 1, e.g. HS and MS at 30 m) degrade only A
  by ``same_grid_ratio``. A is cropped to a multiple of r first (B accordingly);
* ``protocol="full"``: methods fuse the original pair, scored by ``qnr``, ``d_lambda``, ``d_s``
  (:func:`maugif_core.metrics.evaluate_full`; a multi-band B is averaged into the PAN-like image D_s needs).

Spectral images are handed to every method as unit-range float32 (integers scaled by their dtype maximum).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import schema as S
from pipeline.config.eval_config import MAUGIF, EvalJobConfig, maugif_overrides, split_method
from pipeline.errors import ConfigError, PairDiscoveryError
from pipeline.evaluate.fused_dirs import index_fused_dir
from pipeline.evaluate.peers import _rgb_indices, fuse_mertens, fuse_rio_brovey
from pipeline.evaluate.scenes import Scene, _as_cube, crop_to_ratio, prepare_scene, wald_degrade

__all__ = [
    "COL_METRIC",
    "COL_METHOD",
    "COL_VALUE",
    "FULL_METRICS",
    "LOWER_IS_BETTER",
    "REDUCED_METRICS",
    "SECONDS",
    "EvaluationResult",
    "PairEvaluator",
    "Scene",
    "crop_to_ratio",
    "index_fused_dir",
    "metric_order",
    "prepare_scene",
    "run_evaluation",
    "wald_degrade",
]

logger = logging.getLogger(__name__)

# Long-format columns of the evaluation rows (pair_id comes from pipeline.schema).
COL_METHOD = "method"
COL_METRIC = "metric"
COL_VALUE = "value"
COL_STAGE = "stage"
COL_ERROR = "error"
ROW_COLUMNS = (S.PAIR_ID, COL_METHOD, COL_METRIC, COL_VALUE, COL_STAGE, COL_ERROR)

SECONDS = "seconds"  # wall time of one method on one pair (fusion only, not scoring)
REDUCED_METRICS = ("sam", "ergas", "q2n", "psnr")
FULL_METRICS = ("qnr", "d_lambda", "d_s")
LOWER_IS_BETTER = frozenset({"nabf", "sam", "ergas", "d_lambda", "d_s", SECONDS})

STAGE_PREPARE = "prepare"
STAGE_FUSE = "fuse"
STAGE_SCORE = "score"


def metric_order(task: str, protocol: str) -> tuple[str, ...]:
    """The metrics of a task/protocol in table order, ``seconds`` last."""
    from maugif_core.config import MULTIPLICATIVE_TASKS
    from maugif_core.metrics import ADDITIVE_KEYS

    if task in MULTIPLICATIVE_TASKS:
        return (*(REDUCED_METRICS if protocol == "wald" else FULL_METRICS), SECONDS)
    return (*ADDITIVE_KEYS, SECONDS)


# ------------------------------------------------------------------------------------------------------------
# The actor
# ------------------------------------------------------------------------------------------------------------


def _metric_row(pair_id: str, method: str, metric: str, value: float) -> dict[str, Any]:
    return {S.PAIR_ID: pair_id, COL_METHOD: method, COL_METRIC: metric, COL_VALUE: float(value),
            COL_STAGE: "", COL_ERROR: ""}  # fmt: skip


def _failure_row(pair_id: str, method: str, stage: str, error: str) -> dict[str, Any]:
    return {S.PAIR_ID: pair_id, COL_METHOD: method, COL_METRIC: "", COL_VALUE: math.nan,
            COL_STAGE: stage, COL_ERROR: error}  # fmt: skip


def file_safe(name: str) -> str:
    """A method name usable as a file or folder name (``maugif:running`` → ``maugif-running``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


class PairEvaluator:
    """Callable class for ``Dataset.flat_map``: every method on one decoded pair, scored.

    Args:
        config: the job config (a dict from ``EvalJobConfig.model_dump()``, rebuilt here).
        fused_index: fused-folder name → {lower-case pair id → image URI} (:func:`index_fused_dir`).
        grid_ids: pair ids whose sources and results are written as thumbnails for the visual grid.
    """

    def __init__(self, config: dict[str, Any], fused_index: dict[str, dict[str, str]], grid_ids: list[str]) -> None:
        import torch

        self.config = EvalJobConfig.model_validate(config)
        torch.set_num_threads(self.config.torch_threads)
        self.fused_index = fused_index
        self.grid_ids = set(grid_ids)
        self._models: dict[str | None, Any] = {}

    # ------------------------------------------------------------------ models
    def additive_model(self, variant: str | None) -> Any:
        """The task's MAUGIF model (checkpoint or bundled), with the config overrides ``variant`` names
        (:func:`~pipeline.config.eval_config.maugif_overrides`: BatchNorm mode, envelope)."""
        if variant in self._models:
            return self._models[variant]
        import maugif_core

        if None not in self._models:
            if self.config.checkpoint is not None:
                from pipeline.fuse.predictor import load_model_uri

                base = load_model_uri(self.config.checkpoint)
                if getattr(base.config, "task", self.config.task) != self.config.task:
                    logger.warning(
                        "checkpoint %s was trained for task %r, evaluated as %r (its own config is used)",
                        self.config.checkpoint, base.config.task, self.config.task,
                    )  # fmt: skip
            else:
                base = maugif_core.pretrained(self.config.task)
            base.eval()
            self._models[None] = base
        base = self._models[None]
        overrides = {k: v for k, v in maugif_overrides(variant).items() if getattr(base.config, k) != v}
        if overrides:
            model = maugif_core.build_model_from_config(base.config.model_copy(update=overrides))
            model.load_state_dict(base.state_dict())
            model.eval()
        else:
            model = base
        self._models[variant] = model
        return model

    # ------------------------------------------------------------------ methods
    def fuse(self, method: str, scene: Scene, pair_id: str, meta_a: dict[str, Any], task: str) -> np.ndarray:
        """Run one method on a scene; the fused image (additive: A's dtype; spectral: unit float32).

        ``task`` is the pair's own task (it picks the multiplicative preset); the job's task picks the additive
        model and the additive baselines' colour rule.
        """
        from maugif_core import baselines

        base, variant = split_method(method)
        if method in self.fused_index:
            return self._read_fused(method, scene, pair_id)
        if self.config.mechanism == "additive":
            if base == MAUGIF:
                return self.additive_model(variant).fuse(scene.image_a, scene.image_b)
            if base == "mertens":
                return fuse_mertens(scene.image_a, scene.image_b)
            if base not in baselines.METHODS:
                return self.registered_method(base).fuse(scene.image_a, scene.image_b, task=self.config.task)
            return baselines.fuse(base, scene.image_a, scene.image_b, task=self.config.task)
        if base == MAUGIF:
            import maugif_core

            model = maugif_core.build_model(task, **self.config.multiplicative)
            return model.fuse(scene.image_a, scene.image_b, refit=True)
        if base == "rio_brovey":
            rgb = _rgb_indices(meta_a, scene.image_a.shape[2])
            return fuse_rio_brovey(scene.image_a, scene.image_b, scene.ratio or 1, rgb)
        if base not in baselines.METHODS:
            return self.registered_method(base).fuse(scene.image_a, scene.image_b, task=task)
        return baselines.fuse(base, scene.image_a, scene.image_b, task=task)

    def registered_method(self, name: str) -> Any:
        """A third-party method (``maugif.methods`` entry point), loaded once per actor; its mechanism must be
        the task's."""
        from maugif_core.methods import get_method, supports_task

        cache = self.__dict__.setdefault("_registered", {})
        if name not in cache:
            method = get_method(name)
            if not supports_task(method, self.config.task):
                raise ValueError(f"method {name!r} is {method.mechanism}: it cannot fuse task {self.config.task!r}")
            cache[name] = method
        return cache[name]

    def _read_fused(self, method: str, scene: Scene, pair_id: str) -> np.ndarray:
        from pipeline.io.readers import read_image

        uri = self.fused_index[method].get(pair_id.lower())
        if uri is None:
            source = next(f for f in self.config.fused if f.name == method)
            raise FileNotFoundError(
                f"no fused image for pair {pair_id!r} in {source.uri!r} (pattern {source.pattern!r})"
            )
        image, _ = read_image(uri, config=self.config.read, storage=self.config.storage)
        expected = scene.reference.shape[:2] if scene.reference is not None else scene.image_b.shape[:2]
        if image.shape[:2] != tuple(expected):
            grid = "reference" if scene.reference is not None else "output"
            raise ValueError(
                f"fused image {uri} is {image.shape[0]}x{image.shape[1]}, expected "
                f"{expected[0]}x{expected[1]} (the pair's {grid} grid)"
            )
        if self.config.mechanism == "multiplicative":
            return _as_cube(image)
        return image[..., 0] if image.ndim == 3 and image.shape[2] == 1 and scene.image_a.ndim == 2 else image

    # ------------------------------------------------------------------ scoring
    def score(self, fused: np.ndarray, scene: Scene) -> dict[str, float]:
        """The metrics of one fused image under the configured task, protocol and convention."""
        from maugif_core import metrics

        cfg = self.config
        if cfg.mechanism == "additive":
            return metrics.evaluate(fused, scene.source_a, scene.source_b, cfg.convention)
        fused = _as_cube(fused)
        if cfg.protocol == "wald":
            ratio = scene.ratio or 1
            block = min(cfg.block_size, *scene.reference.shape[:2])
            scores = metrics.evaluate_reduced(fused, scene.reference, ratio, block_size=block, data_range=1.0)
            return {k: scores[k] for k in REDUCED_METRICS}
        ratio = scene.ratio or 1
        block = max(2 * ratio, ratio * round(cfg.block_size / ratio))
        pan = scene.source_b.mean(axis=2) if scene.source_b.shape[2] > 1 else scene.source_b[..., 0]
        return metrics.evaluate_full(fused, scene.source_a, pan, ratio, block_size=block)

    # ------------------------------------------------------------------ the map function
    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        from maugif_core.config import MULTIPLICATIVE_TASKS

        pair_id = str(row[S.PAIR_ID])
        cfg = self.config
        if row.get(S.STATUS) == S.STATUS_FAILED:
            return [_failure_row(pair_id, "", row.get(S.ERROR_STAGE) or S.STAGE_READ, row.get(S.ERROR) or "failed")]
        pair_task = row.get(S.TASK) or cfg.task
        if (pair_task in MULTIPLICATIVE_TASKS) != (cfg.mechanism == "multiplicative"):
            return [_failure_row(pair_id, "", STAGE_PREPARE,
                                 f"pair task {pair_task!r} does not match the job's task {cfg.task!r} "
                                 f"({cfg.mechanism} mechanism)")]  # fmt: skip
        meta_a = json.loads(row[S.META_A]) if row.get(S.META_A) else {}
        try:
            scene = prepare_scene(np.asarray(row[S.IMAGE_A]), np.asarray(row[S.IMAGE_B]), cfg)
        except Exception as e:
            return [_failure_row(pair_id, "", STAGE_PREPARE, f"{type(e).__name__}: {e}")]
        out: list[dict[str, Any]] = []
        thumbs: dict[str, np.ndarray] = {}
        for method in cfg.method_names:
            started = time.perf_counter()
            try:
                fused = self.fuse(method, scene, pair_id, meta_a, pair_task)
            except Exception as e:
                logger.warning("pair %s, method %s failed: %s", pair_id, method, e)
                out.append(_failure_row(pair_id, method, STAGE_FUSE, f"{type(e).__name__}: {e}"))
                continue
            seconds = time.perf_counter() - started
            try:
                scores = self.score(fused, scene)
            except Exception as e:
                logger.warning("pair %s, method %s: scoring failed: %s", pair_id, method, e)
                out.append(_failure_row(pair_id, method, STAGE_SCORE, f"{type(e).__name__}: {e}"))
                continue
            out.extend(_metric_row(pair_id, method, k, v) for k, v in scores.items())
            if method not in self.fused_index:
                out.append(_metric_row(pair_id, method, SECONDS, seconds))
            if pair_id in self.grid_ids:
                thumbs[method] = fused
            if cfg.save_fused:
                self._save_fused(method, pair_id, fused)
        if pair_id in self.grid_ids:
            try:
                self._save_thumbnails(pair_id, scene, thumbs, meta_a)
            except Exception:  # a picture must never cost the scores
                logger.exception("pair %s: thumbnails for the visual grid could not be written", pair_id)
        return out

    # ------------------------------------------------------------------ files
    def _save_fused(self, method: str, pair_id: str, fused: np.ndarray) -> None:
        from pipeline.evaluate.images import encode_image
        from pipeline.io.fsutil import atomic_write_bytes, join_key

        data, suffix = encode_image(fused)
        atomic_write_bytes(join_key(self.config.output, "fused", file_safe(method), f"{pair_id}{suffix}"), data)

    def _save_thumbnails(
        self, pair_id: str, scene: Scene, fused: dict[str, np.ndarray], meta_a: dict[str, Any]
    ) -> None:
        from pipeline.evaluate.images import grid_columns, thumbnail_png
        from pipeline.io.fsutil import atomic_write_bytes, join_key

        images = {"A": scene.image_a, "B": scene.image_b}
        if scene.reference is not None:
            images["reference"] = scene.reference
        images.update(fused)
        rgb = None
        stretch = None
        if self.config.mechanism == "multiplicative":
            bands = _as_cube(scene.source_a).shape[2]
            rgb = _rgb_indices(meta_a, bands) if bands >= 3 else [0] * 3
            stretch = _as_cube(scene.source_a)
        for column in grid_columns(self.config.method_names, scene.reference is not None):
            if column not in images:
                continue
            png = thumbnail_png(images[column], self.config.thumbnail_size, rgb=rgb, stretch_from=stretch)
            atomic_write_bytes(join_key(self.config.output, "grid", pair_id, f"{file_safe(column)}.png"), png)


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """What the driver collected.

    Attributes:
        rows: long metric rows (``pair_id, method, metric, value``) as a pandas DataFrame.
        failures: failure rows (``pair_id, method, stage, error``; method empty when the whole pair failed).
        pairs: pair ids handed to the evaluators, in discovery order.
        grid_ids: pair ids shown in the visual grid.
        seconds: wall time of the Ray part.
    """

    rows: Any
    failures: Any
    pairs: list[str]
    grid_ids: list[str]
    seconds: float


def check_methods_available(config: EvalJobConfig) -> None:
    """Fail fast on the driver for methods whose model or optional package is missing.

    Raises:
        ConfigError: maugif without a checkpoint or bundled model; rio_brovey / mertens without their package.
    """
    import importlib.util

    import maugif_core

    names = config.method_names
    needs_model = config.mechanism == "additive" and any(split_method(m)[0] == MAUGIF for m in names)
    if needs_model and config.checkpoint is None and config.task not in maugif_core.pretrained_tasks():
        raise ConfigError(
            f"methods: maugif needs --checkpoint for task {config.task!r}: no bundled checkpoint "
            f"(bundled: {', '.join(maugif_core.pretrained_tasks()) or 'none'})"
        )
    for method, module, package in (("rio_brovey", "rio_pansharpen", "rio-pansharpen"),
                                    ("mertens", "cv2", "opencv-python-headless")):  # fmt: skip
        if method in names and importlib.util.find_spec(module) is None:
            raise ConfigError(f"methods: {method!r} needs the optional package {package} (pip install {package})")


def run_evaluation(config: EvalJobConfig) -> EvaluationResult:
    """Discover, decode, fuse and score every pair on the connected Ray cluster; collect the rows.

    Raises:
        ConfigError: a method that cannot run (see :func:`check_methods_available`).
        PairDiscoveryError: the pair source or a fused folder cannot be read.
    """
    import pandas as pd
    import ray

    from pipeline.io.decode import decode_pair
    from pipeline.io.pairs import read_pairs

    check_methods_available(config)
    fused_index = {f.name: index_fused_dir(f, config.storage) for f in config.fused}
    started = time.perf_counter()
    pairs = read_pairs(config.input, task=config.task, config=config.pairs, storage=config.storage)
    if config.limit is not None:
        pairs = pairs.limit(config.limit).materialize()
    pair_rows = pairs.select_columns([S.PAIR_ID, S.STATUS]).take_all()
    pair_ids = [str(r[S.PAIR_ID]) for r in pair_rows]
    grid_ids = [str(r[S.PAIR_ID]) for r in pair_rows if r[S.STATUS] == S.STATUS_OK][: config.grid_pairs]
    if not pair_ids:
        raise PairDiscoveryError(f"no pairs found in {config.input!r}")
    logger.info("evaluating %d pairs x %d methods", len(pair_ids), len(config.method_names))
    # Small blocks, so that every actor gets pairs (a manifest arrives as one block).
    pairs = pairs.repartition(min(len(pair_ids), 16 * config.num_actors))
    decoded = pairs.map(decode_pair, fn_kwargs={"config": config.read, "storage": config.storage})
    scored = decoded.flat_map(
        PairEvaluator,
        fn_constructor_kwargs={
            "config": config.model_dump(mode="json"),
            "fused_index": fused_index,
            "grid_ids": grid_ids,
        },
        compute=ray.data.ActorPoolStrategy(size=config.num_actors),
        num_cpus=config.cpus_per_actor,
    )
    frames = []
    done: set[str] = set()
    for batch in scored.iter_batches(batch_format="pandas", batch_size=256):
        frames.append(batch)
        before = len(done)
        done.update(batch[S.PAIR_ID].astype(str))
        if len(done) // 10 > before // 10:
            logger.info("scored %d / %d pairs", len(done), len(pair_ids))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ROW_COLUMNS))
    failed = table[COL_ERROR].astype(str) != ""
    rows = table.loc[~failed, [S.PAIR_ID, COL_METHOD, COL_METRIC, COL_VALUE]].reset_index(drop=True)
    failures = table.loc[failed, [S.PAIR_ID, COL_METHOD, COL_STAGE, COL_ERROR]].reset_index(drop=True)
    return EvaluationResult(rows, failures, pair_ids, grid_ids, time.perf_counter() - started)


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write of one output object (local path or s3://)."""
    from pipeline.io.fsutil import atomic_write_bytes

    atomic_write_bytes(uri, data)


def csv_bytes(frame: Any) -> bytes:
    """A DataFrame as UTF-8 CSV bytes, no index, full float precision."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.10g")
    return buffer.getvalue().encode("utf-8")
