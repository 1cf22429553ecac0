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

Values outside uint8/uint16 (float rasters of any range, int16 ...), NaN / +-Inf (nodata whether declared or not)
and the output's nodata follow :mod:`pipeline.io.radiometry`; band stacks (channel counts other than 1, 3, 4) follow
:func:`maugif_core.additive.compose_colour` (the intensity change added to every band).

With ``method`` other than ``maugif`` every pair goes to a registered :class:`~maugif_core.methods.FusionMethod`
instead (a classical baseline or a ``maugif.methods`` plugin; :mod:`pipeline.fuse.method_fusion`), tiled with the
method's declared halo.

A pair that fails here becomes a failure row (``error_stage=fuse``); it never raises out of the batch.
Rows need ``image_a`` and ``image_b`` (``(H, W, C)`` or ``(H, W)`` arrays, or their ``.npy`` bytes) and
``task``; ``meta_a`` / ``meta_b`` (JSON) are optional (without them: no nodata). The ``fused`` column is
channel-last ``(H, W, C)``, as ``maugif_core`` returns it (a 2-D A gives ``(H, W)``), carried as ``.npy`` bytes
(:func:`pipeline.schema.encode_array`) like the detail maps, so ok and failed rows of any size and dtype share one
Arrow type; the decoded inputs are dropped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline import schema as S
from pipeline.config.io_config import FrozenConfig
from pipeline.fuse.job_metrics import JobMetrics
from pipeline.fuse.memory import release_heap
from pipeline.fuse.predictor_rows import (
    GREY,
    chw_to_hwc,
    failed_row,
    fused_row,
    hwc3,
    passthrough,
    read_meta,
    to_columns,
    to_rows,
    with_scene,
)
from pipeline.fuse.scene_tiles import fuse_tile_row, is_tile_row
from pipeline.io.radiometry import nodata_value, union_mask

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
    method: str = Field(
        "maugif",
        description="Fusion method (maugif_core.methods registry): maugif, a classical baseline or a "
        "maugif.methods plugin.",
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


def _to_unit(image_a: np.ndarray, image_b: np.ndarray, meta_a: dict, meta_b: dict) -> _Prepared:
    """Both images in unit float32 with their invalid pixels (nodata, NaN, +/-Inf) masked and set to 0, each mapped
    on its own (:mod:`pipeline.io.radiometry`)."""
    from pipeline.io.radiometry import fill_value, invalid_mask, unit_mapping

    nodata_a, nodata_b = nodata_value(meta_a), nodata_value(meta_b)
    mask_a, mask_b = invalid_mask(image_a, nodata_a), invalid_mask(image_b, nodata_b)
    map_a, map_b = unit_mapping(image_a, mask_a), unit_mapping(image_b, mask_b)
    return _Prepared(
        map_a.to_unit(image_a, mask_a),
        map_b.to_unit(image_b, mask_b),
        mask_a,
        mask_b,
        map_a,
        fill_value(image_a.dtype, nodata_a, nodata_b),
    )


@dataclass(frozen=True)
class _Prepared:
    """A pair in unit float (``(H, W, C)`` float32, invalid pixels 0), its masks and A's way back."""

    unit_a: np.ndarray
    unit_b: np.ndarray
    mask_a: np.ndarray | None  # (h, w) on A's grid
    mask_b: np.ndarray | None  # (H, W) on B's grid
    map_a: Any  # pipeline.io.radiometry.UnitMapping of A
    fill: float  # output value of pixels invalid in A or B

    def output_mask(self, ratio: int = 1) -> np.ndarray | None:
        """Pixels invalid in A (upsampled by ``ratio`` onto B's grid) or in B."""
        mask = self.mask_a
        if mask is not None and ratio > 1:
            mask = np.repeat(np.repeat(mask, ratio, axis=0), ratio, axis=1)
        return union_mask(mask, self.mask_b)

    def apply_fill(self, fused_chw: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """``(C, H, W)`` output with ``fill`` wherever ``mask`` is set."""
        if mask is None or not mask.any():
            return fused_chw
        return np.where(mask[None], np.asarray(self.fill).astype(fused_chw.dtype), fused_chw)


def load_additive_model(task: str, checkpoint: str | None) -> torch.nn.Module:
    """The additive model of ``task``: ``checkpoint`` (any URI) when given, else the bundled pretrained model."""
    import maugif_core

    model = load_model_uri(checkpoint) if checkpoint else maugif_core.pretrained(task)
    if model.mechanism != "additive":
        raise ValueError(f"checkpoint for task {task!r} holds a {model.mechanism} model")
    return model.eval()


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
        self._method: Any = None
        self._method_error: str | None = None
        if cfg.method != "maugif":
            from maugif_core.methods import get_method

            try:
                self._method = get_method(cfg.method)  # once per actor, like the models
            except Exception as e:  # e.g. a plugin installed on the driver but not on this worker's node
                # Each pair fails with the reason (and the job reports it) instead of the actor dying in a loop.
                self._method_error = f"method {cfg.method!r} cannot be loaded on this worker: {e}"

    # ------------------------------------------------------------------ models
    def additive_model(self, task: str) -> torch.nn.Module:
        """The actor's model for an additive task, loaded on first use and kept."""
        model = self._additive.get(task)
        if model is None:
            model = load_additive_model(task, self.config.checkpoints.get(task)).to(self.device)
            self._additive[task] = model
        return model

    # ------------------------------------------------------------------ batch entry point
    def __call__(self, batch: Any) -> dict[str, list]:
        rows = to_rows(batch)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        groups: dict[tuple, list[int]] = defaultdict(list)
        import maugif_core

        for i, row in enumerate(rows):
            if row.get(S.STATUS) in (S.STATUS_FAILED, S.STATUS_SKIPPED):
                out[i] = passthrough(row)
                continue
            task = row.get(S.TASK) or ""
            if is_tile_row(row):  # one tile of a scene fused window by window (pipeline.fuse.scene_tiles)
                try:
                    fused, seconds = fuse_tile_row(self, row)
                    out[i] = {
                        k: v for k, v in fused_row(row, chw_to_hwc(fused), None, seconds).items() if k != S.SCENE_STATE
                    }
                except Exception as e:
                    out[i] = failed_row(row, e)
                continue
            try:
                image_a, image_b = S.decode_array(row.get(S.IMAGE_A)), S.decode_array(row.get(S.IMAGE_B))
                if image_a is None or image_b is None:
                    raise ValueError("row has no decoded images: expected image_a and image_b from decode_row")
                grey = image_a.ndim == 2
                image_a, image_b = hwc3(image_a, "image_a"), hwc3(image_b, "image_b")
                rows[i] = row = {**row, S.IMAGE_A: image_a, S.IMAGE_B: image_b, GREY: grey}
                meta_a, meta_b = read_meta(row.get(S.META_A)), read_meta(row.get(S.META_B))
                if self._method_error is not None:
                    raise RuntimeError(self._method_error)
                if self._method is not None:
                    out[i] = self._fuse_with_method(row, task, image_a, image_b, meta_a, meta_b)
                    continue
                small = image_b.shape[0] * image_b.shape[1] <= self.config.max_untiled_pixels
                plain = nodata_value(meta_a) is None and nodata_value(meta_b) is None
                natural = image_a.dtype in _NATIVE_DTYPES and image_b.dtype in _NATIVE_DTYPES
                if task in maugif_core.ADDITIVE_TASKS and small and plain and natural:
                    groups[(task, image_a.shape, image_b.shape, image_a.dtype.str)].append(i)
                    continue
                started = time.perf_counter()
                fused, details, scene = self._fuse_one(task, image_a, image_b, meta_a, meta_b, row.get(S.PAIR_ID))
                out[i] = fused_row(with_scene(row, scene), chw_to_hwc(fused), details, time.perf_counter() - started)
            except Exception as e:  # a bad pair becomes a failure row, never an actor crash
                out[i] = failed_row(row, e)
        for (task, *_), indices in groups.items():
            self._fuse_group(task, rows, indices, out)
        done = [r for r in out if r is not None]
        del rows, batch
        release_heap()  # this batch's windows and intermediates: the actor's heap does not grow with tiles fused
        for row in done:
            if row[S.STATUS] == S.STATUS_OK:
                self.metrics.pairs("fused", 1, task=row.get(S.TASK) or "")
            elif row.get(S.ERROR_STAGE) == S.STAGE_FUSE:
                self.metrics.pairs("failed", 1, stage=S.STAGE_FUSE)
        return to_columns(done)

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
                    fused, details, _ = self._fuse_one(
                        task, np.asarray(row[S.IMAGE_A]), np.asarray(row[S.IMAGE_B]), {}, {}
                    )
                    out[i] = fused_row(row, chw_to_hwc(fused), details, time.perf_counter() - t0)
                except Exception as e:
                    out[i] = failed_row(rows[i], e)
            return
        per_pair = (time.perf_counter() - started) / len(indices)
        for k, (i, prep) in enumerate(zip(indices, prepared, strict=True)):
            try:
                fused = compose_colour(fused_y[k, 0], prep, model.config.chroma)
                details = None
                if self.config.details:
                    details = {"detail_b": detail_b[k, 0], "detail_a": detail_a[k, 0]}
                out[i] = fused_row(rows[i], fused if fused.ndim == 3 else fused[..., None], details, per_pair)
            except Exception as e:
                out[i] = failed_row(rows[i], e)

    def _fuse_with_method(self, row, task, image_a, image_b, meta_a, meta_b) -> dict[str, Any]:
        """One pair through the job's registered (non-MAUGIF) method; see :mod:`pipeline.fuse.method_fusion`."""
        from pipeline.fuse.method_fusion import fuse_with_method

        started = time.perf_counter()
        fused = fuse_with_method(
            self._method,
            task,
            image_a,
            image_b,
            meta_a,
            meta_b,
            tile_size=self.config.tile_size,
            max_untiled_pixels=self.config.max_untiled_pixels,
        )
        return fused_row(row, fused, None, time.perf_counter() - started)

    def _autocast(self) -> bool:
        return self.config.autocast and self.device.type == "cuda"

    # ------------------------------------------------------------------ one pair (tiled / rasters / multiplicative)
    def _fuse_one(
        self, task: str, image_a: np.ndarray, image_b: np.ndarray, meta_a: dict, meta_b: dict, pair_id: Any = None
    ) -> tuple[np.ndarray, dict | None, dict | None]:
        """Fuse one pair: the fused image ``(C, H, W)``, its detail maps (additive, when asked) and what a
        multiplicative pair's fit estimated (:attr:`~maugif_core.multiplicative.MultiplicativeFusion.details`,
        for the manifest's extras), else None."""
        import maugif_core
        from pipeline.io.tiling import fuse_tiled

        image_a, image_b = (x if x.ndim == 3 else x[..., None] for x in (image_a, image_b))  # (H, W, C)
        prepared = _to_unit(image_a, image_b, meta_a, meta_b)
        cfg = self.config
        if task in maugif_core.MULTIPLICATIVE_TASKS:
            from pipeline.fuse.progress import report_scene
            from pipeline.fuse.scene_state import registration_for

            model = maugif_core.build_model(task, **cfg.multiplicative_overrides).to(self.device)
            report_scene(cfg.progress_actor, str(pair_id), "start")
            try:
                model.fit(
                    prepared.unit_a,  # invalid pixels are 0 there
                    prepared.unit_b,
                    registration=registration_for(meta_a, meta_b),  # from the georeferencing, when both have one
                )
            finally:
                report_scene(cfg.progress_actor, str(pair_id), "end")
            fuse_fn = self._multiplicative_tile_fn(model)
            ratio = model.ratio
        elif task in maugif_core.ADDITIVE_TASKS:
            model = self.additive_model(task)
            return (*self._fuse_additive_tiled(model, image_a, prepared), None)
        else:
            raise ValueError(f"unknown task {task!r}: expected one of {', '.join(maugif_core.TASKS)}")
        fused = fuse_tiled(
            fuse_fn,
            np.moveaxis(prepared.unit_a, 2, 0),
            np.moveaxis(prepared.unit_b, 2, 0),
            cfg.tile_size,
            model.receptive_field_radius,
            ratio,
        )
        fused = prepared.apply_fill(prepared.map_a.from_unit(fused), prepared.output_mask(ratio))
        return fused, None, model.details

    def _multiplicative_tile_fn(self, model: torch.nn.Module):
        device = self.device

        def fuse_fn(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                a = torch.from_numpy(np.ascontiguousarray(tile_a, dtype=np.float32))[None].to(device)
                b = torch.from_numpy(np.ascontiguousarray(tile_b, dtype=np.float32))[None].to(device)
                return model.fuse_tensor(a, b)[0].float().cpu().numpy()

        return fuse_fn

    def _fuse_additive_tiled(self, model, image_a: np.ndarray, prepared: _Prepared):
        from maugif_core.additive import compose_colour, prepare_pair
        from pipeline.io.tiling import fill_nodata, fuse_tiled

        cfg = self.config
        prep = prepare_pair(prepared.unit_a, prepared.unit_b)
        mask = prepared.output_mask()
        luma_a, luma_b = fill_nodata(prep.luma_a, mask, 0.0), fill_nodata(prep.luma_b, mask, 0.0)
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
        fused = compose_colour(fused_y, prep, model.config.chroma)  # (H, W, C) unit float32
        # Unit float → A's dtype: scaled, not truncated (uint8 / uint16 tiles come back in full range); stretched
        # data gets the change fusion made added to its own values (pipeline.io.radiometry).
        fused = prepared.map_a.from_unit_residual(fused, prepared.unit_a, image_a)
        fused = prepared.apply_fill(np.moveaxis(fused, 2, 0), mask)
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
