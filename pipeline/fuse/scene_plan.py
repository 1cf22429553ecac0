"""Scenes of any size: a raster pair above ``tiling.window_min_pixels`` becomes tile rows (SPEC §2, §3).

:func:`plan_scene_rows` (for ``Dataset.flat_map``, between discovery and decoding) reads both rasters' headers
only (rasterio open, no pixels), plans the tile grid on the output grid (:func:`pipeline.io.tiling.plan_tiles`,
halo = the model's receptive-field radius, tile size ``tiling.tile_size``), computes the scene-level state once
from a decimated read (:mod:`pipeline.fuse.scene_state`) and emits one row per tile carrying its core window
(``WINDOW``, what the sink writes), its source windows (``READ_WINDOWS``: B's and A's windows plus halo, A's on
its own grid for pansharpen / hsi_msi) and the shared state (``SCENE_STATE``). Each tile row is then read
window by window (:func:`pipeline.fuse.scene_tiles.decode_tile_row`), fused in the actor pool
(:func:`pipeline.fuse.scene_tiles.fuse_tile_row`) and committed by the sink like any tiled raster (COG tiles, then
the STAC item and the VRT once every tile is written).

Rows that stay whole (plain images, rasters at or under the limit, off-grid multiplicative pairs that need
warping) pass through with the tile columns empty. Every row leaves with the same columns, so blocks of tile
rows and whole rows always concatenate. A scene whose headers or state cannot be read becomes one failure row.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from maugif_core.config import ADDITIVE_TASKS, MULTIPLICATIVE_TASKS
from pipeline import schema as S
from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.config.output_config import TilingConfig
from pipeline.errors import GridError, RasterReadError
from pipeline.fuse.memory import release_heap
from pipeline.fuse.scene_state import (
    SceneState,
    decimation_factor,
    dumps_state,
    mapping_from_dict,
    read_decimated,
    registration_for,
    scene_mappings,
)
from pipeline.io.radiometry import invalid_mask, nodata_value, union_mask
from pipeline.io.readers import PLAIN_SUFFIXES
from pipeline.io.tiling import fill_nodata, plan_tiles

__all__ = ["TILE_DEFAULTS", "plan_scene_rows", "scene_state_for"]

logger = logging.getLogger(__name__)

# The tile columns of a row that stays whole (TILE_ROW < 0 means "not a tile", see pipeline.fuse.sinks).
TILE_DEFAULTS: dict[str, Any] = {
    S.TILE_ROW: -1,
    S.TILE_COL: -1,
    S.WINDOW: None,
    S.READ_WINDOWS: None,
    S.SCENE_STATE: None,
}
_MODELS: dict[tuple[str, str | None], Any] = {}


def _whole(row: dict[str, Any]) -> list[dict[str, Any]]:
    defaults = {**TILE_DEFAULTS, S.META_A: None, S.META_B: None, S.ERROR_STAGE: None, S.ERROR: None, S.SECONDS: 0.0}
    return [{**defaults, **row}]


def _failed(row: dict[str, Any], stage: str, error: str) -> list[dict[str, Any]]:
    logger.warning("scene %s not planned: %s", row.get(S.PAIR_ID), error)
    out = _whole(row)[0]
    out.update({S.STATUS: S.STATUS_FAILED, S.ERROR_STAGE: stage, S.ERROR: error})
    return [out]


def _additive_model(task: str, checkpoints: dict[str, str]) -> Any:
    """The additive model of ``task`` as the predictor loads it (cached per process)."""
    key = (task, checkpoints.get(task))
    if key not in _MODELS:
        from pipeline.fuse.predictor import load_additive_model

        _MODELS[key] = load_additive_model(task, checkpoints.get(task))
    return _MODELS[key]


def _additive_state(
    task: str,
    uri_a: str,
    uri_b: str,
    meta_a: dict[str, Any],
    meta_b: dict[str, Any],
    *,
    tiling: TilingConfig,
    predictor: dict[str, Any],
    read: ReadConfig,
    storage: StorageConfig | None,
) -> SceneState:
    import torch

    from maugif_core.additive import prepare_pair

    model = _additive_model(task, predictor.get("checkpoints") or {})
    height, width = int(meta_b["height"]), int(meta_b["width"])
    k = decimation_factor(height, width, tiling.state_max_pixels)
    shape = (-(-height // k), -(-width // k))
    raw_a = read_decimated(uri_a, shape, config=read, storage=storage)
    raw_b = read_decimated(uri_b, shape, config=read, storage=storage)
    nodata_a, nodata_b = nodata_value(meta_a), nodata_value(meta_b)
    mapping_a, mapping_b = scene_mappings(raw_a, raw_b, nodata_a, nodata_b)
    state = SceneState(
        task=task, halo=int(model.receptive_field_radius), mapping_a=mapping_a, mapping_b=mapping_b, decimation=k
    )
    if model.config.bn_mode == "per_image":
        mask_a, mask_b = invalid_mask(raw_a, nodata_a), invalid_mask(raw_b, nodata_b)
        mask = union_mask(mask_a, mask_b)
        unit_a = mapping_from_dict(mapping_a).to_unit(raw_a, mask_a)
        unit_b = mapping_from_dict(mapping_b).to_unit(raw_b, mask_b)
        prep = prepare_pair(unit_a, unit_b)
        luma_a, luma_b = fill_nodata(prep.luma_a, mask, 0.0), fill_nodata(prep.luma_b, mask, 0.0)
        ta = torch.from_numpy(np.ascontiguousarray(luma_a))[None, None]
        tb = torch.from_numpy(np.ascontiguousarray(luma_b))[None, None]
        state.norm_stats = model.compute_norm_stats(ta, tb)
    return state


def _multiplicative_state(
    task: str,
    uri_a: str,
    uri_b: str,
    meta_a: dict[str, Any],
    meta_b: dict[str, Any],
    plan: Any,
    *,
    tiling: TilingConfig,
    predictor: dict[str, Any],
    read: ReadConfig,
    storage: StorageConfig | None,
) -> SceneState:
    import maugif_core

    r = plan.ratio
    height, width = plan.hi_shape
    k = decimation_factor(height, width, tiling.state_max_pixels)
    lo_h, lo_w = height // r, width // r
    small = (-(-lo_h // k), -(-lo_w // k))
    lo_window = plan.lowres_window((0, 0, height, width))
    raw_a = read_decimated(uri_a, small, window=lo_window, config=read, storage=storage)
    raw_b = read_decimated(uri_b, (small[0] * r, small[1] * r), config=read, storage=storage)
    nodata_a, nodata_b = nodata_value(meta_a), nodata_value(meta_b)
    mapping_a, mapping_b = scene_mappings(raw_a, raw_b, nodata_a, nodata_b)
    unit_a = mapping_from_dict(mapping_a).to_unit(raw_a, invalid_mask(raw_a, nodata_a))  # invalid pixels 0
    unit_b = mapping_from_dict(mapping_b).to_unit(raw_b, invalid_mask(raw_b, nodata_b))
    lowres_meta = dict(meta_a, height=lo_window[2], width=lo_window[3], transform=_window_transform(meta_a, lo_window))
    registration = registration_for(lowres_meta, meta_b, decimation=k)
    model = maugif_core.build_model(task, **(predictor.get("multiplicative_overrides") or {}))
    model.fit(unit_a, unit_b, registration=registration)
    if k > 1 and registration is not None:
        # The fit saw a grid k times coarser; at full resolution the registration is the transforms' own.
        from maugif_core.multiplicative.sensor import SensorModel

        full = registration_for(lowres_meta, meta_b)
        fitted = model.sensor_model
        if full is not None:
            model.set_sensor(SensorModel(full[0], full[1], fitted.gain, fitted.source, fitted.residual))
    details = {k_: (v if isinstance(v, (str, int)) else float(v)) for k_, v in model.details.items()}
    return SceneState(
        task=task,
        halo=int(model.receptive_field_radius),
        ratio=r,
        mapping_a=mapping_a,
        mapping_b=mapping_b,
        model_config=model.fitted_config().model_dump(),
        model_state={name: value.detach().cpu() for name, value in model.state_dict().items()},
        details=details,
        decimation=k,
    )


def _window_transform(meta: dict[str, Any], window: tuple[int, int, int, int]) -> list[float] | None:
    if not meta.get("transform"):
        return None
    from affine import Affine

    shifted = Affine(*meta["transform"][:6]) @ Affine.translation(window[1], window[0])
    return [float(v) for v in tuple(shifted)[:6]]


def scene_state_for(
    row: dict[str, Any],
    *,
    read: ReadConfig | None = None,
    storage: StorageConfig | None = None,
    tiling: TilingConfig | None = None,
    predictor: dict[str, Any] | None = None,
) -> tuple[SceneState, dict[str, Any], dict[str, Any], Any] | None:
    """Headers, grid plan and shared state of a pair row when it is fused as tile rows; None when it stays whole.

    Returns:
        ``(state, meta_a, meta_b, plan)``; ``plan`` is the :class:`~pipeline.io.geo.GridPlan` of a multiplicative
        pair (None for additive ones).

    Raises:
        RasterReadError, GridError: unreadable headers, or grids that do not fit the task.
    """
    from pipeline.io import geo
    from pipeline.io.readers import read_meta

    read, tiling, predictor = read or ReadConfig(), tiling or TilingConfig(), predictor or {}
    if tiling.window_min_pixels is None:
        return None
    task = row.get(S.TASK) or ""
    if task not in ADDITIVE_TASKS and task not in MULTIPLICATIVE_TASKS:
        return None  # the predictor reports the unknown task
    uri_a, uri_b = row[S.URI_A], row[S.URI_B]
    if uri_b.lower().endswith(PLAIN_SUFFIXES):
        # Scenes are TIFFs; a pair named as plain images goes straight to the whole-image path without a header
        # read here (decode sniffs the real format anyway), so a job of millions of small PNG/JPEG pairs does
        # not pay one extra request per pair for planning.
        return None
    meta_b = read_meta(uri_b, config=read, storage=storage)
    if meta_b.get("format") != "TIFF" or meta_b["height"] * meta_b["width"] <= tiling.window_min_pixels:
        return None
    meta_a = read_meta(uri_a, config=read, storage=storage)
    if meta_a.get("format") != "TIFF":
        return None
    kwargs = {"tiling": tiling, "predictor": predictor, "read": read, "storage": storage}
    if task in MULTIPLICATIVE_TASKS:
        plan = geo.plan_grid(meta_a, meta_b, config=read)
        if plan.resample:
            logger.warning(
                "%s: the low-resolution image needs warping (%s); fused whole, not window by window",
                row.get(S.PAIR_ID),
                plan.reason,
            )
            return None
        state = _multiplicative_state(task, uri_a, uri_b, meta_a, meta_b, plan, **kwargs)
        return state, meta_a, meta_b, plan
    geo.check_additive(meta_a, meta_b)
    return _additive_state(task, uri_a, uri_b, meta_a, meta_b, **kwargs), meta_a, meta_b, None


def plan_scene_rows(
    row: dict[str, Any],
    read: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    tiling: dict[str, Any] | None = None,
    predictor: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``Dataset.flat_map`` function: a pair row → its tile rows, or the row itself (see the module docstring).

    Never raises for a bad pair: unreadable headers or grids that do not fit become a ``failed`` row (stage
    ``read``), a failed per-scene fit a ``failed`` row (stage ``fuse``).
    """
    if row.get(S.STATUS) in (S.STATUS_FAILED, S.STATUS_SKIPPED):
        return _whole(row)
    try:
        return _plan_scene_rows(row, read, storage, tiling, predictor)
    finally:  # the decimated read and the fit are garbage now: give their pages back, this worker stays pooled
        release_heap()


