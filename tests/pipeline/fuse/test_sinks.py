"""Writing: PNG, COG tiles, VRT mosaic, STAC item, atomicity, idempotency, key safety, the Ray Datasink.

Every output test runs twice: on local disk and on the real S3 API server (moto standalone, through s3fs and,
for the VRT, through GDAL's /vsis3/).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.io import MemoryFile
from rasterio.session import AWSSession
from rasterio.windows import Window

from pipeline.config.output_config import OutputConfig
from pipeline.errors import RasterWriteError
from pipeline.fuse.sinks import write_png, write_raster, write_row
from pipeline.io.cog import RasterMeta, validate_cog
from pipeline.io.fsutil import TEMP_MARKER, atomic_open, atomic_write_bytes, filesystem_for, join_key
from pipeline.io.writers import GRID_FROM_B_TASKS, output_meta, png_uri, stac_uri, tile_uri, vrt_uri
from pipeline.schema import (
    FUSED,
    META_A,
    META_B,
    PAIR_ID,
    STATUS,
    STATUS_FAILED,
    STATUS_OK,
    TASK,
    TILE_COL,
    TILE_ROW,
    WINDOW,
)

RGB_BYTE = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "GeoTIFF_rasterio_testdata" / "RGB.byte.tif"
CONFIG = dict(cog_tile_size=256, cog_blocksize=128)


@pytest.fixture(params=["local", "s3"])
def output_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty output location on local disk or on the local S3 server."""
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/jobs/out"


def _keys(output: str) -> list[str]:
    fs, root = filesystem_for(output)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    if not fs.exists(root):
        return []
    return sorted(p[len(root) + 1 :] for p in fs.find(root))


def _read(uri: str) -> bytes:
    fs, path = filesystem_for(uri)
    return fs.cat_file(path)


@contextmanager
def _gdal_path(uri: str) -> Iterator[str]:
    """A path GDAL can open for ``uri``: local, or /vsis3/ against the local S3 server."""
    if not uri.startswith("s3://"):
        yield uri
        return
    endpoint = urlparse(os.environ["AWS_ENDPOINT_URL"]).netloc
    session = AWSSession(aws_access_key_id="testing", aws_secret_access_key="testing", endpoint_url=endpoint)
    with rasterio.Env(
        session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"
    ):
        yield "/vsis3/" + uri[len("s3://") :]


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, dict]:
    """A 400 x 500 crop of RGB.byte.tif (CC0): pixels ``(3, H, W)`` uint8 and its profile."""
    with rasterio.open(RGB_BYTE) as src:
        window = Window(150, 100, 500, 400)
        return src.read(window=window), {
            "crs": src.crs.to_wkt(),
            "transform": src.window_transform(window),
            "nodata": src.nodata,
        }


