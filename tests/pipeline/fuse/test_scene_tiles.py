"""Scenes fused as tile rows (pipeline.fuse.scene_plan / scene_tiles) equal the whole-image path up to float rounding.

The rows go through the real stage functions in-process (planning, window reads, the predictor class, cropping);
the Ray job end to end is covered in tests/jobs/test_batch_fuse_scene.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import landsat_crop, write_geotiff

from pipeline import schema as S
from pipeline.config.output_config import TilingConfig
from pipeline.fuse.batch import decode_row
from pipeline.fuse.predictor import FusionPredictor, PredictorConfig
from pipeline.fuse.scene_plan import plan_scene_rows
from pipeline.fuse.scene_state import (
    SceneState,
    decimation_factor,
    dumps_state,
    loads_state,
    mapping_from_dict,
    mapping_to_dict,
)
from pipeline.io.radiometry import unit_mapping

TILING = TilingConfig(tile_size=48, window_min_pixels=64 * 64, state_max_pixels=512 * 512)


def _pair_row(task: str, uri_a: Path, uri_b: Path) -> dict:
    return {
        S.PAIR_ID: "scene",
        S.URI_A: str(uri_a),
        S.URI_B: str(uri_b),
        S.TASK: task,
        S.STATUS: S.STATUS_OK,
        S.ERROR_STAGE: None,
    }


def _whole(predictor: FusionPredictor, row: dict) -> np.ndarray:
    decoded = decode_row(dict(row))
    out = predictor({k: [v] for k, v in decoded.items()})
    assert out[S.STATUS] == [S.STATUS_OK], out.get(S.ERROR)
    return np.moveaxis(S.decode_array(out[S.FUSED][0]), -1, 0)  # channel-last column -> (C, H, W)


def _tiled(predictor: FusionPredictor, row: dict, tiling: TilingConfig, predictor_cfg: dict) -> tuple[np.ndarray, list]:
    rows = plan_scene_rows(dict(row), tiling=tiling.model_dump(), predictor=predictor_cfg)
    assert len(rows) > 1 and all(r[S.TILE_ROW] >= 0 for r in rows), rows[0].get(S.ERROR)
    meta_b = json.loads(rows[0][S.META_B])
    out_image = None
    for tile in rows:
        decoded = decode_row(dict(tile))
        result = predictor({k: [v] for k, v in decoded.items()})
        assert result[S.STATUS] == [S.STATUS_OK], result.get(S.ERROR)
        assert S.SCENE_STATE not in result
        core = np.moveaxis(S.decode_array(result[S.FUSED][0]), -1, 0)  # channel-last column -> (C, H, W)
        window = json.loads(result[S.WINDOW][0])
        if out_image is None:
            out_image = np.zeros((core.shape[0], meta_b["height"], meta_b["width"]), core.dtype)
        r0, c0 = window["row_off"], window["col_off"]
        out_image[:, r0 : r0 + window["height"], c0 : c0 + window["width"]] = core
    return out_image, rows


@pytest.mark.parametrize(("dtype", "in_actor"), [("uint8", True), ("int16", False)])
def test_additive_tile_rows_equal_whole_image(tmp_path: Path, dtype: str, in_actor: bool) -> None:
    """Windows read by the fusion actor (default) or by the decode step give the whole-image result."""
    visible, crs, transform = landsat_crop(150, 170, row=250, col=250)
    infrared = np.ascontiguousarray(255 - visible[:, :, 2:3])
    if dtype == "int16":
        visible = (visible.astype(np.int16) * 40 - 3000).astype(np.int16)
        infrared = (infrared.astype(np.int16) * 40 - 3000).astype(np.int16)
    nodata = 0 if dtype == "uint8" else None
    visible[:5, :7] = 0 if dtype == "uint8" else visible[:5, :7]
    uri_a = write_geotiff(tmp_path / "vis.tif", visible, nodata=nodata, transform=transform)
    uri_b = write_geotiff(tmp_path / "ir.tif", infrared, nodata=nodata, transform=transform)
    cfg = PredictorConfig(tile_size=64, max_untiled_pixels=32 * 32, stats_max_pixels=None)
    predictor = FusionPredictor(cfg)
    row = _pair_row("vif", uri_a, uri_b)
    whole = _whole(predictor, row)
    tiled, rows = _tiled(predictor, row, TILING.model_copy(update={"read_tiles_in_actor": in_actor}), cfg.model_dump())
    assert len(rows) == 4 * 4  # ceil(150/48) x ceil(170/48)
    assert (decode_row(dict(rows[5]))[S.IMAGE_A] is None) == in_actor  # the decode step reads only when asked
    assert tiled.shape == whole.shape == (3, 150, 170) and tiled.dtype == whole.dtype
    diff = np.abs(tiled.astype(np.float64) - whole.astype(np.float64))
    # float rounding only: at most one grey level (uint8) / a few units of a 10,000-unit range (int16)
    assert diff.max() <= (1 if dtype == "uint8" else 8)
    assert (diff > 0).mean() < 0.01
    if nodata is not None:
        assert (tiled[:, :5, :7] == nodata).all()


def test_pansharpen_tile_rows_equal_whole_image_and_carry_the_registration(tmp_path: Path) -> None:
    from affine import Affine

    ms, crs, transform = landsat_crop(64, 72, row=260, col=260)  # 3-band "multispectral" at 4x the PAN pixel
    pan_full, _, _ = landsat_crop(256, 288, row=100, col=100)
    pan = np.ascontiguousarray(pan_full.mean(axis=2, keepdims=True).astype(np.uint8))
    pan_transform = Affine(transform.a / 4, 0, transform.c, 0, transform.e / 4, transform.f)
    uri_a = write_geotiff(tmp_path / "ms.tif", ms, transform=transform)
    uri_b = write_geotiff(tmp_path / "pan.tif", pan, transform=pan_transform)
    overrides = {"steps": 30, "early_stop_patience": 0}
    cfg = PredictorConfig(tile_size=64, max_untiled_pixels=64 * 64, multiplicative_overrides=overrides)
    predictor = FusionPredictor(cfg)
    row = _pair_row("pansharpen", uri_a, uri_b)
    whole = _whole(predictor, row)
    tiled, rows = _tiled(predictor, row, TILING.model_copy(update={"tile_size": 64}), cfg.model_dump())
    assert tiled.shape == whole.shape == (3, 256, 288)
    diff = np.abs(tiled.astype(np.int32) - whole.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    state = loads_state(rows[0][S.SCENE_STATE])
    assert state.ratio == 4 and state.details["sensor_source"] == "georeferencing"
    assert json.loads(rows[0][S.META_A])["scene"]["sensor_source"] == "georeferencing"


def test_small_rasters_and_plain_images_stay_whole(tmp_path: Path) -> None:
    visible, _, transform = landsat_crop(40, 40)
    uri = write_geotiff(tmp_path / "a.tif", visible, transform=transform)
    rows = plan_scene_rows(_pair_row("vif", uri, uri), tiling=TILING.model_dump())
    assert len(rows) == 1 and rows[0][S.TILE_ROW] == -1 and rows[0][S.SCENE_STATE] is None
    missing = plan_scene_rows(_pair_row("vif", uri, tmp_path / "nope.tif"), tiling=TILING.model_dump())
    assert missing[0][S.STATUS] == S.STATUS_FAILED and missing[0][S.ERROR_STAGE] == S.STAGE_READ
    assert "nope.tif" in missing[0][S.ERROR]
    # Pairs named as plain images are not opened by the planner: a missing PNG is left to decode to report.
    plain_row = _pair_row("vif", tmp_path / "nope-a.png", tmp_path / "nope.png")
    plain = plan_scene_rows(plain_row, tiling=TILING.model_dump())
    assert len(plain) == 1 and plain[0][S.STATUS] == S.STATUS_OK and plain[0][S.TILE_ROW] == -1


def test_state_round_trip_and_decimation() -> None:
    assert decimation_factor(100, 100, 10_000) == 1
    assert decimation_factor(24_000, 24_000, 2048 * 2048) == 12
    mapping = mapping_to_dict(unit_mapping(np.arange(-30, 95, dtype=np.int16).reshape(5, 25, 1), None))
    state = SceneState(task="vif", halo=9, mapping_a=mapping, details={"gain": 0.3})
    again = loads_state(dumps_state(state))
    assert (
        again.mapping_a == mapping
        and mapping_from_dict(mapping).kind == "stretch"
        and again.halo == 9
        and again.details == {"gain": 0.3}
    )
