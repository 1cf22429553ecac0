"""Scenes through the whole job (real local Ray, real files, the moto S3 server): tile rows read window by window
from local and ``s3://`` sources equal the whole-image path; outputs commit and resume like any raster."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from factories import SHARED_DATASETS, landsat_crop, write_geotiff
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from rio_cogeo.cogeo import cog_validate

from pipeline import schema as S
from pipeline.config.fuse_config import FuseJobConfig
from pipeline.fuse.batch import run_batch_fuse
from pipeline.io.manifest import read_manifest
from pipeline.io.stac import validate_core

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "samples"

pytestmark = pytest.mark.timeout(600)


def _scene_pair(folder: Path) -> tuple[Path, Path]:
    """A 150x170 visible/infrared GeoTIFF pair cut from rasterio's RGB.byte.tif (real Landsat pixels, nodata 0)."""
    assert (SHARED_DATASETS / "GeoTIFF_rasterio_testdata").is_dir()
    visible, _, transform = landsat_crop(150, 170, row=250, col=250)
    infrared = np.ascontiguousarray(255 - visible[:, :, 2:3])
    folder.mkdir(parents=True, exist_ok=True)
    pair = (
        write_geotiff(folder / "vis.tif", visible, nodata=0, transform=transform),
        write_geotiff(folder / "ir.tif", infrared, nodata=0, transform=transform),
    )
    with rasterio.open(pair[0], "r+") as dst:  # an acquisition time in the TIFF DATETIME tag
        dst.update_tags(TIFFTAG_DATETIME="2021:06:01 10:30:00")
    return pair


