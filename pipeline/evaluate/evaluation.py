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
from pipeline.config.eval_config import MAUGIF, EvalJobConfig, FusedSourceConfig, maugif_overrides, split_method
from pipeline.errors import ConfigError, PairDiscoveryError

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
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def metric_order(task: str, protocol: str) -> tuple[str, ...]:
    """The metrics of a task/protocol in table order, ``seconds`` last."""
    from maugif_core.config import MULTIPLICATIVE_TASKS
    from maugif_core.metrics import ADDITIVE_KEYS

    if task in MULTIPLICATIVE_TASKS:
        return (*(REDUCED_METRICS if protocol == "wald" else FULL_METRICS), SECONDS)
    return (*ADDITIVE_KEYS, SECONDS)


# ------------------------------------------------------------------------------------------------------------
# Fused folders
# ------------------------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    head, tail = pattern.split("{pair_id}")
    to_re = lambda text: ".*".join(re.escape(part) for part in text.split("*"))  # noqa: E731
    return re.compile(f"^{to_re(head)}(?P<pair_id>.+?){to_re(tail)}$", re.IGNORECASE)


def index_fused_dir(source: FusedSourceConfig, storage: Any = None) -> dict[str, str]:
    """Map lower-cased pair ids to the fused images of one folder (its direct children matching the pattern).

    Raises:
        PairDiscoveryError: the folder does not exist or holds no image matching the pattern; two files match
            one pair id.
    """
    from pipeline.io.storage import get_filesystem, iter_files, to_uri

    fs, path = get_filesystem(source.uri, storage)
    if not fs.isdir(path):
        raise PairDiscoveryError(f"fused folder {source.name!r}: {source.uri!r} is not an existing folder")
    regex = _pattern_regex(source.pattern)
    index: dict[str, str] = {}
    for page in iter_files(fs, path, recursive=False):
        for file_path in page:
            name = file_path.rsplit("/", 1)[-1]
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            match = regex.match(name)
            if match is None:
                continue
            key = match.group("pair_id").lower()
            uri = to_uri(file_path, source.uri)
            if key in index:
                raise PairDiscoveryError(
                    f"fused folder {source.name!r}: pair id {key!r} matches two files, {index[key]} and "
                    f"{uri}; expected one (tighten the pattern {source.pattern!r})"
                )
            index[key] = uri
    if not index:
        raise PairDiscoveryError(
            f"fused folder {source.name!r}: no image in {source.uri!r} matches {source.pattern!r} "
            f"(extensions {', '.join(IMAGE_SUFFIXES)})"
        )
    logger.info("fused folder %s: %d images in %s", source.name, len(index), source.uri)
    return index