def _bands(rgb: np.ndarray, dtype: str) -> np.ndarray:
    """Nine distinct bands from three, in ``dtype``."""
    r, g, b = rgb.astype(np.int32)
    stack = np.stack([r, g, b, r // 2, g // 2, b // 2, 255 - r, 255 - g, 255 - b])
    if dtype == "uint16":
        return (stack * 257).astype(np.uint16)
    if dtype == "int16":
        return (stack * 100 - 12000).astype(np.int16)
    if dtype == "float32":
        return (stack / 255.0).astype(np.float32)
    return stack.astype(np.uint8)


def _meta(profile: dict, data: np.ndarray, nodata: float | None, names: list[str] | None) -> RasterMeta:
    return RasterMeta(
        dtype=str(data.dtype),
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        nodata=nodata,
        crs=profile["crs"],
        transform=tuple(profile["transform"])[:6],
        descriptions=tuple(names) if names else None,
    )


# -------------------------------------------------------------------------------------------------------- PNG
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
def test_png_round_trip(output_uri: str, dtype: str, channels: int) -> None:
    rng = np.random.default_rng(channels)
    high = 256 if dtype == "uint8" else 65536
    shape = (37, 53) if channels == 0 else (channels, 37, 53)
    image = rng.integers(0, high, shape).astype(dtype)
    uri = png_uri(output_uri, "pair-1")
    nbytes = write_png(image, uri)
    data = _read(uri)
    assert len(data) == nbytes and data[:8] == b"\x89PNG\r\n\x1a\n"
    with MemoryFile(data) as mem, mem.open() as png:
        assert png.driver == "PNG" and png.dtypes[0] == dtype
        back = png.read()
    np.testing.assert_array_equal(back, image.reshape(back.shape))
    if dtype == "uint8":  # and a second, independent decoder agrees
        pil = np.asarray(Image.open(io.BytesIO(data)))
        np.testing.assert_array_equal(pil[None] if pil.ndim == 2 else np.moveaxis(pil, -1, 0), back)
    assert _keys(output_uri) == ["pair-1.png"]


def test_png_rejects_unsupported_inputs(tmp_path: Path) -> None:
    with pytest.raises(RasterWriteError, match="PNG needs"):
        write_png(np.zeros((5, 4, 4), np.uint8), str(tmp_path / "x.png"))
    with pytest.raises(RasterWriteError, match="PNG needs"):
        write_png(np.zeros((4, 4), np.float32), str(tmp_path / "x.png"))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- COG / VRT / STAC
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_cog_tiles_vrt_and_stac_round_trip(output_uri: str, scene: tuple, dtype: str) -> None:
    rgb, profile = scene
    data = _bands(rgb, dtype)
    nodata = {"uint8": 0, "uint16": 0, "int16": -32768, "float32": float("nan")}[dtype]
    names = [f"band {i} ({dtype})" for i in range(1, 10)]
    meta = _meta(profile, data, nodata, names)
    config = OutputConfig(uri=output_uri, **CONFIG)
    uri, nbytes = write_raster(data, output_uri, "scene-1", meta, config=config)
    assert uri == vrt_uri(output_uri, "scene-1") and nbytes > 0
    keys = _keys(output_uri)
    tiles = [f"scene-1/{r}_{c}.tif" for r in range(2) for c in range(2)]
    assert keys == sorted(["scene-1.vrt", "scene-1/item.json", *tiles])

    base = Affine(*meta.transform)
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        blob = _read(tile_uri(output_uri, "scene-1", row, col))
        assert validate_cog(blob) == []
        with MemoryFile(blob) as mem, mem.open() as tile:
            assert tile.crs.to_epsg() == 32618
            assert tile.transform == base @ Affine.translation(256 * col, 256 * row)
            assert tile.dtypes == (dtype,) * 9 and tile.count == 9
            assert tile.descriptions == tuple(names)
            assert np.isnan(tile.nodata) if dtype == "float32" else tile.nodata == nodata
            assert tile.profile["tiled"] and tile.profile["compress"].lower() == "deflate"
            assert tile.overviews(1), "each tile has overviews"
            expected = data[:, 256 * row : 256 * (row + 1), 256 * col : 256 * (col + 1)]
            np.testing.assert_array_equal(tile.read(), expected)

    with _gdal_path(uri) as path, rasterio.open(path) as mosaic:
        assert mosaic.driver == "VRT"
        assert (mosaic.height, mosaic.width, mosaic.count) == (400, 500, 9)
        assert mosaic.crs.to_epsg() == 32618 and mosaic.transform == base
        assert mosaic.descriptions == tuple(names)
        np.testing.assert_array_equal(mosaic.read(), data)

    item = json.loads(_read(stac_uri(output_uri, "scene-1")))
    assert item["type"] == "Feature" and item["id"] == "scene-1" and item["stac_version"] == "1.1.0"
    assert item["properties"]["proj:code"] == "EPSG:32618"
    assert item["properties"]["proj:shape"] == [400, 500]
    assert item["properties"]["proj:transform"] == pytest.approx(list(meta.transform))
    west, south, east, north = item["bbox"]
    assert -80 < west < east < -76 and 22 < south < north < 26  # the scene lies near the Bahamas (UTM 18N)
    ring = item["geometry"]["coordinates"][0]
    assert item["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
    assert all(west - 1e-6 <= x <= east + 1e-6 and south - 1e-6 <= y <= north + 1e-6 for x, y in ring)
    assert item["assets"]["mosaic"]["href"] == "../scene-1.vrt"
    assert sorted(a["href"] for k, a in item["assets"].items() if k.startswith("tile_")) == [
        f"{r}_{c}.tif" for r in range(2) for c in range(2)
    ]
    assert [b["name"] for b in item["assets"]["tile_0_0"]["bands"]] == names
    assert "start_datetime" in item["properties"] and item["properties"]["datetime"] is None


def test_cog_validator_rejects_plain_geotiffs(scene: tuple) -> None:
    rgb, profile = scene
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", count=3, height=400, width=500, dtype="uint8", **profile) as dst:
            dst.write(rgb)  # striped, no overviews, not written by the COG driver
        problems = validate_cog(mem.read())
    assert any("not tiled" in p for p in problems)
    assert any("LAYOUT=COG" in p for p in problems)
    tiled = {"tiled": True, "blockxsize": 128, "blockysize": 128, "count": 3, "dtype": "uint8"}
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", height=400, width=500, **tiled, **profile) as dst:
            dst.write(rgb)  # tiled, but no overviews and not a COG layout
        problems = validate_cog(mem.read())
    assert not any("not tiled" in p for p in problems)
    assert any("no overviews" in p for p in problems) and any("LAYOUT=COG" in p for p in problems)


def test_raster_metadata_comes_from_a_and_grid_from_the_high_resolution_b() -> None:
    meta_a = RasterMeta(
        dtype="uint16",
        count=8,
        height=50,
        width=60,
        nodata=0,
        crs="EPSG:32618",
        transform=(40.0, 0, 1000.0, 0, -40.0, 2000.0),
        descriptions=tuple("abcdefgh"),
    )
    meta_b = RasterMeta(
        dtype="uint8",
        count=1,
        height=200,
        width=240,
        nodata=255,
        crs="EPSG:32618",
        transform=(10.0, 0, 1000.0, 0, -10.0, 2000.0),
        descriptions=("pan",),
    )
    out = output_meta(meta_a, meta_b, "pansharpen")
    assert (out.dtype, out.count, out.nodata, out.descriptions) == ("uint16", 8, 0, tuple("abcdefgh"))
    assert (out.height, out.width, out.transform) == (200, 240, meta_b.transform)
    assert output_meta(meta_a, meta_b, "vif").transform == meta_a.transform
    no_nodata_a = RasterMeta(**{**meta_a.__dict__, "nodata": None})
    assert output_meta(no_nodata_a, meta_b, "pansharpen").nodata == 255  # B's nodata when A has none
    maugif_config = pytest.importorskip("maugif_core.config")
    assert set(GRID_FROM_B_TASKS) == set(maugif_config.MULTIPLICATIVE_TASKS)


# ------------------------------------------------------------------------------------ atomicity / idempotency
class _ExplodingArray(np.ndarray):
    """A fused raster whose rows from 256 on cannot be read: the failure hits after tile (0, 0) is written."""

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        if isinstance(key, tuple) and len(key) == 3 and isinstance(key[1], slice) and (key[1].start or 0) >= 256:
            raise RuntimeError("simulated failure while encoding the second tile row")
        return super().__getitem__(key)


def test_failed_raster_write_leaves_no_final_or_temporary_object(output_uri: str, scene: tuple) -> None:
    rgb, profile = scene
    meta = _meta(profile, rgb, 0, None)
    exploding = rgb.view(_ExplodingArray)
    with pytest.raises(RasterWriteError, match="simulated failure"):
        write_raster(exploding, output_uri, "scene-1", meta, config=OutputConfig(uri=output_uri, **CONFIG))
    assert _keys(output_uri) == []


def test_failing_writer_leaves_nothing_and_keeps_the_previous_object(output_uri: str) -> None:
    uri = join_key(output_uri, "a.bin")
    with pytest.raises(RuntimeError, match="midway"), atomic_open(uri) as handle:
        handle.write(b"x" * 1000)
        raise RuntimeError("midway")
    assert _keys(output_uri) == []
    atomic_write_bytes(uri, b"complete")
    with pytest.raises(RuntimeError), atomic_open(uri) as handle:
        handle.write(b"partial")
        raise RuntimeError("midway again")
    assert _keys(output_uri) == ["a.bin"] and _read(uri) == b"complete"
    assert not any(TEMP_MARKER in key for key in _keys(output_uri))


def test_writes_are_idempotent_and_byte_identical(output_uri: str, scene: tuple) -> None:
    rgb, profile = scene
    meta = _meta(profile, rgb, 0, ["red", "green", "blue"])
    config = OutputConfig(uri=output_uri, **CONFIG)
    write_png(rgb, png_uri(output_uri, "plain"))
    write_raster(rgb, output_uri, "scene-1", meta, config=config)
    first = {key: _read(f"{output_uri}/{key}") for key in _keys(output_uri)}
    time.sleep(1.1)  # a timestamp in any writer's metadata would now differ
    write_png(rgb, png_uri(output_uri, "plain"))
    write_raster(rgb, output_uri, "scene-1", meta, config=config)
    second = {key: _read(f"{output_uri}/{key}") for key in _keys(output_uri)}
    assert list(first) == list(second) and len(first) == 7
    assert all(first[k] == second[k] for k in first)


# -------------------------------------------------------------------------------------------- rows / Datasink
def _hwc(chw: np.ndarray) -> np.ndarray:
    """Rows carry the fused image channel-last; the fixtures are made band-first (rasterio's order)."""
    return np.ascontiguousarray(np.moveaxis(chw, 0, -1))


def _meta_json(data: np.ndarray, profile: dict | None = None) -> str:
    out = {
        "dtype": str(data.dtype),
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "nodata": 0 if profile else None,
    }
    if profile:
        out.update(crs=profile["crs"], transform=list(profile["transform"])[:6], descriptions=["r", "g", "b"])
    return json.dumps(out)


def _rows(scene: tuple) -> list[dict]:
    """Plain PNG pairs, a whole raster, a raster as 4 tile rows, an upstream failure and a bad row."""
    rgb, profile = scene
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        image = rng.integers(0, 256, (3, 40 + i, 50), dtype=np.uint8)
        rows.append(
            {
                PAIR_ID: f"plain-{i}",
                FUSED: _hwc(image),
                META_A: _meta_json(image),
                META_B: _meta_json(image),
                TASK: "vif",
                TILE_ROW: -1,
                TILE_COL: -1,
                WINDOW: "",
                STATUS: STATUS_OK,
            }
        )
    rows.append(
        {
            PAIR_ID: "raster-whole",
            FUSED: _hwc(rgb),
            META_A: _meta_json(rgb, profile),
            META_B: "",
            TASK: "vif",
            TILE_ROW: -1,
            TILE_COL: -1,
            WINDOW: "",
            STATUS: STATUS_OK,
        }
    )
    for r0, r1, row in [(0, 256, 0), (256, 400, 1)]:
        for c0, c1, col in [(0, 256, 0), (256, 500, 1)]:
            window = json.dumps({"row_off": r0, "col_off": c0, "height": r1 - r0, "width": c1 - c0})
            rows.append(
                {
                    PAIR_ID: "raster-tiled",
                    FUSED: _hwc(rgb[:, r0:r1, c0:c1]),
                    META_A: _meta_json(rgb, profile),
                    META_B: "",
                    TASK: "vif",
                    TILE_ROW: row,
                    TILE_COL: col,
                    WINDOW: window,
                    STATUS: STATUS_OK,
                }
            )
    rows.append(
        {
            PAIR_ID: "unreadable",
            FUSED: np.zeros((1, 1, 1), np.uint8),
            META_A: "",
            META_B: "",
            TASK: "vif",
            TILE_ROW: -1,
            TILE_COL: -1,
            WINDOW: "",
            STATUS: STATUS_FAILED,
            "error_stage": "read",
            "error": "RasterReadError: truncated PNG",
        }
    )
    rows.append(
        {
            PAIR_ID: "bad-shape",
            FUSED: np.zeros((5, 5, 7), np.uint8),  # 7 bands: a raster, but its grid says 9 x 9
            META_A: _meta_json(np.zeros((7, 9, 9), np.uint8)),
            META_B: "",
            TASK: "vif",
            TILE_ROW: -1,
            TILE_COL: -1,
            WINDOW: "",
            STATUS: STATUS_OK,
        }
    )
    return rows


@pytest.mark.timeout(240)
def test_datasink_writes_every_row_and_the_manifest(ray_session: None, output_uri: str, scene: tuple) -> None:
    import ray

    from pipeline.fuse.sinks import FusedImageDatasink
    from pipeline.io.manifest import done_pair_ids, latest_status

    rows = _rows(scene)
    for row in rows:
        row.setdefault("error_stage", None)
        row.setdefault("error", None)
    dataset = ray.data.from_items(rows, override_num_blocks=4)
    sink = FusedImageDatasink(OutputConfig(uri=output_uri, **CONFIG), run_id="run-1", min_rows_per_write=None)
    dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0.5})

    keys = _keys(output_uri)
    assert {"plain-0.png", "plain-1.png", "plain-2.png", "raster-whole.vrt", "raster-tiled.vrt"} <= set(keys)
    assert {"raster-tiled/0_0.tif", "raster-tiled/1_1.tif", "raster-tiled/item.json"} <= set(keys)
    assert not any(TEMP_MARKER in k for k in keys)
    top_level = {k.split("/")[0] for k in keys}
    assert top_level == {
        "plain-0.png",
        "plain-1.png",
        "plain-2.png",
        "raster-whole.vrt",
        "raster-whole",
        "raster-tiled.vrt",
        "raster-tiled",
        "_manifest",
    }
    with _gdal_path(vrt_uri(output_uri, "raster-tiled")) as path, rasterio.open(path) as mosaic:
        np.testing.assert_array_equal(mosaic.read(), scene[0])
    parts = sorted(k for k in keys if k.startswith("_manifest/"))
    assert len(parts) >= 3 and "_manifest/part-run-1-commit-00000.parquet" in parts  # >= 2 write tasks + commit
    assert sink.summary is not None
    assert (sink.summary["ok"], sink.summary["failed"]) == (5, 2)

    latest = {r["pair_id"]: r for r in latest_status(output_uri).to_pylist()}
    assert set(latest) == {
        "plain-0",
        "plain-1",
        "plain-2",
        "raster-whole",
        "raster-tiled",
        "unreadable",
        "bad-shape",
    }
    assert latest["unreadable"]["status"] == "failed" and latest["unreadable"]["error_stage"] == "read"
    assert latest["bad-shape"]["status"] == "failed" and latest["bad-shape"]["error_stage"] == "write"
    assert "(9, 9)" in latest["bad-shape"]["error"]
    assert latest["raster-tiled"]["output_uri"] == vrt_uri(output_uri, "raster-tiled")
    assert done_pair_ids(output_uri) == {"plain-0", "plain-1", "plain-2", "raster-whole", "raster-tiled"}


def test_detail_maps_go_under_extras(output_uri: str, scene: tuple) -> None:
    rgb, profile = scene
    detail = np.linspace(-1, 1, 400 * 500, dtype=np.float32).reshape(400, 500)
    quicklook = rgb[:, ::4, ::4].copy()
    row = {
        PAIR_ID: "scene-1",
        FUSED: _hwc(rgb),
        META_A: _meta_json(rgb, profile),
        TASK: "vif",
        "detail_b": detail,
        "quicklook": quicklook,
    }
    config = OutputConfig(uri=output_uri, extra_columns=("detail_b", "quicklook"), **CONFIG)
    result = write_row(row, config)
    assert result["record"][STATUS] == STATUS_OK
    keys = _keys(output_uri)
    assert {"_extras/detail_b/scene-1.tif", "_extras/quicklook/scene-1.png"} <= set(keys)
    with MemoryFile(_read(f"{output_uri}/_extras/detail_b/scene-1.tif")) as mem, mem.open() as tif:
        assert tif.crs.to_epsg() == 32618 and tif.dtypes == ("float32",)
        np.testing.assert_array_equal(tif.read(1), detail)
    assert {k.split("/")[0] for k in keys} == {"scene-1.vrt", "scene-1", "_extras"}
