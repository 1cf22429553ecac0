"""Valid rasters the fusion once refused (issue 12): NaN / +-Inf as nodata, very wide float ranges, band stacks.

Each case is met as a user meets it: GeoTIFFs written with rasterio, read by :func:`pipeline.io.readers.decode_pair`,
fused by the actor's callable (:class:`pipeline.fuse.predictor.FusionPredictor`, no Ray needed) with the bundled
pretrained models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import geotiff_variant, write_geotiff

from pipeline import schema as S
from pipeline.fuse.predictor import FusionPredictor, PredictorConfig
from pipeline.io.decode import decode_pair

REGION = (slice(5, 15), slice(10, 30))  # the nodata block of the tests, rows x cols


@pytest.fixture(scope="module")
def predictor() -> FusionPredictor:
    return FusionPredictor(PredictorConfig(device="cpu", multiplicative_overrides={"steps": 10}))


def _bands_first(fused: np.ndarray) -> np.ndarray:
    """The predictor's channel-last ``fused`` as ``(C, H, W)``, the layout rasterio reads the inputs in."""
    return np.moveaxis(fused if fused.ndim == 3 else fused[..., None], -1, 0)


def _fuse_rows(predictor: FusionPredictor, rows: list[dict]) -> list[tuple[str, str | None, np.ndarray | None]]:
    """Fused images (bands first) with each row's status and error."""
    keys = list(rows[0])
    out = predictor({k: [row[k] for row in rows] for k in keys})
    return [
        (status, error, _bands_first(S.decode_array(fused)) if fused is not None else None)
        for status, error, fused in zip(out[S.STATUS], out[S.ERROR], out[S.FUSED], strict=True)
    ]


def _fuse_files(predictor: FusionPredictor, uri_a: Path, uri_b: Path, task: str = "vif") -> np.ndarray:
    row = {S.PAIR_ID: uri_a.stem, S.URI_A: str(uri_a), S.URI_B: str(uri_b), S.TASK: task, S.STATUS: S.STATUS_OK}
    decoded = decode_pair(row)
    assert decoded[S.STATUS] == S.STATUS_OK, decoded[S.ERROR]
    [(status, error, fused)] = _fuse_rows(predictor, [decoded])
    assert status == S.STATUS_OK, error
    return fused


def _float_a(scale: float) -> np.ndarray:
    """A one-band float32 Landsat crop, ``scale`` 1: values in [0, 1]; otherwise a stretch is needed."""
    base = geotiff_variant("uint8", bands=1)[..., :1].astype(np.float32) / 255.0
    return (base * scale - (0.0 if scale == 1 else 0.25 * scale)).astype(np.float32)


# --------------------------------------------------------------------------------------------- NaN / Inf nodata


@pytest.mark.parametrize("scale", [1.0, 400.0])
@pytest.mark.parametrize("case", ["declared nan", "undeclared nan", "inf"])
def test_nan_and_inf_are_masked_exactly_like_declared_nodata(predictor, tmp_path, scale, case) -> None:
    a = _float_a(scale)
    b_path = write_geotiff(tmp_path / "b.tif", geotiff_variant("uint8", bands=3))
    reference = a.copy()
    reference[REGION] = -9999.0
    ref_path = write_geotiff(tmp_path / "a_ref.tif", reference, nodata=-9999.0)
    holed = a.copy()
    if case == "inf":
        holed[5:10, 10:30] = np.inf
        holed[10:15, 10:30] = -np.inf
    else:
        holed[REGION] = np.nan
    a_path = write_geotiff(tmp_path / "a.tif", holed, nodata=float("nan") if case == "declared nan" else None)

    expected = _fuse_files(predictor, ref_path, b_path)
    fused = _fuse_files(predictor, a_path, b_path)
    assert fused.shape == (1, 48, 64) and fused.dtype == np.float32
    mask = np.zeros((48, 64), bool)
    mask[REGION] = True
    assert (expected[0][mask] == -9999.0).all()
    assert np.isnan(fused[0][mask]).all()  # NaN: the declared nodata, or NaN for a float A declaring none
    np.testing.assert_array_equal(fused[0][~mask], expected[0][~mask])  # fused elsewhere, as with nodata
    assert np.isfinite(fused[0][~mask]).all() and not np.array_equal(fused[0][~mask], a[..., 0][~mask])


@pytest.mark.parametrize(("dtype", "fill"), [("uint16", 0), ("float32", np.nan)])
def test_nan_in_b_marks_the_output_in_a_dtype(predictor, tmp_path, dtype, fill) -> None:
    a = geotiff_variant(dtype, bands=3)
    b = _float_a(400.0)
    b[REGION] = np.nan
    fused = _fuse_files(
        predictor, write_geotiff(tmp_path / "a.tif", a), write_geotiff(tmp_path / "b.tif", b), task="mff"
    )
    assert fused.shape == (3, 48, 64) and fused.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fused[:, REGION[0], REGION[1]], np.full((3, 10, 20), fill, dtype))
    rest = np.ones((48, 64), bool)
    rest[REGION] = False
    assert np.isfinite(fused[:, rest].astype(np.float64)).all() and fused[:, rest].std() > 0


