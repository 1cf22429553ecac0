"""Readers: lossless round trips, windowed reads and clear failures, locally and on a real S3 server."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from factories import (
    geotiff_variant,
    landsat_crop,
    mfi_crop,
    truncate,
    upload_file,
    write_gdal,
    write_geotiff,
    write_pillow,
)
from PIL import Image

from pipeline import schema as S
from pipeline.config.io_config import ReadConfig
from pipeline.errors import GridError, RasterReadError
from pipeline.io.readers import decode_pair, nodata_value, read_image, read_meta, read_window, sniff_format

GDAL_S3 = ReadConfig(s3_access="gdal")


@pytest.fixture(params=["local", "s3-fsspec", "s3-gdal"])
def place(request):
    """``place(path) -> (uri, ReadConfig)``: the file as is, or uploaded and read through s3fs or /vsis3/."""
    if request.param == "local":
        return lambda path: (str(path), ReadConfig())
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    config = ReadConfig() if request.param == "s3-fsspec" else GDAL_S3
    return lambda path: (upload_file(endpoint, path, bucket, f"img/{path.name}"), config)


# ------------------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------------------


def test_png_8bit_rgb_and_grey(tmp_path: Path, place) -> None:
    rgb = mfi_crop()
    grey = rgb[:, :, :1].copy()
    for name, array in (("rgb.png", rgb), ("grey.png", grey)):
        uri, config = place(write_pillow(tmp_path / name, array, "PNG"))
        image, meta = read_image(uri, config=config)
        np.testing.assert_array_equal(image, array)
        assert image.dtype == np.uint8 and meta["format"] == "PNG" and meta["count"] == array.shape[2]
        assert meta["crs"] is None and meta["transform"] is None and meta["uri"] == uri
        json.dumps(meta)


def test_png_16bit_grey_and_rgb(tmp_path: Path, place) -> None:
    rgb16 = mfi_crop().astype(np.uint16) * 257 + 3
    grey16 = rgb16[:, :, 1:2].copy()
    uri, config = place(write_pillow(tmp_path / "g16.png", grey16, "PNG"))
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, grey16)
    assert image.dtype == np.uint16 and meta["dtype"] == "uint16"
    uri, config = place(write_gdal(tmp_path / "c16.png", rgb16, "PNG"))
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, rgb16)  # Pillow would squash this to 8 bits
    assert image.dtype == np.uint16 and meta["format"] == "PNG" and meta["transform"] is None


def test_jpeg_and_bmp(tmp_path: Path, place) -> None:
    array = mfi_crop()
    jpeg = write_pillow(tmp_path / "x.jpg", array, "JPEG", quality=92)
    expected = np.asarray(Image.open(jpeg).convert("RGB"))
    uri, config = place(jpeg)
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, expected)
    assert meta["format"] == "JPEG" and np.abs(image.astype(int) - array).mean() < 8
    uri, config = place(write_pillow(tmp_path / "x.bmp", array, "BMP"))
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, array)
    assert meta["format"] == "BMP" and meta["bytes"] > array.size


@pytest.mark.parametrize(
    ("dtype", "nodata"), [("uint8", 0), ("uint16", 65535), ("int16", -32768), ("float32", math.nan)]
)
def test_geotiff_round_trip(tmp_path: Path, place, dtype: str, nodata: float) -> None:
    array = geotiff_variant(dtype, bands=3)
    _, crs, transform = landsat_crop(array.shape[0], array.shape[1])
    names = ["red", "green", "blue"]
    path = write_geotiff(tmp_path / f"{dtype}.tif", array, nodata=nodata, descriptions=names)
    uri, config = place(path)
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, array)
    assert image.dtype == np.dtype(dtype) and image.shape == array.shape
    assert meta["dtype"] == dtype and meta["count"] == 3 and meta["format"] == "TIFF"
    assert meta["crs"] == crs.to_string() == "EPSG:32618"
    assert meta["transform"] == pytest.approx(list(transform)[:6])
    assert meta["descriptions"] == names
    if math.isnan(nodata):
        assert meta["nodata"] == "nan" and math.isnan(nodata_value(meta))
    else:
        assert nodata_value(meta) == nodata
    assert json.loads(json.dumps(meta)) == meta  # JSON-ready


def test_many_bands(tmp_path: Path, place) -> None:
    array = geotiff_variant("uint16", bands=10)
    uri, config = place(write_geotiff(tmp_path / "ten.tif", array, descriptions=[f"b{i}" for i in range(10)]))
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, array)
    assert meta["count"] == 10 and meta["descriptions"][9] == "b9"


def test_plain_tiff_is_not_georeferenced(tmp_path: Path) -> None:
    array = mfi_crop()
    image, meta = read_image(str(write_gdal(tmp_path / "plain.tif", array)))
    np.testing.assert_array_equal(image, array)
    assert meta["crs"] is None and meta["transform"] is None


def test_wrong_extension_still_decodes(tmp_path: Path, place) -> None:
    array = mfi_crop()
    uri, config = place(write_pillow(tmp_path / "really_png.tif", array, "PNG"))
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, array)
    assert meta["format"] == "PNG"
    geo = geotiff_variant("int16")
    uri, config = place(write_geotiff(tmp_path / "really_tiff.png", geo))
    image, meta = read_image(uri, config=config)
    np.testing.assert_array_equal(image, geo)
    assert meta["format"] == "TIFF" and meta["crs"] == "EPSG:32618"


def test_sniff_format() -> None:
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "PNG"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff_format(b"II*\x00") == sniff_format(b"MM\x00*") == "TIFF"
    assert sniff_format(b"BM6") == "BMP"
    assert sniff_format(b"GIF89a") is None and sniff_format(b"") is None


# ------------------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------------------


def test_window_equals_slice_of_full_read(tmp_path: Path, place) -> None:
    array = geotiff_variant("float32", bands=4, height=48, width=64)
    uri, config = place(write_geotiff(tmp_path / "w.tif", array, nodata=-9999.0))
    full, meta = read_image(uri, config=config)
    for window in [(0, 0, 16, 16), (5, 7, 20, 33), (32, 48, 16, 16), (0, 0, 48, 64)]:
        part, part_meta = read_window(uri, window, config=config)
        r, c, h, w = window
        np.testing.assert_array_equal(part, full[r : r + h, c : c + w])
        assert part_meta["window"] == {"row_off": r, "col_off": c, "height": h, "width": w}
        t = part_meta["window_transform"]
        assert t[2] == pytest.approx(meta["transform"][2] + c * meta["transform"][0])
        assert t[5] == pytest.approx(meta["transform"][5] + r * meta["transform"][4])
    part, _ = read_window(uri, (40, 60, 16, 16), config=config, boundless=True)
    np.testing.assert_array_equal(part[:8, :4], full[40:, 60:])
    assert (part[8:] == -9999.0).all() and (part[:, 4:] == -9999.0).all()
    with pytest.raises(GridError, match="outside the 48x64 image"):
        read_window(uri, (40, 60, 16, 16), config=config)


def test_window_of_plain_image(tmp_path: Path) -> None:
    array = mfi_crop()
    path = write_pillow(tmp_path / "p.png", array, "PNG")
    part, _ = read_window(str(path), (3, 4, 10, 11))
    np.testing.assert_array_equal(part, array[3:13, 4:15])
    from pipeline.io.tiling import Window

    part, _ = read_window(str(path), Window(row_off=1, col_off=2, height=5, width=6))
    np.testing.assert_array_equal(part, array[1:6, 2:8])


def test_read_meta_does_not_need_pixels(tmp_path: Path) -> None:
    array = geotiff_variant("uint16", bands=3)
    path = write_geotiff(tmp_path / "m.tif", array, nodata=0)
    meta = read_meta(str(path))
    assert (meta["height"], meta["width"], meta["count"], meta["dtype"]) == (48, 64, 3, "uint16")


# ------------------------------------------------------------------------------------------------------------
# Bad input: RasterReadError naming the URI
# ------------------------------------------------------------------------------------------------------------


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    array = mfi_crop(height=64, width=64)
    files = {
        "zero": (tmp_path / "zero.png", "empty file"),
        "png": (truncate(write_pillow(tmp_path / "t.png", array, "PNG"), 0.6), "truncated PNG"),
        "jpeg": (truncate(write_pillow(tmp_path / "t.jpg", array, "JPEG"), 0.6), "truncated JPEG"),
        "tiff": (
            truncate(write_geotiff(tmp_path / "t.tif", geotiff_variant("uint16"), tiled=False), 0.3),
            "TIFF",
        ),
        "text": (tmp_path / "text.png", "unrecognised format"),
        "float64": (
            write_geotiff(tmp_path / "f64.tif", geotiff_variant("float64")),
            "unsupported dtype 'float64'",
        ),
    }
    files["zero"][0].write_bytes(b"")
    files["text"][0].write_text("this is not an image")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    files["corrupt"] = (corrupt, "TIFF")
    return files


@pytest.mark.parametrize("case", ["zero", "png", "jpeg", "tiff", "text", "float64", "corrupt"])
def test_bad_input_raises_read_error(tmp_path: Path, place, case: str) -> None:
    path, expected = bad_files(tmp_path)[case]
    uri, config = place(path)
    with pytest.raises(RasterReadError) as info:
        read_image(uri, config=config)
    assert uri in str(info.value) and expected in str(info.value)
    assert isinstance(info.value, OSError)


def test_missing_file_key_and_bucket(tmp_path: Path, s3_server: str, s3_bucket: str) -> None:
    for uri, config in [
        (str(tmp_path / "nope.png"), ReadConfig()),
        (f"s3://{s3_bucket}/nope.tif", ReadConfig()),
        (f"s3://{s3_bucket}/nope.tif", GDAL_S3),
        ("s3://no-such-bucket-xyz/a.png", ReadConfig()),
    ]:
        with pytest.raises(RasterReadError, match="not found") as info:
            read_image(uri, config=config)
        assert uri in str(info.value)


def test_size_limit(tmp_path: Path) -> None:
    path = write_pillow(tmp_path / "big.png", mfi_crop(), "PNG")
    with pytest.raises(RasterReadError, match="max_pixels"):
        read_image(str(path), config=ReadConfig(max_pixels=100))
    tif = write_geotiff(tmp_path / "big.tif", geotiff_variant("uint8"))
    with pytest.raises(RasterReadError, match="read it by window"):
        read_image(str(tif), config=ReadConfig(max_pixels=100))
    part, _ = read_window(str(tif), (0, 0, 8, 8), config=ReadConfig(max_pixels=100))
    assert part.shape == (8, 8, 3)


def test_truncated_png_fails_even_if_header_intact(tmp_path: Path) -> None:
    path = write_pillow(tmp_path / "t.png", mfi_crop(height=64, width=64), "PNG")
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # IEND and a little of the last IDAT gone
    with pytest.raises(RasterReadError, match="truncated PNG"):
        read_image(str(path))
    assert Image.open(io.BytesIO(data[:-20])).size == (64, 64)  # the header alone still parses


# ------------------------------------------------------------------------------------------------------------
# decode_pair
# ------------------------------------------------------------------------------------------------------------


def pair_row(pair_id: str, uri_a: str, uri_b: str, task: str = "vif") -> dict:
    return {
        S.PAIR_ID: pair_id,
        S.URI_A: uri_a,
        S.URI_B: uri_b,
        S.TASK: task,
        S.STATUS: S.STATUS_OK,
        S.ERROR_STAGE: None,
        S.ERROR: None,
    }


def test_decode_pair_ok_and_failures(tmp_path: Path) -> None:
    a = write_pillow(tmp_path / "a.png", mfi_crop(1, 1), "PNG")
    b = write_pillow(tmp_path / "b.png", mfi_crop(1, 2)[:, :, :1].copy(), "PNG")
    small = write_pillow(tmp_path / "s.png", mfi_crop(1, 2, 20, 20), "PNG")
    out = decode_pair(pair_row("ok", str(a), str(b)))
    assert out[S.STATUS] == S.STATUS_OK and out[S.IMAGE_A].shape == (40, 56, 3) and out[S.IMAGE_B].shape[2] == 1
    assert json.loads(out[S.META_A])["format"] == "PNG" and out[S.BYTES_IN] > 0
    bad = decode_pair(pair_row("size", str(a), str(small)))
    assert bad[S.STATUS] == S.STATUS_FAILED and bad[S.ERROR_STAGE] == S.STAGE_READ
    assert "size mismatch" in bad[S.ERROR] and "40x56" in bad[S.ERROR] and "20x20" in bad[S.ERROR]
    missing = decode_pair(pair_row("missing", str(a), str(tmp_path / "gone.png")))
    assert missing[S.STATUS] == S.STATUS_FAILED and "gone.png" in missing[S.ERROR]
    assert missing[S.IMAGE_A] is None
    upstream = {**pair_row("x", "", ""), S.STATUS: S.STATUS_FAILED, S.ERROR_STAGE: "discover", S.ERROR: "why"}
    passed = decode_pair(upstream)
    assert (passed[S.STATUS], passed[S.ERROR_STAGE], passed[S.ERROR]) == (S.STATUS_FAILED, "discover", "why")


def test_decode_pair_crs_mismatch(tmp_path: Path) -> None:
    array = geotiff_variant("uint16")
    a = write_geotiff(tmp_path / "a.tif", array)
    b = write_geotiff(tmp_path / "b.tif", array, crs="EPSG:32612")
    out = decode_pair(pair_row("crs", str(a), str(b), task="general"))
    assert out[S.STATUS] == S.STATUS_FAILED and "CRS mismatch" in out[S.ERROR]


@pytest.mark.timeout(180)
def test_decode_pair_in_ray_map(tmp_path: Path, ray_session, s3_server: str, s3_bucket: str) -> None:
    import ray

    uris = {}
    for name, array in (("a", mfi_crop(1, 1)), ("b", mfi_crop(1, 2)), ("c", mfi_crop(1, 2, 20, 20))):
        uris[name] = upload_file(s3_server, write_pillow(tmp_path / f"{name}.png", array, "PNG"), s3_bucket, name)
    g16 = geotiff_variant("uint16")
    uris["g1"] = upload_file(s3_server, write_geotiff(tmp_path / "g1.tif", g16), s3_bucket, "g1.tif")
    uris["g2"] = upload_file(s3_server, write_geotiff(tmp_path / "g2.tif", g16), s3_bucket, "g2.tif")
    zero = tmp_path / "z.png"
    zero.write_bytes(b"")
    uris["z"] = upload_file(s3_server, zero, s3_bucket, "z.png")
    rows = [
        pair_row("good", uris["a"], uris["b"]),
        pair_row("geo16", uris["g1"], uris["g2"], task="general"),
        pair_row("shape", uris["a"], uris["c"]),
        pair_row("zero", uris["z"], uris["b"]),
        {
            **pair_row("lonely", uris["a"], ""),
            S.STATUS: S.STATUS_FAILED,
            S.ERROR_STAGE: "discover",
            S.ERROR: "x",
        },
    ]
    ds = ray.data.from_items(rows).map(decode_pair, fn_kwargs={"config": ReadConfig()}, num_cpus=0.5)
    out = {r[S.PAIR_ID]: r for r in ds.take_all()}
    assert out["good"][S.STATUS] == S.STATUS_OK
    np.testing.assert_array_equal(out["good"][S.IMAGE_A], mfi_crop(1, 1))
    assert out["geo16"][S.IMAGE_A].dtype == np.uint16 and json.loads(out["geo16"][S.META_A])["crs"] == "EPSG:32618"
    assert out["shape"][S.ERROR_STAGE] == S.STAGE_READ and "size mismatch" in out["shape"][S.ERROR]
    assert "empty file" in out["zero"][S.ERROR] and uris["z"] in out["zero"][S.ERROR]
    assert out["lonely"][S.ERROR_STAGE] == "discover"