def _manifest(path: Path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["pair_id", "uri_a", "uri_b", "task"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _config(manifest: str, out: str, windowed: bool, **output) -> FuseJobConfig:
    return FuseJobConfig(
        input=manifest,
        output={"uri": out, **output},
        tiling={
            "tile_size": 64,
            "window_min_pixels": 64 * 64 if windowed else None,
            "state_max_pixels": 1024 * 1024,
            "max_untiled_pixels": 64 * 64,
        },
        fusion={"multiplicative": {"steps": 30, "early_stop_patience": 0}, "batch_size": 4},
        stats_max_pixels=None,
        failures={"max_fraction": 1.0},
    )


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_scene_tile_rows_local_and_s3_equal_whole_and_resume(ray_session, s3_server, s3_bucket, tmp_path):
    import s3fs

    uri_a, uri_b = _scene_pair(tmp_path / "in")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.put(str(uri_a), f"{s3_bucket}/in/vis.tif")
    fs.put(str(uri_b), f"{s3_bucket}/in/ir.tif")
    pan_row = {
        "pair_id": "pan",
        "uri_a": str(SAMPLES / "pansharpen" / "landsat_rgb_ms.tif"),
        "uri_b": str(SAMPLES / "pansharpen" / "landsat_pan_synthetic.tif"),
        "task": "pansharpen",
    }
    rows = [
        {"pair_id": "local", "uri_a": str(uri_a), "uri_b": str(uri_b), "task": "vif"},
        {
            "pair_id": "remote",
            "uri_a": f"s3://{s3_bucket}/in/vis.tif",
            "uri_b": f"s3://{s3_bucket}/in/ir.tif",
            "task": "vif",
        },  # fmt: skip
        {"pair_id": "broken", "uri_a": str(uri_a), "uri_b": f"s3://{s3_bucket}/in/missing.tif", "task": "vif"},
        pan_row,
    ]
    manifest = _manifest(tmp_path / "pairs.csv", rows)
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    run_batch_fuse(_config(manifest, str(whole), windowed=False))
    summary = run_batch_fuse(_config(manifest, str(tiled), windowed=True, layout="scene", cog_blocksize=64))
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (3, 1)
    for pid in ("local", "remote", "pan"):
        expected, actual = _read(whole / f"{pid}.vrt"), _read(tiled / f"{pid}.vrt")
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        diff = np.abs(actual.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, pid
    # tile rows are written as the planned 64-pixel cores: 3 x 3 for the 150x170 scene
    assert len(list((tiled / "local").glob("*_*.tif"))) == 9
    # layout=scene: one valid COG per scene (rio-cogeo's validator), equal to the mosaic, as the manifest's output
    latest = {r[S.PAIR_ID]: r for r in read_manifest(str(tiled)).to_pylist()}
    for pid in ("local", "remote", "pan"):
        valid, errors, _ = cog_validate(str(tiled / f"{pid}.tif"), quiet=True)
        assert valid, (pid, errors)
        np.testing.assert_array_equal(_read(tiled / f"{pid}.tif"), _read(tiled / f"{pid}.vrt"))
        assert latest[pid][S.OUTPUT_URI].endswith(f"{pid}.tif")
        with rasterio.open(tiled / f"{pid}.vrt") as vrt, rasterio.open(tiled / f"{pid}.tif") as cog:
            assert vrt.overviews(1) == cog.overviews(1) and len(vrt.overviews(1)) >= 2
            assert cog.profile["tiled"] and cog.block_shapes[0] == (64, 64)
    assert not [p for p in tiled.iterdir() if ".tmp-" in p.name]
    # STAC through pystac: core schema valid (offline), projection + raster extensions, sources as derived_from,
    # the source's datetime, and a Collection linking every raster item of the job
    for pid in ("local", "remote", "pan"):
        item = json.loads((tiled / pid / "item.json").read_text())
        validate_core(item)
        parsed = pystac.Item.from_dict(item)
        proj = ProjectionExtension.ext(parsed)
        assert proj.code == "EPSG:32618" and proj.shape == list(_read(tiled / f"{pid}.tif").shape[1:])
        assert RasterExtension.ext(parsed.assets["data"]).bands[0].data_type == "uint8"
        assert parsed.assets["data"].href == f"../{pid}.tif" and parsed.assets["mosaic"].href == f"../{pid}.vrt"
        derived = sorted(link.href for link in parsed.links if link.rel == "derived_from")
        source = next(r for r in rows if r["pair_id"] == pid)
        assert derived == sorted([source["uri_a"], source["uri_b"]])
    assert json.loads((tiled / "local" / "item.json").read_text())["properties"]["datetime"] == "2021-06-01T10:30:00Z"
    # the pansharpening scene's fit used the registration from the transforms; what it estimated is in its item
    pan_props = json.loads((tiled / "pan" / "item.json").read_text())["properties"]
    assert pan_props["maugif:sensor_source"] == "georeferencing" and 0 < pan_props["maugif:sensor_gain"] < 1
    # ... and in the pair's manifest row (extras), on the windowed and the whole-image path alike
    extras = json.loads(latest["pan"][S.EXTRAS])
    assert extras["sensor_source"] == pan_props["maugif:sensor_source"]
    for key in ("sensor_shift_y", "sensor_shift_x", "sensor_gain"):  # the item rounds, the manifest does not
        assert extras[key] == pytest.approx(pan_props[f"maugif:{key}"], abs=1e-6), key
    whole_pan = {r[S.PAIR_ID]: r for r in read_manifest(str(whole)).to_pylist()}["pan"]
    whole_extras = json.loads(whole_pan[S.EXTRAS])
    assert whole_extras["sensor_source"] == "georeferencing" and 0 < whole_extras["sensor_gain"] < 1
    assert (whole_extras["sensor_shift_y"], whole_extras["sensor_shift_x"]) == (
        extras["sensor_shift_y"],
        extras["sensor_shift_x"],
    )
    assert latest["local"][S.EXTRAS] is None  # an additive pair has nothing estimated
    collection = json.loads((tiled / "collection.json").read_text())
    validate_core(collection)
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        "./local/item.json",
        "./pan/item.json",
        "./remote/item.json",
    ]
    assert pystac.Collection.from_dict(collection).extent.spatial.bboxes[0][0] < -77
    assert latest["broken"][S.STATUS] == S.STATUS_FAILED and "missing.tif" in latest["broken"][S.ERROR]
    again = run_batch_fuse(_config(manifest, str(tiled), windowed=True))
    assert (again["pairs_ok"], again["pairs_skipped"]) == (0, 3)


def test_a_truncated_scene_fails_alone_naming_its_file(ray_session, tmp_path):
    uri_a, uri_b = _scene_pair(tmp_path / "in")
    short = tmp_path / "in" / "short.tif"
    shutil.copy(uri_b, short)
    data = short.read_bytes()
    short.write_bytes(data[: int(len(data) * 0.6)])  # header intact, later blocks cut off
    manifest = _manifest(
        tmp_path / "pairs.csv",
        [
            {"pair_id": "good", "uri_a": str(uri_a), "uri_b": str(uri_b), "task": "vif"},
            {"pair_id": "cut", "uri_a": str(uri_a), "uri_b": str(short), "task": "vif"},
        ],
    )
    out = tmp_path / "out"
    summary = run_batch_fuse(_config(manifest, str(out), windowed=True))
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (1, 1)
    latest = {r[S.PAIR_ID]: r for r in read_manifest(str(out)).to_pylist()}
    assert latest["cut"][S.ERROR_STAGE] == S.STAGE_READ and "short.tif" in latest["cut"][S.ERROR]
    assert not (out / "cut.vrt").exists() and (out / "good.vrt").exists()


def test_the_tiles_of_one_scene_are_spread_over_the_actors(ray_session, tmp_path):
    """Planning turns one pair into many tile rows in one block; an actor pool fuses a block in one task, so without
    splitting, one actor fuses the whole scene while the others wait. The planned rows are cut into blocks of
    ``fusion.batch_size`` rows: 9 tiles at batch size 4 are 3 fusion tasks."""
    from pipeline.fuse.batch import build_dataset

    uri_a, uri_b = _scene_pair(tmp_path / "in")
    row = {"pair_id": "s", "uri_a": str(uri_a), "uri_b": str(uri_b), "task": "vif"}
    config = _config(_manifest(tmp_path / "pairs.csv", [row]), str(tmp_path / "out"), True)
    fused = build_dataset(config, split_scenes=True).materialize()
    assert fused.count() == 9  # 150 x 170 in 64² tiles
    assert fused.num_blocks() == 3, fused.stats()
    assert build_dataset(config).materialize().num_blocks() == 1  # unsplit: one task, one actor
    # The job splits a window when its first pairs hold a scene, and leaves windows of small pairs alone.
    from pipeline.fuse.memory import window_has_scenes
    from pipeline.io.pairs import iter_pair_windows

    (window,) = iter_pair_windows(config.input, config=config.pairs)
    assert window_has_scenes(config, window.head)
    small = config.model_copy(update={"tiling": config.tiling.model_copy(update={"window_min_pixels": 10**6})})
    assert not window_has_scenes(small, window.head)
