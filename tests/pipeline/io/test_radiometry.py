"""Invalid pixels, the per-image unit mapping and its way back (pipeline.io.radiometry; issue 12, valid images)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.io.radiometry import fill_value, invalid_mask, output_nodata, unit_mapping


def test_nan_and_inf_are_invalid_with_or_without_declared_nodata() -> None:
    image = np.ones((4, 5, 2), np.float32)
    image[0, 0, 1] = np.nan
    image[1, 2, 0] = np.inf
    image[3, 4, 1] = -np.inf
    image[2, 2, :] = -9999.0
    expected = np.zeros((4, 5), bool)
    expected[0, 0] = expected[1, 2] = expected[3, 4] = True
    np.testing.assert_array_equal(invalid_mask(image, None), expected)
    np.testing.assert_array_equal(invalid_mask(image, float("nan")), expected)
    with_declared = expected.copy()
    with_declared[2, 2] = True
    np.testing.assert_array_equal(invalid_mask(image, -9999.0), with_declared)
    assert invalid_mask(np.ones((4, 5, 1), np.float32), None) is None


def test_declared_nodata_in_any_band_and_integers() -> None:
    image = np.full((3, 3, 3), 7, np.uint16)
    image[1, 1, 2] = 0
    mask = invalid_mask(image, 0.0)
    assert mask.sum() == 1 and mask[1, 1]
    assert invalid_mask(image, float("nan")) is None  # an integer image cannot hold NaN
    assert invalid_mask(image, 70000.0) is None  # nor a value outside its range


def test_natural_and_unit_images_keep_their_mapping() -> None:
    u8 = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    mapping = unit_mapping(u8, None)
    assert mapping.kind == "natural"
    np.testing.assert_array_equal(mapping.to_unit(u8, None), u8.astype(np.float32) / 255)
    unit = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    unit_nan = unit.copy()
    unit_nan[0, 0, 0] = np.nan
    mapping = unit_mapping(unit_nan, invalid_mask(unit_nan, None))
    assert mapping.kind == "unit"  # NaN does not make a [0, 1] image look out of range


def test_robust_range_is_per_image_and_ignores_a_few_extremes() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(100.0, 200.0, (100, 100, 1)).astype(np.float32)
    image[0, :5, 0] = 1e30  # five extreme pixels out of 10,000
    image[1, :5, 0] = -1e30
    mapping = unit_mapping(image, None)
    assert mapping.kind == "stretch"
    assert 100.0 <= mapping.lo < 101.0 and 199.0 < mapping.hi <= 200.0
    unit = mapping.to_unit(image, None)
    assert unit.dtype == np.float32 and np.isfinite(unit).all()
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert np.std(unit[2:]) > 0.25  # the bulk keeps its contrast, not squashed to one value
    assert (mapping.vmin, mapping.vmax) == (float(np.float32(-1e30)), float(np.float32(1e30)))


@pytest.mark.parametrize(
    "values",
    [
        (1e-6, 1e30),
        (-3.0e38, 3.0e38),  # the whole float32 range: hi - lo overflows float32, not float64
        (-5.0, -1.0),
    ],
)
def test_wide_ranges_map_finitely_and_back_into_the_input_range(values: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    lo, hi = values
    if lo > 0:
        image = (10 ** rng.uniform(np.log10(lo), np.log10(hi), (40, 30, 1))).astype(np.float32)
    else:
        image = rng.uniform(lo, hi, (40, 30, 1)).astype(np.float32)
    mapping = unit_mapping(image, None)
    unit = mapping.to_unit(image, None)
    assert np.isfinite(unit).all() and unit.min() >= 0.0 and unit.max() <= 1.0
    for fused in (unit, np.clip(unit + 0.3, 0, 1), np.zeros_like(unit), np.ones_like(unit)):
        for out in (mapping.from_unit(fused), mapping.from_unit_residual(fused, unit, image)):
            assert out.dtype == np.float32 and np.isfinite(out).all()
            assert out.min() >= image.min() and out.max() <= image.max()
    # Where fusion changed nothing, A comes back exactly, extremes beyond the robust range included.
    np.testing.assert_array_equal(mapping.from_unit_residual(unit, unit, image), image)


def test_integers_outside_the_natural_types_round_trip() -> None:
    image = np.array([[-12000, -500], [0, 13000]], np.int16)[..., None]
    mapping = unit_mapping(image, None)
    unit = mapping.to_unit(image, None)
    out = mapping.from_unit_residual(unit, unit, image)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, image)
    shifted = mapping.from_unit_residual(np.clip(unit + 0.5, 0, 1), unit, image)
    assert (shifted >= image).all() and shifted.max() <= 13000


def test_output_nodata_rule() -> None:
    assert output_nodata("float32", -9999.0, 0.0) == -9999.0
    assert output_nodata("uint16", None, 255.0) == 255.0
    assert output_nodata("uint8", None, 65535.0) is None  # uint8 cannot hold it
    assert np.isnan(output_nodata("float32", None, None))
    assert np.isnan(output_nodata("float32", None, float("nan")))
    assert output_nodata("uint16", None, float("nan")) is None
    assert fill_value("uint16", None, float("nan")) == 0.0
