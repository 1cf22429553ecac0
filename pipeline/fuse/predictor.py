"""The fusion predictor: a callable class for ``Dataset.map_batches`` that holds the models of one actor.

Each actor loads its additive model(s) once (from a local path, an ``s3://`` URI or the bundled pretrained weights)
and fuses every decoded pair it is handed:

* additive pairs up to ``max_untiled_pixels`` with no nodata are fused in batches of same-size images (one forward
  pass per size group; per-image BatchNorm statistics make the result independent of the batch);
* larger pairs, and rasters with nodata, go through :func:`pipeline.io.tiling.fuse_tiled` with a halo of the model's
  receptive-field radius; the per-image BatchNorm statistics are computed once over the whole image (or a decimated
  overview above ``stats_max_pixels``) and frozen for all its tiles, so tiled output equals whole-image output;
* multiplicative pairs (``pansharpen``, ``hsi_msi``) are fitted per scene (spectral basis + encoder/decoder), then
  fused whole or in tiles with the scene's fitted state.

A pair that fails here becomes a failure row (``error_stage=fuse``); it never raises out of the batch.
The ``fused`` column is channel-first ``(C, H, W)`` (what the sinks write), carried as ``.npy`` bytes
(:func:`pipeline.schema.encode_array`) like the detail maps, so ok and failed rows of any size and dtype share one
Arrow type; the decoded inputs are dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline import schema as S
from pipeline.config.io_config import FrozenConfig
from pipeline.fuse.job_metrics import JobMetrics
from pipeline.fuse.scene_tiles import fuse_tile_row, is_tile_row

logger = logging.getLogger(__name__)

__all__ = ["FusionPredictor", "PredictorConfig", "load_model_uri"]

_NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


class PredictorConfig(FrozenConfig):
    """What a predictor actor needs; plain data, built into models inside the actor."""

    checkpoints: dict[str, str] = Field(
        default_factory=dict,
        description="Task → checkpoint URI (local path, file:// or s3://). Tasks not listed use the bundled "
        "pretrained model of the task.",
    )
    multiplicative_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Config overrides of the per-scene multiplicative fit (steps, lr, ...).",
    )
    tile_size: PositiveInt = Field(1024, description="Core tile size (output grid pixels) for tiled fusion.")
    max_untiled_pixels: PositiveInt = Field(
        4096 * 4096, description="Images with more pixels than this are fused tile by tile."
    )
    stats_max_pixels: PositiveInt | None = Field(
        None,
        description="Per-image BatchNorm statistics of larger images come from a decimated overview of at most "
        "this many pixels (None: always the full image).",
    )
    details: bool = Field(False, description="Also return both detail (contribution) maps of additive pairs.")
    device: str = Field("auto", description="'auto' (CUDA when the actor has a GPU), 'cpu' or 'cuda'.")
    torch_threads: NonNegativeInt = Field(0, description="torch intra-op threads per actor (0: leave as is).")
    autocast: bool = Field(False, description="bfloat16 autocast for the additive forward pass on CUDA.")
    max_batch_pixels: PositiveInt | None = Field(
        None,
        description="Most pixels (batch × height × width) in one additive forward pass; same-size pairs beyond it "
        "are fused in several passes. None: 65,536 on CPU (batching larger images is slower there: caches), "
        "16,777,216 on CUDA.",
    )
    read: dict[str, Any] = Field(
        default_factory=dict, description="ReadConfig fields, for scene tile rows read by the actor."
    )
    storage: dict[str, Any] = Field(
        default_factory=dict, description="StorageConfig fields, for scene tile rows read by the actor."
    )
    job: str = Field("maugif", description="Job tag of the exported metrics.")
    progress_actor: str | None = Field(
        None, description="Name of the job's progress counter actor, told when a per-scene fit starts and ends."
    )


def load_model_uri(uri: str, *, expect_task: str | None = None) -> torch.nn.Module:
    """Load a maugif_core checkpoint from a local path or any fsspec URI (``s3://`` included).

    A training output location is accepted too: its ``final/model.safetensors`` export is used.
    """
    from maugif_core import load_checkpoint
    from pipeline.io.fsutil import filesystem_for

    fs, path = filesystem_for(uri)
    candidates = (
        [path]
        if path.endswith(".safetensors")
        else [
            f"{path.rstrip('/')}/model.safetensors",
            f"{path.rstrip('/')}/final/model.safetensors",
        ]
    )
    for candidate in candidates:
        if fs.isfile(candidate):
            with fs.open(candidate, "rb") as f:
                return load_checkpoint(f.read(), expect_task=expect_task)
    raise FileNotFoundError(f"checkpoint {uri!r}: none of {candidates} exists")


def _stretch(image_a: np.ndarray, image_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """Map both images to unit float when their dtype has no natural [0, 1] mapping (int16, int32, float data
    outside [0, 1]): one linear stretch over both images' finite values. Returns the inverse for the output."""
    if image_a.dtype in _NATIVE_DTYPES and image_b.dtype in _NATIVE_DTYPES:
        return image_a, image_b, None
    a = image_a.astype(np.float32)
    b = image_b.astype(np.float32)
    if image_a.dtype.kind == "f" and image_b.dtype.kind == "f":
        finite = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
        if finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0):
            return a, b, None
    finite = np.concatenate([a[np.isfinite(a)].ravel(), b[np.isfinite(b)].ravel()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = hi - lo if hi > lo else 1.0
    dtype = image_a.dtype

    def inverse(fused: np.ndarray) -> np.ndarray:
        out = fused.astype(np.float64) * scale + lo
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(dtype)
        return out.astype(dtype)

    return (a - lo) / scale, (b - lo) / scale, inverse


def _nodata(meta: dict[str, Any]) -> float | None:
    value = meta.get("nodata")
    return None if value is None else float(value)


class FusionPredictor:
    """Callable class for ``ray.data.Dataset.map_batches`` (``batch_format="pandas"`` or ``"numpy"``)."""

    def __init__(self, config: PredictorConfig | dict[str, Any]) -> None:
        self.config = config if isinstance(config, PredictorConfig) else PredictorConfig(**config)
        cfg = self.config
        if cfg.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.metrics = JobMetrics(cfg.job)
        if cfg.max_batch_pixels is not None:
            self.max_batch_pixels = cfg.max_batch_pixels
        else:
            self.max_batch_pixels = 4096 * 4096 if self.device.type == "cuda" else 256 * 256
        self._additive: dict[str, torch.nn.Module] = {}

    # ------------------------------------------------------------------ models
    def additive_model(self, task: str) -> torch.nn.Module:
        """The actor's model for an additive task, loaded on first use and kept."""
        model = self._additive.get(task)
        if model is None:
            import maugif_core

            uri = self.config.checkpoints.get(task)
            model = load_model_uri(uri) if uri else maugif_core.pretrained(task)
            if model.mechanism != "additive":
                raise ValueError(f"checkpoint for task {task!r} holds a {model.mechanism} model")
            model = model.to(self.device).eval()
            self._additive[task] = model
        return model

    # ------------------------------------------------------------------ batch entry point
    def __call__(self, batch: Any) -> dict[str, list]:
        rows = _to_rows(batch)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        groups: dict[tuple, list[int]] = defaultdict(list)
        import maugif_core

        for i, row in enumerate(rows):
            if row.get(S.STATUS) in (S.STATUS_FAILED, S.STATUS_SKIPPED):
                out[i] = _passthrough(row)
                continue
            task = row.get(S.TASK) or ""
            if is_tile_row(row):  # one tile of a scene fused window by window (pipeline.scene_tiles)
                try:
                    fused, seconds = fuse_tile_row(self, row)
                    out[i] = {k: v for k, v in _fused_row(row, fused, None, seconds).items() if k != S.SCENE_STATE}
                except Exception as e:
                    out[i] = _failed_row(row, e)
                continue
            try:
                image_a, image_b = S.decode_array(row[S.IMAGE_A]), S.decode_array(row[S.IMAGE_B])
                if image_a is None or image_b is None:
                    raise ValueError("row has no decoded images: expected image_a and image_b from decode_row")
                rows[i] = {**row, S.IMAGE_A: image_a, S.IMAGE_B: image_b}
                meta_a, meta_b = json.loads(row[S.META_A]), json.loads(row[S.META_B])
                small = image_b.shape[0] * image_b.shape[1] <= self.config.max_untiled_pixels
                plain = _nodata(meta_a) is None and _nodata(meta_b) is None
                natural = image_a.dtype in _NATIVE_DTYPES and image_b.dtype in _NATIVE_DTYPES
                if task in maugif_core.ADDITIVE_TASKS and small and plain and natural:
                    groups[(task, image_a.shape, image_b.shape, image_a.dtype.str)].append(i)
                    continue
                started = time.perf_counter()
                fused, details = self._fuse_one(task, image_a, image_b, meta_a, meta_b, row.get(S.PAIR_ID))
                out[i] = _fused_row(row, fused, details, time.perf_counter() - started)
            except Exception as e:  # a bad pair becomes a failure row, never an actor crash
                out[i] = _failed_row(row, e)
        for (task, *_), indices in groups.items():
            self._fuse_group(task, rows, indices, out)
        done = [r for r in out if r is not None]
        for row in done:
            if row[S.STATUS] == S.STATUS_OK:
                self.metrics.pairs("fused", 1, task=row.get(S.TASK) or "")
            elif row.get(S.ERROR_STAGE) == S.STAGE_FUSE:
                self.metrics.pairs("failed", 1, stage=S.STAGE_FUSE)
        return _to_columns(done)

    # ------------------------------------------------------------------ additive, batched
    def _fuse_group(self, task: str, rows: list[dict], indices: list[int], out: list) -> None:
        from maugif_core.additive import compose_colour, prepare_pair

        started = time.perf_counter()
        try:
            model = self.additive_model(task)
            prepared = [prepare_pair(np.asarray(rows[i][S.IMAGE_A]), np.asarray(rows[i][S.IMAGE_B])) for i in indices]
            height, width = prepared[0].luma_a.shape
            per_pass = max(1, self.max_batch_pixels // (height * width))
            fused_parts, detail_b_parts, detail_a_parts = [], [], []
            for start in range(0, len(prepared), per_pass):
                chunk = prepared[start : start + per_pass]
                luma_a = torch.from_numpy(np.stack([p.luma_a for p in chunk]))[:, None].to(self.device)
                luma_b = torch.from_numpy(np.stack([p.luma_b for p in chunk]))[:, None].to(self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast()):
                    fused_y, detail_b, detail_a = model.fuse_luma(luma_a, luma_b, details=self.config.details)
                fused_parts.append(fused_y.float().cpu().numpy())
                if self.config.details:
                    detail_b_parts.append(detail_b.float().cpu().numpy())
                    detail_a_parts.append(detail_a.float().cpu().numpy())
            fused_y = np.concatenate(fused_parts)
            if self.config.details:
                detail_b, detail_a = np.concatenate(detail_b_parts), np.concatenate(detail_a_parts)
        except Exception:
            # Fall back to one pair at a time so that one bad pair cannot fail its whole size group.
            for i in indices:
                try:
                    row = rows[i]
                    t0 = time.perf_counter()
                    fused, details = self._fuse_one(
                        task, np.asarray(row[S.IMAGE_A]), np.asarray(row[S.IMAGE_B]), {}, {}
                    )
                    out[i] = _fused_row(row, fused, details, time.perf_counter() - t0)
                except Exception as e:
                    out[i] = _failed_row(rows[i], e)
            return
        per_pair = (time.perf_counter() - started) / len(indices)
        for k, (i, prep) in enumerate(zip(indices, prepared, strict=True)):
            try:
                fused = compose_colour(fused_y[k, 0], prep, model.config.chroma)
                details = None
                if self.config.details:
                    details = {"detail_b": detail_b[k, 0], "detail_a": detail_a[k, 0]}
                out[i] = _fused_row(rows[i], _to_chw(fused), details, per_pair)
            except Exception as e:
                out[i] = _failed_row(rows[i], e)

    def _autocast(self) -> bool:
        return self.config.autocast and self.device.type == "cuda"

    # ------------------------------------------------------------------ one pair (tiled / rasters / multiplicative)
    def _fuse_one(
        self, task: str, image_a: np.ndarray, image_b: np.ndarray, meta_a: dict, meta_b: dict, pair_id: Any = None
    ) -> tuple[np.ndarray, dict | None]:
        import maugif_core
        from pipeline.io.tiling import fuse_tiled

        nodata_a, nodata_b = _nodata(meta_a), _nodata(meta_b)
        unit_a, unit_b, inverse = _stretch(image_a, image_b)
        cfg = self.config
        if task in maugif_core.MULTIPLICATIVE_TASKS:
            from pipeline.fuse.progress import report_scene
            from pipeline.fuse.scene_state import registration_for

            model = maugif_core.build_model(task, **cfg.multiplicative_overrides).to(self.device)
            report_scene(cfg.progress_actor, str(pair_id), "start")
            try:
                model.fit(
                    _fill(unit_a, nodata_a, image_a),
                    _fill(unit_b, nodata_b, image_b),
                    registration=registration_for(meta_a, meta_b),  # from the georeferencing, when both have one
                )
            finally:
                report_scene(cfg.progress_actor, str(pair_id), "end")
            fuse_fn = self._multiplicative_tile_fn(model)
            ratio = model.ratio
        elif task in maugif_core.ADDITIVE_TASKS:
            model = self.additive_model(task)
            return self._fuse_additive_tiled(model, image_a, image_b, unit_a, unit_b, nodata_a, nodata_b, inverse)
        else:
            raise ValueError(f"unknown task {task!r}: expected one of {', '.join(maugif_core.TASKS)}")
        a_chw = np.moveaxis(_as_unit(unit_a), 2, 0)
        b_chw = np.moveaxis(_as_unit(unit_b), 2, 0)
        fused = fuse_tiled(
            fuse_fn,
            a_chw,
            b_chw,
            cfg.tile_size,
            model.receptive_field_radius,
            ratio,
            nodata_a=_unit_nodata(nodata_a, image_a, inverse),
            nodata_b=_unit_nodata(nodata_b, image_b, inverse),
            nodata_out=-1.0,
        )
        return _restore(fused, image_a, inverse, nodata_a), None

    def _multiplicative_tile_fn(self, model: torch.nn.Module):
        device = self.device

        def fuse_fn(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                a = torch.from_numpy(np.ascontiguousarray(tile_a, dtype=np.float32))[None].to(device)
                b = torch.from_numpy(np.ascontiguousarray(tile_b, dtype=np.float32))[None].to(device)
                return model.fuse_tensor(a, b)[0].float().cpu().numpy()

        return fuse_fn

    def _fuse_additive_tiled(self, model, image_a, image_b, unit_a, unit_b, nodata_a, nodata_b, inverse):
        from maugif_core.additive import compose_colour, prepare_pair
        from maugif_core.imaging import from_unit_float
        from pipeline.io.tiling import fill_nodata, fuse_tiled, nodata_mask

        cfg = self.config
        mask_a = nodata_mask(np.moveaxis(image_a, 2, 0), nodata_a)
        mask_b = nodata_mask(np.moveaxis(image_b, 2, 0), nodata_b)
        prep = prepare_pair(_as_unit(unit_a), _as_unit(unit_b))
        luma_a, luma_b = prep.luma_a, prep.luma_b
        mask = mask_a if mask_b is None else (mask_b if mask_a is None else mask_a | mask_b)
        luma_a, luma_b = fill_nodata(luma_a, mask, 0.0), fill_nodata(luma_b, mask, 0.0)
        device = self.device
        ta = torch.from_numpy(np.ascontiguousarray(luma_a))[None, None].to(device)
        tb = torch.from_numpy(np.ascontiguousarray(luma_b))[None, None].to(device)
        # Per-image BatchNorm: statistics of the whole image, frozen for its tiles; running statistics need none.
        per_image = model.config.bn_mode == "per_image"
        stats = model.compute_norm_stats(ta, tb, max_pixels=cfg.stats_max_pixels) if per_image else None

        def fuse_fn(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
            a = torch.from_numpy(np.ascontiguousarray(tile_a))[None, None].to(device)
            b = torch.from_numpy(np.ascontiguousarray(tile_b))[None, None].to(device)
            return model.fuse_luma(a, b, norm_stats=stats, details=False)[0][0, 0].float().cpu().numpy()

        halo = model.receptive_field_radius
        fused_y = fuse_tiled(fuse_fn, luma_a, luma_b, cfg.tile_size, halo)
        fused = compose_colour(fused_y, prep, model.config.chroma)  # (H, W[, C]) in unit-float A's dtype
        fused = fused if fused.ndim == 3 else fused[..., None]
        # Unit float → A's dtype: scaled, not truncated (uint8 / uint16 tiles come back in full range).
        fused = inverse(fused) if inverse is not None else from_unit_float(fused, image_a.dtype)
        fused = np.moveaxis(fused, 2, 0)
        if mask is not None:
            fill = nodata_a if nodata_a is not None else nodata_b
            fused = np.where(mask[None], np.asarray(fill).astype(fused.dtype), fused)
        details = None
        if cfg.details:
            d_b = fuse_tiled(_detail_fn(model, stats, device, "b"), luma_a, luma_b, cfg.tile_size, halo)
            d_a = fuse_tiled(_detail_fn(model, stats, device, "a"), luma_a, luma_b, cfg.tile_size, halo)
            details = {"detail_b": d_b, "detail_a": d_a}
        return fused, details


def _detail_fn(model, stats, device, which: str):
    def fn(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(np.ascontiguousarray(tile_a))[None, None].to(device)
        b = torch.from_numpy(np.ascontiguousarray(tile_b))[None, None].to(device)
        _, d_b, d_a = model.fuse_luma(a, b, norm_stats=stats, details=True)
        return (d_b if which == "b" else d_a)[0, 0].float().cpu().numpy()

    return fn


def _as_unit(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 → unit float32; floats already unit."""
    from maugif_core.imaging import to_unit_float

    return to_unit_float(image)


def _fill(unit: np.ndarray, nodata: float | None, raw: np.ndarray) -> np.ndarray:
    """Unit-float image with nodata pixels (any band) set to 0 so they do not drive the per-scene fit."""
    unit = _as_unit(unit)
    if nodata is None:
        return unit
    mask = (raw == nodata).all(axis=2) if not np.isnan(nodata) else np.isnan(raw).all(axis=2)
    return np.where(mask[..., None], 0.0, unit).astype(np.float32)


def _unit_nodata(nodata: float | None, raw: np.ndarray, inverse) -> float | None:
    """Nodata value as it appears in the unit-float copy of ``raw``."""
    if nodata is None:
        return None
    from maugif_core.imaging import to_unit_float

    if inverse is None:
        return float(to_unit_float(np.asarray([nodata], dtype=raw.dtype))[0])
    return None  # stretched data: the mask is computed on the raw array by the caller instead


def _restore(fused_unit_chw: np.ndarray, image_a: np.ndarray, inverse, nodata_a: float | None) -> np.ndarray:
    """Unit-float ``(C, H, W)`` (nodata marked -1) → A's dtype, nodata restored."""
    from maugif_core.imaging import from_unit_float

    mask = fused_unit_chw[0] < -0.5
    if inverse is not None:
        out = inverse(np.clip(fused_unit_chw, 0.0, 1.0))
    else:
        out = from_unit_float(fused_unit_chw, image_a.dtype)
    if mask.any():
        out = np.where(mask[None], np.asarray(nodata_a if nodata_a is not None else 0).astype(out.dtype), out)
    return out


def _to_chw(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` → ``(1, H, W)``; ``(H, W, C)`` → ``(C, H, W)``."""
    return image[None] if image.ndim == 2 else np.moveaxis(image, 2, 0)


def _fused_row(row: dict, chw: np.ndarray, details: dict | None, seconds: float) -> dict:
    """A success row; ``chw`` is the fused image, channel-first."""
    out = _base(row)
    out.update(
        {
            S.FUSED: S.encode_array(chw),
            S.STATUS: S.STATUS_OK,
            S.ERROR_STAGE: None,
            S.ERROR: None,
            S.SECONDS: float(row.get(S.SECONDS) or 0.0) + seconds,
        }
    )
    if details:
        out.update({k: S.encode_array(v) for k, v in details.items()})
    return out


def _failed_row(row: dict, error: BaseException) -> dict:
    logger.warning("fusing pair %s failed: %s", row.get(S.PAIR_ID), error)
    out = _base(row)
    out.update(
        {
            S.FUSED: None,
            S.STATUS: S.STATUS_FAILED,
            S.ERROR_STAGE: S.STAGE_FUSE,
            S.ERROR: f"{type(error).__name__}: {error}",
        }
    )
    return out


def _passthrough(row: dict) -> dict:
    out = _base(row)
    out[S.FUSED] = None
    return out


def _base(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in (S.IMAGE_A, S.IMAGE_B)}


def _to_rows(batch: Any) -> list[dict[str, Any]]:
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
        return batch.to_dict("records")
    columns = list(batch.keys())
    n = len(batch[columns[0]]) if columns else 0
    return [{c: batch[c][i] for c in columns} for i in range(n)]


def _to_columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys:
                keys.append(k)
    return {k: [row.get(k) for row in rows] for k in keys}