def _plan_scene_rows(
    row: dict[str, Any],
    read: dict[str, Any] | None,
    storage: dict[str, Any] | None,
    tiling: dict[str, Any] | None,
    predictor: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    read_cfg = ReadConfig(**read) if read else ReadConfig()
    storage_cfg = StorageConfig(**storage) if storage else None
    tiling_cfg = TilingConfig(**tiling) if tiling else TilingConfig()
    started = time.perf_counter()
    try:
        planned = scene_state_for(row, read=read_cfg, storage=storage_cfg, tiling=tiling_cfg, predictor=predictor)
    except (RasterReadError, GridError) as e:
        return _failed(row, S.STAGE_READ, str(e))
    except Exception as e:  # a failed per-scene fit must not take the map down
        logger.exception("scene state of pair %s failed", row.get(S.PAIR_ID))
        return _failed(row, S.STAGE_FUSE, f"scene state: {type(e).__name__}: {e}")
    if planned is None:
        return _whole(row)
    state, meta_a, meta_b, plan = planned
    height, width = int(meta_b["height"]), int(meta_b["width"])
    specs = plan_tiles(height, width, tiling_cfg.tile_size, state.halo, state.ratio)
    payload = dumps_state(state)
    meta_a_json, meta_b_json = json.dumps({**meta_a, "scene": state.details or None}), json.dumps(meta_b)
    seconds = (time.perf_counter() - started) / max(len(specs), 1)
    logger.info(
        "scene %s: %dx%d as %d tile rows (state from a 1/%d read, %.1f s)",
        row.get(S.PAIR_ID),
        height,
        width,
        len(specs),
        state.decimation,
        time.perf_counter() - started,
    )
    rows = []
    for spec in specs:
        read_b = spec.read
        if plan is not None:
            window_a = plan.lowres_window(read_b)
        else:
            window_a = (read_b.row_off, read_b.col_off, read_b.height, read_b.width)
        windows = {
            "a": list(window_a),
            "b": [read_b.row_off, read_b.col_off, read_b.height, read_b.width],
            "crop": [spec.crop_top, spec.crop_left, spec.core.height, spec.core.width],
            "reader": "actor" if tiling_cfg.read_tiles_in_actor else "task",
        }
        rows.append(
            {
                **row,
                S.TILE_ROW: spec.row,
                S.TILE_COL: spec.col,
                S.WINDOW: json.dumps(spec.core.to_dict()),
                S.READ_WINDOWS: json.dumps(windows),
                S.SCENE_STATE: payload,
                S.META_A: meta_a_json,
                S.META_B: meta_b_json,
                S.STATUS: S.STATUS_OK,
                S.ERROR_STAGE: None,
                S.ERROR: None,
                S.SECONDS: seconds,
            }
        )
    return rows
