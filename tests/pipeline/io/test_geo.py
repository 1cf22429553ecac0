"""Grid alignment: additive pairs share a grid; remote-sensing pairs nest by an integer ratio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from factories import geotiff_variant, landsat_crop, write_geotiff, write_pillow
from rasterio.warp import transform

from pipeline import schema as S
from pipeline.config.io_config import ReadConfig
from pipeline.errors import GridError
from pipeline.io.geo import GridPlan, check_additive, plan_grid, read_lowres
from pipeline.io.readers import decode_pair, read_image, read_meta

# A synthetic PAN/MS pair as GDAL's own pansharpening tests make one (SOURCE.md of GeoTIFF_rasterio_testdata):
# MS = a Landsat crop (uint8, 3 bands, 300 m in the crop's metres); PAN = band mean at `ratio`x finer pixels.


def ms_pan(tmp_path: Path, ratio: int = 4, pan_shift=(0.0, 0.0), pan_crs: str = "EPSG:32618", pixel_scale=None):
    ms, _, t = landsat_crop(12, 16)
    ms_path = write_geotiff(tmp_path / "ms.tif", ms, nodata=0, tiled=False)
    pan = np.repeat(np.repeat(ms.mean(axis=2, keepdims=True), ratio, 0), ratio, 1).astype(np.uint8)
    scale = pixel_scale if pixel_scale is not None else 1.0 / ratio
    x0, y0 = t.c + pan_shift[1] * t.a, t.f + pan_shift[0] * t.e
    if pan_crs != "EPSG:32618":  # same place on the ground, other CRS
        (x0,), (y0,) = transform("EPSG:32618", pan_crs, [x0], [y0])
    pan_t = Affine(t.a * scale, 0.0, x0, 0.0, t.e * scale, y0)
    pan_path = write_geotiff(tmp_path / "pan.tif", pan, crs=pan_crs, transform=pan_t, tiled=False)
    return ms_path, pan_path, ms, pan


def metas(*paths: Path) -> list[dict]:
    return [read_meta(str(p)) for p in paths]


def test_additive_equal_grids_pass_and_mismatches_fail(tmp_path: Path) -> None:
    array = geotiff_variant("uint16")
    a = read_meta(str(write_geotiff(tmp_path / "a.tif", array)))
    check_additive(a, dict(a))
    small = dict(a, height=47, uri="s3://b/small.tif")
    with pytest.raises(GridError, match=r"size mismatch: A \(.*a.tif\) is 48x64, B \(s3://b/small.tif\) is 47x64"):
        check_additive(a, small)
    with pytest.raises(GridError, match="CRS mismatch.*EPSG:32618.*EPSG:4326"):
        check_additive(a, dict(a, crs="EPSG:4326"))
    shifted = dict(a, transform=[*a["transform"][:2], a["transform"][2] + 10, *a["transform"][3:]])
    with pytest.raises(GridError, match="grid mismatch"):
        check_additive(a, shifted)
    plain = dict(a, crs=None, transform=None)
    check_additive(a, plain)  # one side not georeferenced: sizes decide


@pytest.mark.parametrize("ratio", [2, 4])
def test_nested_grid_plan_and_windows(tmp_path: Path, ratio: int) -> None:
    ms_path, pan_path, ms, _ = ms_pan(tmp_path, ratio=ratio)
    plan = plan_grid(*metas(ms_path, pan_path))
    assert (plan.ratio, plan.lo_offset, plan.resample) == (ratio, (0, 0), False)
    assert plan.hi_shape == (12 * ratio, 16 * ratio) and plan.lo_shape == (12, 16)
    assert plan.lowres_window((2 * ratio, 4 * ratio, 3 * ratio, 5 * ratio)) == (2, 4, 3, 5)
    assert plan.lowres_window((0, 0, ratio + 1, 1)) == (0, 0, 2, 1)  # size rounds up
    with pytest.raises(GridError, match="not a multiple of the ratio"):
        plan.lowres_window((1, 0, ratio, ratio))
    image, meta = read_lowres(str(ms_path), plan)
    np.testing.assert_array_equal(image, ms)
    assert meta["grid"]["ratio"] == ratio and json.dumps(meta)


def test_hi_grid_inside_lo_grid_gives_offset(tmp_path: Path) -> None:
    ms, _, t = landsat_crop(12, 16)
    ms_path = write_geotiff(tmp_path / "ms.tif", ms, tiled=False)
    pan = np.zeros((16, 20, 1), np.uint8)
    pan_t = Affine(t.a / 2, 0, t.c + 3 * t.a, 0, t.e / 2, t.f + 2 * t.e)  # origin at MS pixel (row 2, col 3)
    pan_path = write_geotiff(tmp_path / "pan.tif", pan, transform=pan_t, tiled=False)
    plan = plan_grid(*metas(ms_path, pan_path))
    assert (plan.ratio, plan.lo_offset) == (2, (2, 3))
    assert plan.lowres_window((4, 2, 4, 4)) == (4, 4, 2, 2)
    image, meta = read_lowres(str(ms_path), plan)
    np.testing.assert_array_equal(image, ms[2:10, 3:13])
    assert meta["transform"][2] == pytest.approx(t.c + 3 * t.a)


def test_different_crs_rejected_or_reprojected(tmp_path: Path) -> None:
    ms_path, pan_path, *_ = ms_pan(tmp_path, pan_crs="EPSG:32617")
    with pytest.raises(GridError, match="different CRS.*EPSG:32618.*EPSG:32617.*reproject"):
        plan_grid(*metas(ms_path, pan_path))
    plan = plan_grid(*metas(ms_path, pan_path), config=ReadConfig(reproject=True))
    assert plan.resample and plan.crs == "EPSG:32617" and plan.ratio >= 1
    image, meta = read_lowres(str(ms_path), plan, config=ReadConfig(reproject=True))
    assert image.shape[:2] == plan.lo_shape and meta["crs"] == "EPSG:32617"


def test_no_overlap_rejected(tmp_path: Path) -> None:
    ms_path, pan_path, *_ = ms_pan(tmp_path, pan_shift=(0.0, 1000.0))
    with pytest.raises(GridError, match="no overlap"):
        plan_grid(*metas(ms_path, pan_path), config=ReadConfig(resample_offgrid=True))


def test_non_integer_ratio_rejected_or_resampled(tmp_path: Path) -> None:
    ms_path, pan_path, ms, pan = ms_pan(tmp_path, ratio=3, pixel_scale=1 / 2.5)
    with pytest.raises(GridError, match="non-integer ratio.*2.5.*resample_offgrid"):
        plan_grid(*metas(ms_path, pan_path))
    config = ReadConfig(resample_offgrid=True)
    plan = plan_grid(*metas(ms_path, pan_path), config=config)
    assert plan.resample and plan.ratio in (2, 3) and plan.lo_offset == (0, 0)
    image, meta = read_lowres(str(ms_path), plan, config=config)
    assert image.shape == (*plan.lo_shape, 3) and image.dtype == np.uint8
    assert plan.lo_shape == (-(-pan.shape[0] // plan.ratio), -(-pan.shape[1] // plan.ratio))
    assert meta["transform"][0] == pytest.approx(plan.lo_transform[0]) and meta["grid"]["resample"]


def test_unaligned_origin_rejected(tmp_path: Path) -> None:
    ms_path, pan_path, *_ = ms_pan(tmp_path, ratio=2, pan_shift=(0.3, 0.0))
    with pytest.raises(GridError, match="origins not aligned"):
        plan_grid(*metas(ms_path, pan_path))
    assert plan_grid(*metas(ms_path, pan_path), config=ReadConfig(resample_offgrid=True)).resample


def test_plain_images_nest_by_size(tmp_path: Path) -> None:
    lo = {"height": 10, "width": 12, "crs": None, "transform": None}
    assert plan_grid(lo, {"height": 40, "width": 48, "crs": None, "transform": None}).ratio == 4
    with pytest.raises(GridError, match="non-integer ratio.*10x12.*35x42"):
        plan_grid(lo, {"height": 35, "width": 42, "crs": None, "transform": None})
    with pytest.raises(GridError, match="non-integer ratio"):
        plan_grid(lo, {"height": 20, "width": 36, "crs": None, "transform": None})


def test_grid_plan_is_json_ready() -> None:
    plan = GridPlan(ratio=2, hi_shape=(4, 4), lo_shape=(2, 2), crs="EPSG:4326", lo_transform=(1, 0, 0, 0, -1, 0))
    assert json.loads(json.dumps(plan.to_dict()))["lo_transform"] == [1, 0, 0, 0, -1, 0]


def test_decode_pair_pansharpen(tmp_path: Path) -> None:
    ms_path, pan_path, ms, pan = ms_pan(tmp_path, ratio=4)
    row = {
        S.PAIR_ID: "p",
        S.URI_A: str(ms_path),
        S.URI_B: str(pan_path),
        S.TASK: "pansharpen",
        S.STATUS: "ok",
    }
    out = decode_pair(row)
    assert out[S.STATUS] == S.STATUS_OK, out[S.ERROR]
    np.testing.assert_array_equal(out[S.IMAGE_A], ms)
    np.testing.assert_array_equal(out[S.IMAGE_B], pan)
    assert json.loads(out[S.META_A])["grid"]["ratio"] == 4
    odd = write_pillow(tmp_path / "odd.png", np.zeros((30, 30, 3), np.uint8), "PNG")
    bad = decode_pair({**row, S.URI_B: str(odd)})
    assert bad[S.STATUS] == S.STATUS_FAILED and "non-integer ratio" in bad[S.ERROR]
    crs = read_image(str(ms_path))[1]["crs"]
    assert crs == "EPSG:32618"