def test_multiplicative_nan_in_either_image_is_nodata_on_the_output_grid(predictor) -> None:
    rng = np.random.default_rng(0)
    pan = rng.random((48, 64, 1)).astype(np.float32) * 900.0
    ms = (pan.reshape(12, 4, 16, 4, 1).mean(axis=(1, 3)) * np.array([1.0, 0.8, 0.6, 0.4])).astype(np.float32)
    ms[2:4, 3:6] = np.nan  # a 2 x 3 low-resolution hole: an 8 x 12 hole on the PAN grid
    pan[40, 60] = np.inf
    row = {
        S.PAIR_ID: "ps",
        S.TASK: "pansharpen",
        S.IMAGE_A: ms,
        S.IMAGE_B: pan,
        S.META_A: json.dumps({"nodata": None}),
        S.META_B: json.dumps({"nodata": None}),
        S.STATUS: S.STATUS_OK,
    }
    [(status, error, fused)] = _fuse_rows(predictor, [row])
    assert status == S.STATUS_OK, error
    assert fused.shape == (4, 48, 64) and fused.dtype == np.float32
    mask = np.zeros((48, 64), bool)
    mask[8:16, 12:24] = True
    mask[40, 60] = True
    np.testing.assert_array_equal(np.isnan(fused).all(axis=0), mask)
    assert np.isfinite(fused[:, ~mask]).all()


# --------------------------------------------------------------------------------------------- wide value ranges


def test_very_wide_float_range_fuses_finitely_within_the_input_range(predictor, tmp_path) -> None:
    rng = np.random.default_rng(0)
    a = (10 ** rng.uniform(-6, 30, (48, 64, 1))).astype(np.float32)
    a[::7, ::5] *= -1.0  # negative values too
    a[0, 0], a[0, 1] = 3.0e38, -3.0e38  # near float32's limits: their difference overflows float32
    b_path = write_geotiff(tmp_path / "b.tif", geotiff_variant("uint8", bands=1))
    fused = _fuse_files(predictor, write_geotiff(tmp_path / "a.tif", a), b_path)
    assert fused.shape == (1, 48, 64) and fused.dtype == np.float32
    assert np.isfinite(fused).all()
    assert fused.min() >= a.min() and fused.max() <= a.max()
    assert not np.array_equal(fused[0], a[..., 0])


def test_rescaled_input_gives_the_rescaled_output(predictor, tmp_path) -> None:
    """The mapping is per image and linear: A in other units (x 1e25, e.g. another physical unit) fuses to the
    same result in those units."""
    a = _float_a(1000.0)
    b_path = write_geotiff(tmp_path / "b.tif", geotiff_variant("uint8", bands=1))
    small = _fuse_files(predictor, write_geotiff(tmp_path / "a1.tif", a), b_path)
    large = _fuse_files(predictor, write_geotiff(tmp_path / "a2.tif", a * np.float32(1e25)), b_path)
    assert np.isfinite(large).all()
    close = np.isclose(large.astype(np.float64), small.astype(np.float64) * 1e25, rtol=1e-4, atol=1e25 * 1e-3)
    assert close.mean() > 0.999
    assert np.abs(small - a[..., 0]).max() > 1.0  # fusion changed A in its own units


# --------------------------------------------------------------------------------------------- band stacks


@pytest.mark.parametrize("bands_b", [5, 1])
@pytest.mark.parametrize("nodata", [None, 0.0])  # without: the batched path; with: the tiled nodata path
def test_five_band_raster_fuses_with_the_change_in_every_band(predictor, tmp_path, bands_b, nodata) -> None:
    a = geotiff_variant("uint16", bands=5)
    b = geotiff_variant("uint16", bands=bands_b)[::-1].copy()  # flipped: detail that A lacks
    a_path = write_geotiff(tmp_path / "a.tif", a, nodata=nodata)
    fused = _fuse_files(predictor, a_path, write_geotiff(tmp_path / "b.tif", b), task="mff")
    assert fused.shape == (5, 48, 64) and fused.dtype == np.uint16
    change = fused.astype(np.int64) - np.moveaxis(a, 2, 0).astype(np.int64)
    valid = ((fused > 0) & (fused < 65535)).all(axis=0)
    if nodata is not None:
        valid &= ~(a == 0).any(axis=2)
    assert valid.mean() > 0.8
    spread = change.max(axis=0) - change.min(axis=0)
    assert spread[valid].max() <= 1  # one intensity change for every band (uint16 rounding)
    assert np.abs(change[:, valid]).max() > 100


def test_two_dimensional_arrays_handed_to_the_actor_fuse_too(predictor) -> None:
    """Rows built outside the readers may carry ``(H, W)`` arrays; the float path takes them like ``(H, W, 1)``."""
    rng = np.random.default_rng(0)
    a = (rng.random((17, 31)) * 500.0).astype(np.float32)
    a[2, 3] = np.nan
    b = rng.integers(0, 256, (17, 31), dtype=np.uint8)
    meta = json.dumps({"nodata": None})
    row = {S.PAIR_ID: "flat", S.TASK: "vif", S.IMAGE_A: a, S.IMAGE_B: b, S.META_A: meta, S.META_B: meta}
    [(status, error, fused)] = _fuse_rows(predictor, [{**row, S.STATUS: S.STATUS_OK}])
    assert status == S.STATUS_OK, error
    assert fused.shape == (1, 17, 31) and np.isnan(fused).sum() == 1 and np.isnan(fused[0, 2, 3])
