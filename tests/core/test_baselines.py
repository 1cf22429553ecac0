"""Tests of the classical fusion baselines (``maugif_core.baselines``, SPEC §1.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from maugif_core import baselines
from maugif_core.baselines import (
    ADDITIVE_METHODS,
    METHODS,
    SPECTRAL_METHODS,
    build_laplacian_pyramid,
    collapse_laplacian_pyramid,
    fuse,
)
from maugif_core.imaging import luma, rgb_to_ycbcr, saturation_weighted_chroma, to_unit_float

MFI_WHU = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "MFI-WHU"


# --------------------------------------------------------------------------------------------- helpers


def _smooth_rgb(h: int, w: int, seed: int = 0, lo: float = 0.15, hi: float = 0.85) -> np.ndarray:
    """A colourful float32 RGB image in [lo, hi] (mid-range, so no clamping hides errors)."""
    rng = np.random.default_rng(seed)
    img = np.stack([gaussian_filter(rng.random((h, w)), 3) for _ in range(3)], axis=-1)
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + (hi - lo) * img).astype(np.float32)


def _textured_grey(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((h, w)), 1.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def _spatial_frequency(image: np.ndarray) -> float:
    y = image.astype(np.float64)
    return float(np.sqrt(np.mean(np.diff(y, axis=0) ** 2) + np.mean(np.diff(y, axis=1) ** 2)))


def _rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)))


def _material_scene(h: int, w: int, bands: int, seed: int, materials: int = 4) -> np.ndarray:
    """``(h, w, bands)`` float32 scene: smoothly mixed material spectra times a fine-textured shading."""
    rng = np.random.default_rng(seed)
    abundance = np.stack([gaussian_filter(rng.random((h, w)), 6) for _ in range(materials)], axis=-1)
    abundance /= abundance.sum(axis=-1, keepdims=True)
    spectra = rng.uniform(0.2, 0.9, size=(materials, bands))
    shading = gaussian_filter(rng.random((h, w)), 1.0)
    shading = 0.4 + 0.6 * (shading - shading.min()) / (shading.max() - shading.min())
    return ((abundance @ spectra) * shading[..., None]).astype(np.float32)


# --------------------------------------------------------------------------------------------- registry


def test_methods_registry_and_dispatch() -> None:
    assert METHODS == ADDITIVE_METHODS + SPECTRAL_METHODS
    assert set(METHODS) == {"average", "maxabs", "dwt", "laplacian", "bicubic", "brovey", "gihs", "gsa", "mtf_glp"}
    a, b = _smooth_rgb(20, 24, 1), _smooth_rgb(20, 24, 2)
    for name in ADDITIVE_METHODS:
        np.testing.assert_array_equal(fuse(name, a, b), getattr(baselines, name)(a, b))
    ms, pan = _material_scene(8, 8, 3, 0), _textured_grey(16, 16)
    for name in SPECTRAL_METHODS:
        np.testing.assert_array_equal(fuse(name, ms, pan), getattr(baselines, name)(ms, pan))


def test_core_baselines_import_no_io_stacks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, maugif_core.baselines; "
        "bad = [m for m in ('ray', 'rasterio', 'fsspec', 'cv2') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------------------------- additive


def _layouts() -> list[tuple[str, np.ndarray]]:
    rgb = _smooth_rgb(33, 47, 3)
    grey = luma(rgb)
    alpha = np.linspace(0, 1, 33 * 47, dtype=np.float32).reshape(33, 47, 1)
    return [
        ("grey_uint8", np.rint(grey * 255).astype(np.uint8)),
        ("grey1_uint16", np.rint(grey[..., None] * 65535).astype(np.uint16)),
        ("rgb_uint8", np.rint(rgb * 255).astype(np.uint8)),
        ("rgb_uint16", np.rint(rgb * 65535).astype(np.uint16)),
        ("rgb_float32", rgb),
        ("rgb_float64", rgb.astype(np.float64)),
        ("rgba_uint8", np.rint(np.concatenate([rgb, alpha], -1) * 255).astype(np.uint8)),
        ("grey3_uint8", np.repeat(np.rint(grey * 255).astype(np.uint8)[..., None], 3, axis=2)),
    ]


@pytest.mark.parametrize("method", ADDITIVE_METHODS)
@pytest.mark.parametrize("layout", [name for name, _ in _layouts()])
def test_additive_shape_dtype_layout(method: str, layout: str) -> None:
    image_a = dict(_layouts())[layout]
    image_b = _smooth_rgb(33, 47, 9)  # colour B with every layout of A
    fused = fuse(method, image_a, image_b)
    assert fused.shape == image_a.shape
    assert fused.dtype == image_a.dtype
    unit = to_unit_float(fused)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    if layout == "rgba_uint8":
        np.testing.assert_array_equal(fused[..., 3], image_a[..., 3])  # A's alpha carried over
    if layout == "grey3_uint8":  # grey A under from_a: three equal channels
        assert np.array_equal(fused[..., 0], fused[..., 1]) and np.array_equal(fused[..., 0], fused[..., 2])


@pytest.mark.parametrize("layout", ["grey_uint8", "rgb_uint8", "rgb_uint16"])
def test_average_of_identical_images_is_identity(layout: str) -> None:
    image = dict(_layouts())[layout]
    np.testing.assert_array_equal(fuse("average", image, image.copy()), image)


def test_average_of_identical_float_images_is_identity() -> None:
    image = _smooth_rgb(31, 29, 4)
    np.testing.assert_allclose(fuse("average", image, image.copy()), image, atol=1e-6)


@pytest.mark.parametrize("method", ["maxabs", "dwt", "laplacian"])
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (37, 53, 3)])
def test_selection_methods_of_identical_images_are_identity(method: str, shape: tuple[int, ...]) -> None:
    image = _smooth_rgb(*shape[:2], seed=5) if len(shape) == 3 else _textured_grey(*shape, seed=5)
    np.testing.assert_allclose(fuse(method, image, image.copy()), image, atol=2e-5)


@pytest.mark.parametrize("shape", [(37, 53), (1, 7), (64, 65), (5, 5), (2, 9)])
def test_laplacian_pyramid_perfect_reconstruction(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(6).random(shape).astype(np.float32)
    side, max_levels = min(shape), 0
    while side > 1:
        side, max_levels = (side + 1) // 2, max_levels + 1
    for levels in range(max_levels + 1):
        pyramid = build_laplacian_pyramid(image, levels)
        assert len(pyramid) == levels + 1
        np.testing.assert_allclose(collapse_laplacian_pyramid(pyramid), image, atol=1e-5)


def test_laplacian_pyramid_level_sizes_and_constant_image() -> None:
    pyramid = build_laplacian_pyramid(np.full((37, 53), 0.3, np.float32), 4)
    assert [p.shape for p in pyramid] == [(37, 53), (19, 27), (10, 14), (5, 7), (3, 4)]
    # Interpolation weights sum to one up to the borders: a constant image has no detail anywhere.
    for detail in pyramid[:-1]:
        np.testing.assert_allclose(detail, 0.0, atol=1e-6)
    np.testing.assert_allclose(pyramid[-1], 0.3, atol=1e-6)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym4"])
@pytest.mark.parametrize("shape", [(37, 53), (31, 64), (9, 11)])
def test_dwt_keeps_odd_sizes(wavelet: str, shape: tuple[int, int]) -> None:
    a, b = _textured_grey(*shape, seed=7), _textured_grey(*shape, seed=8)
    fused = fuse("dwt", a, b, wavelet=wavelet)
    assert fused.shape == shape
    np.testing.assert_allclose(fuse("dwt", a, a.copy(), wavelet=wavelet), a, atol=2e-5)


def test_dwt_and_laplacian_levels_option_changes_result() -> None:
    a, b = _textured_grey(64, 64, 1), _textured_grey(64, 64, 2)
    for method in ("dwt", "laplacian"):
        one, three = fuse(method, a, b, levels=1), fuse(method, a, b, levels=3)
        assert one.shape == three.shape == a.shape
        assert np.abs(one - three).max() > 1e-3


def test_maxabs_takes_the_brighter_luma() -> None:
    a, b = _textured_grey(20, 30, 1), _textured_grey(20, 30, 2)
    np.testing.assert_array_equal(fuse("maxabs", a, b), np.maximum(a, b))
    np.testing.assert_allclose(fuse("average", a, b), 0.5 * (a + b), atol=1e-7)


def test_multi_focus_synthetic_recovers_sharp_image_better_than_average() -> None:
    sharp = _textured_grey(96, 128, 10)
    blurred = gaussian_filter(sharp, 2.5)
    left = np.zeros_like(sharp, dtype=bool)
    left[:, :64] = True
    focus_left = np.where(left, sharp, blurred)  # A: left half in focus
    focus_right = np.where(left, blurred, sharp)  # B: right half in focus
    err = {m: _rmse(fuse(m, focus_left, focus_right), sharp) for m in ADDITIVE_METHODS}
    assert err["laplacian"] < 0.5 * err["average"]
    assert err["dwt"] < 0.5 * err["average"]


@pytest.mark.skipif(not MFI_WHU.is_dir(), reason="shared MFI-WHU dataset not present")
@pytest.mark.parametrize("pair", ["1", "3"])
def test_multi_focus_real_pair_gains_spatial_frequency(pair: str) -> None:
    from PIL import Image

    def crop(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        h, w = rgb.shape[:2]
        return np.ascontiguousarray(rgb[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128])

    a, b = crop(MFI_WHU / "source1" / f"{pair}.jpg"), crop(MFI_WHU / "source2" / f"{pair}.jpg")
    sf = {m: _spatial_frequency(luma(to_unit_float(fuse(m, a, b, task="mff")))) for m in ADDITIVE_METHODS}
    assert sf["maxabs"] > sf["average"]
    assert sf["laplacian"] > 1.2 * sf["average"]
    assert sf["dwt"] > 1.2 * sf["average"]


# --------------------------------------------------------------------------------------------- colour


def test_chroma_from_a_is_exact_and_luma_is_fused() -> None:
    a, b = _smooth_rgb(40, 50, 11), _smooth_rgb(40, 50, 12)
    fused = fuse("average", a, b)  # default rule: from_a
    ycc_f, ycc_a, ycc_b = rgb_to_ycbcr(fused), rgb_to_ycbcr(a), rgb_to_ycbcr(b)
    np.testing.assert_allclose(ycc_f[..., 1:], ycc_a[..., 1:], atol=1e-5)
    np.testing.assert_allclose(ycc_f[..., 0], 0.5 * (ycc_a[..., 0] + ycc_b[..., 0]), atol=1e-5)


@pytest.mark.parametrize("task", ["vif", "medical", "general"])
def test_task_presets_with_from_a_rule_keep_a_chroma(task: str) -> None:
    a, b = _smooth_rgb(24, 24, 13), _smooth_rgb(24, 24, 14)
    np.testing.assert_allclose(
        rgb_to_ycbcr(fuse("laplacian", a, b, task=task))[..., 1:], rgb_to_ycbcr(a)[..., 1:], atol=1e-5
    )


@pytest.mark.parametrize("task", ["mff", "mef"])
def test_task_presets_with_saturation_weighted_rule(task: str) -> None:
    a, b = _smooth_rgb(24, 24, 15), _smooth_rgb(24, 24, 16)
    expected = saturation_weighted_chroma(rgb_to_ycbcr(a)[..., 1:], rgb_to_ycbcr(b)[..., 1:])
    by_task = fuse("dwt", a, b, task=task)
    np.testing.assert_allclose(rgb_to_ycbcr(by_task)[..., 1:], expected, atol=1e-5)
    np.testing.assert_array_equal(by_task, fuse("dwt", a, b, chroma="saturation_weighted"))
    # An explicit rule wins over the task's.
    np.testing.assert_allclose(
        rgb_to_ycbcr(fuse("dwt", a, b, task=task, chroma="from_a"))[..., 1:],
        rgb_to_ycbcr(a)[..., 1:],
        atol=1e-5,
    )


def test_grey_a_with_colour_b() -> None:
    b = _smooth_rgb(24, 30, 17)
    grey = _textured_grey(24, 30, 18) * 0.6 + 0.2
    # 2-D A: 2-D result whatever the rule.
    for rule in ("from_a", "saturation_weighted"):
        assert fuse("average", grey, b, chroma=rule).shape == (24, 30)
    grey3 = np.repeat(grey[..., None], 3, axis=2)
    # Three-channel grey A, from_a: no chroma to give, three equal channels.
    out = fuse("average", grey3, b, chroma="from_a")
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[..., 0], 0.5 * (grey + luma(b)), atol=1e-5)
    # Three-channel grey A, saturation_weighted: the neutral A has zero weight, B's chroma comes through.
    out = fuse("average", grey3, b, chroma="saturation_weighted")
    np.testing.assert_allclose(rgb_to_ycbcr(out)[..., 1:], rgb_to_ycbcr(b)[..., 1:], atol=1e-5)


def test_colour_a_with_grey_b_keeps_a_chroma_under_both_rules() -> None:
    a = _smooth_rgb(20, 20, 19)
    b = _textured_grey(20, 20, 20) * 0.5 + 0.25
    for rule in ("from_a", "saturation_weighted"):
        out = fuse("laplacian", a, b, chroma=rule)
        in_gamut = ((out > 0.0) & (out < 1.0)).all(-1)  # where the [0, 1] clamp did not bite
        assert in_gamut.mean() > 0.9
        np.testing.assert_allclose(rgb_to_ycbcr(out)[in_gamut][:, 1:], rgb_to_ycbcr(a)[in_gamut][:, 1:], atol=1e-5)


def test_additive_output_is_clamped() -> None:
    a = np.zeros((16, 16, 3), np.float32)
    a[..., 0] = 1.0  # saturated red: fusing in bright luma pushes RGB outside [0, 1] before the clamp
    b = np.ones((16, 16), np.float32)
    out = fuse("maxabs", a, b)
    assert out.min() >= 0.0 and out.max() <= 1.0