# ------------------------------------------------------------------------------------------------------------
# Scenes: what methods see and what they are compared with
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One prepared pair.

    Attributes:
        image_a, image_b: what every method fuses: the decoded sources (additive), or unit-float ``(h, w, L)``
            / ``(H, W, l)`` spectral images (degraded ones under the Wald protocol).
        reference: Wald protocol: the unit-float original A the fused image is compared with; else None.
        ratio: spectral tasks: the resolution ratio between ``image_b`` and ``image_a``; additive: None.
        source_a, source_b: what the full-resolution scores compare with (the original A and B); additive: the
            sources.
    """

    image_a: np.ndarray
    image_b: np.ndarray
    reference: np.ndarray | None = None
    ratio: int | None = None
    source_a: np.ndarray | None = None
    source_b: np.ndarray | None = None


def _as_cube(image: np.ndarray) -> np.ndarray:
    from maugif_core.imaging import to_unit_float

    unit = to_unit_float(np.asarray(image))
    return unit[..., None] if unit.ndim == 2 else unit


def _integer_ratio(low: np.ndarray, high: np.ndarray) -> int:
    (h, w), (H, W) = low.shape[:2], high.shape[:2]
    if H % h or W % w or H // h != W // w:
        raise ValueError(
            f"image_b {H}x{W} is not an integer multiple of image_a {h}x{w} (ratios {H / h:.4g}, {W / w:.4g})"
        )
    return H // h


def crop_to_ratio(image_a: np.ndarray, image_b: np.ndarray, ratio: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop A (low-res) so that its sides are multiples of ``factor``, and B (``ratio`` × A) to match.

    Raises:
        ValueError: A is smaller than ``factor`` in a side.
    """
    h, w = (image_a.shape[0] // factor) * factor, (image_a.shape[1] // factor) * factor
    if h == 0 or w == 0:
        raise ValueError(f"image_a {image_a.shape[0]}x{image_a.shape[1]} is smaller than the ratio {factor}")
    return image_a[:h, :w], image_b[: h * ratio, : w * ratio]


def wald_degrade(image: np.ndarray, ratio: int, nyquist_gain: float) -> np.ndarray:
    """Wald-protocol degradation of a ``(H, W, C)`` unit-float image: per band, a Gaussian low-pass with gain
    ``nyquist_gain`` at the low-resolution Nyquist frequency, then one pixel per ``ratio`` × ``ratio`` cell
    (:func:`maugif_core.metrics.degrade_pan`). H and W must be multiples of ``ratio``.

    Returns:
        ``(H / ratio, W / ratio, C)`` float32.
    """
    from maugif_core.metrics import degrade_pan

    cube = _as_cube(image)
    bands = [degrade_pan(cube[..., c].astype(np.float64), ratio, nyquist_gain) for c in range(cube.shape[2])]
    return np.stack(bands, axis=2).astype(np.float32)


def prepare_scene(image_a: np.ndarray, image_b: np.ndarray, config: EvalJobConfig) -> Scene:
    """The :class:`Scene` of a decoded pair under the configured task and protocol.

    Raises:
        ValueError: a spectral pair without an integer ratio, a same-grid pair without ``same_grid_ratio``
            (Wald) or under the full-resolution protocol, or an image too small for the ratio.
    """
    if config.mechanism == "additive":
        return Scene(image_a, image_b, source_a=image_a, source_b=image_b)
    low, high = _as_cube(image_a), _as_cube(image_b)
    ratio = _integer_ratio(low, high)
    if config.protocol == "full":
        if ratio < 2:
            raise ValueError(
                f"full-resolution protocol needs image_b at an integer ratio >= 2 of image_a, got ratio "
                f"{ratio} ({low.shape[0]}x{low.shape[1]} and {high.shape[0]}x{high.shape[1]})"
            )
        return Scene(low, high, ratio=ratio, source_a=low, source_b=high)
    if ratio == 1:
        if config.same_grid_ratio is None:
            raise ValueError(
                "image_a and image_b share one grid (ratio 1): set same_grid_ratio to degrade image_a by it "
                "(Wald protocol), or use a pair at an integer ratio >= 2"
            )
        factor = config.same_grid_ratio
        low, high = crop_to_ratio(low, high, 1, factor)
        degraded_a = wald_degrade(low, factor, config.nyquist_gain_a)
        return Scene(degraded_a, high, reference=low, ratio=factor, source_a=low, source_b=high)
    low, high = crop_to_ratio(low, high, ratio, ratio)
    degraded_a = wald_degrade(low, ratio, config.nyquist_gain_a)
    degraded_b = wald_degrade(high, ratio, config.nyquist_gain_b)
    return Scene(degraded_a, degraded_b, reference=low, ratio=ratio, source_a=low, source_b=high)


# ------------------------------------------------------------------------------------------------------------
# Peers (optional dependencies)
# ------------------------------------------------------------------------------------------------------------


def _rgb_indices(meta: dict[str, Any], bands: int) -> list[int]:
    """Band indices of red, green, blue from the GeoTIFF band descriptions, else the first three bands."""
    names = [str(d or "").strip().lower() for d in meta.get("descriptions") or []]
    found = [names.index(c) for c in ("red", "green", "blue") if c in names]
    if len(found) == 3 and max(found) < bands:
        return found
    if bands < 3:
        raise ValueError(f"rio_brovey needs at least 3 bands in image_a, got {bands}")
    return [0, 1, 2]


def fuse_rio_brovey(low: np.ndarray, high: np.ndarray, ratio: int, rgb: list[int], weight: float = 0.2) -> np.ndarray:
    """rio-pansharpen's Brovey (its ``pansharpen`` function: bilinear ``reproject`` upsampling, nodata mask,
    ``Brovey`` with the CLI's default weight 0.2) on unit-float data.

    The Brovey ratio comes from the R, G, B bands (``rgb``) as rio-pansharpen defines it and multiplies every
    band. Data go in scaled to the uint16 range (rio-pansharpen clips to the PAN dtype's integer range) and
    come back in unit range. The pair carries no CRS, so a placeholder projected CRS and pixel-size transforms
    stand in for the georeferencing rio-pansharpen requires.

    Raises:
        ImportError: rio-pansharpen is not installed.
    """
    from affine import Affine
    from rio_pansharpen.worker import pansharpen

    order = rgb + [b for b in range(low.shape[2]) if b not in rgb]
    scale = float(np.iinfo(np.uint16).max)
    vis = np.ascontiguousarray((low[..., order] * scale).transpose(2, 0, 1), dtype=np.float32)
    pan = (high.mean(axis=2) if high.shape[2] > 1 else high[..., 0]).astype(np.float32) * scale
    # North-up grids with the origin at the top-left corner (y = H); an origin at y = 0 (the image below the
    # x axis) makes rasterio's reproject return zeros here.
    top = float(high.shape[0])
    sharp = pansharpen(
        vis, Affine(float(ratio), 0, 0, 0, -float(ratio), top), pan, Affine(1.0, 0, 0, 0, -1.0, top),
        np.uint16, "EPSG:3857", "EPSG:3857", weight, method="Brovey", src_nodata=0,
    )  # fmt: skip
    out = np.empty((high.shape[0], high.shape[1], low.shape[2]), np.float32)
    out[..., order] = sharp.transpose(1, 2, 0).astype(np.float32) / scale
    return out


def fuse_mertens(image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """OpenCV's Mertens exposure fusion of two images (grey ones as three equal channels), in A's dtype.

    Raises:
        ImportError: OpenCV (``opencv-python-headless``) is not installed.
    """
    import cv2

    from maugif_core.imaging import from_unit_float, to_unit_float

    def bgr(image: np.ndarray) -> np.ndarray:
        unit = to_unit_float(image)
        if unit.ndim == 2:
            unit = unit[..., None]
        unit = unit[..., :3]
        if unit.shape[2] == 1:
            unit = np.repeat(unit, 3, axis=2)
        # OpenCV's Mertens takes 8-bit-range data (a float input in [0, 1] comes back 255 times too dark).
        return np.ascontiguousarray(unit[..., ::-1] * 255.0, dtype=np.float32)

    fused = cv2.createMergeMertens().process([bgr(image_a), bgr(image_b)])[..., ::-1]
    if image_a.ndim == 2 or image_a.shape[2] == 1:
        fused = fused.mean(axis=2) if image_a.ndim == 2 else fused.mean(axis=2, keepdims=True)
    return from_unit_float(np.ascontiguousarray(fused), image_a.dtype)


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
            return baselines.fuse(base, scene.image_a, scene.image_b, task=self.config.task)
        if base == MAUGIF:
            import maugif_core

            model = maugif_core.build_model(task, **self.config.multiplicative)
            return model.fuse(scene.image_a, scene.image_b, refit=True)
        if base == "rio_brovey":
            rgb = _rgb_indices(meta_a, scene.image_a.shape[2])
            return fuse_rio_brovey(scene.image_a, scene.image_b, scene.ratio or 1, rgb)
        return baselines.fuse(base, scene.image_a, scene.image_b, task=task)

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

    from pipeline.io.pairs import read_pairs
    from pipeline.io.readers import decode_pair

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
