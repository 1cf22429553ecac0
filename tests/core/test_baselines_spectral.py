"""Spectral baselines (bicubic, Brovey, GIHS, GSA, MTF-GLP): shapes, dtypes, alignment and behaviour on synthetic
and real scenes."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from test_baselines import _material_scene, _rmse, _smooth_rgb, _textured_grey  # shared helpers and fixtures

from maugif_core.baselines import (
    ADDITIVE_METHODS,
    METHODS,
    SPECTRAL_METHODS,
    OptionError,
    downsample_block_mean,
    fuse,
    infer_ratio,
    upsample_bicubic,
)
from maugif_core.errors import (
    BandCountError,
    DTypeError,
    MaugifError,
    NonFiniteError,
    RatioError,
    ShapeError,
    UnknownMethodError,
    UnknownTaskError,
)

# --------------------------------------------------------------------------------------------- helpers


def _sharp_material_scene(h: int, w: int, bands: int, seed: int, materials: int = 6) -> np.ndarray:
    """Like :func:`_material_scene`, with sharp material edges (spectral detail at full resolution)."""
    rng = np.random.default_rng(seed)
    labels = np.argmax(np.stack([gaussian_filter(rng.random((h, w)), 4) for _ in range(materials)], -1), -1)
    spectra = rng.uniform(0.1, 0.9, size=(materials, bands))
    shading = gaussian_filter(rng.random((h, w)), 0.8)
    shading = 0.5 + 0.5 * (shading - shading.min()) / (shading.max() - shading.min())
    return (spectra[labels] * shading[..., None]).astype(np.float32)


# --------------------------------------------------------------------------------------------- spectral


def test_infer_ratio() -> None:
    assert infer_ratio((10, 12, 4), (40, 48)) == 4
    assert infer_ratio((10, 12), (20, 24, 3)) == 2
    with pytest.raises(RatioError, match="integer multiple"):
        infer_ratio((10, 10), (25, 25))
    with pytest.raises(RatioError):
        infer_ratio((10, 10), (10, 10))
    with pytest.raises(RatioError):
        infer_ratio((10, 10), (5, 5))
    with pytest.raises(ShapeError, match="same resolution ratio"):
        infer_ratio((10, 10), (20, 30))
    with pytest.raises(ShapeError, match="multiples of 4"):
        downsample_block_mean(np.zeros((8, 10), np.float32), 4)


@pytest.mark.parametrize("method", SPECTRAL_METHODS)
def test_spectral_shape_dtype_layout(method: str) -> None:
    scene = _material_scene(64, 64, 4, 21)
    ms = np.rint(downsample_block_mean(scene, 4) * 65535).astype(np.uint16)
    pan = np.rint(scene.mean(-1) * 65535).astype(np.uint16)
    out = fuse(method, ms, pan)
    assert out.shape == (64, 64, 4) and out.dtype == np.uint16
    out = fuse(method, ms.astype(np.float32) / 65535, pan[..., None])  # (H, W, 1) B
    assert out.shape == (64, 64, 4) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    single = fuse(method, downsample_block_mean(scene[..., 0], 2), scene[..., 0])  # 2-D A → 2-D result
    assert single.shape == (64, 64) and single.dtype == np.float32
    out = fuse(method, np.rint(downsample_block_mean(scene, 2) * 255).astype(np.uint8), scene[..., :3])
    assert out.shape == (64, 64, 4) and out.dtype == np.uint8  # multi-band B (HS–MS convention)


def test_bicubic_is_pixel_centre_aligned() -> None:
    h, w, r = 12, 10, 4
    ramp = (np.arange(w, dtype=np.float32)[None, :] * 0.05 + 0.2) * np.ones((h, 1), np.float32)
    up = upsample_bicubic(ramp[..., None], r)[..., 0]
    # High-resolution column j sits at low-resolution coordinate (j + 0.5) / r - 0.5: away from the borders
    # the ramp is followed to within the Keys (a = -0.75) kernel's small ripple, and every r-block averages
    # back to its low-resolution value (a shifted grid would bias every block by slope x shift).
    cols = np.arange(w * r)
    expected = 0.2 + 0.05 * ((cols + 0.5) / r - 0.5)
    interior = slice(2 * r, (w - 2) * r)
    np.testing.assert_allclose(up[h * r // 2, interior], expected[interior], atol=3e-3)
    np.testing.assert_allclose(downsample_block_mean(up, r)[:, 2:-2], ramp[:, 2:-2], atol=1e-6)
    np.testing.assert_allclose(up[:, ::-1], upsample_bicubic(ramp[:, ::-1, None], r)[..., 0], atol=1e-6)
    # Degrading by block means and upsampling is centred: no shift of a smooth scene.
    smooth = gaussian_filter(_textured_grey(64, 64, 22), 6)[..., None]
    back = upsample_bicubic(downsample_block_mean(smooth, r), r)
    shifted = np.roll(back, 1, axis=1)
    assert _rmse(back[8:-8, 8:-8], smooth[8:-8, 8:-8]) < 0.5 * _rmse(shifted[8:-8, 8:-8], smooth[8:-8, 8:-8])


def test_bicubic_ignores_b() -> None:
    ms = _material_scene(8, 8, 3, 23)
    np.testing.assert_array_equal(fuse("bicubic", ms, np.zeros((16, 16))), fuse("bicubic", ms, np.ones((16, 16))))


@pytest.mark.parametrize("ratio", [2, 4])
@pytest.mark.parametrize("bands", [4, 8])
def test_pansharpening_beats_bicubic_on_synthetic_scene(ratio: int, bands: int) -> None:
    truth = _material_scene(128, 128, bands, seed=ratio * 10 + bands)
    ms = downsample_block_mean(truth, ratio)
    pan = truth.mean(axis=-1)
    # MTF-GLP is told this sensor's MTF: an r-pixel block mean has gain 1 / (r sin(pi / 2r)) ~ 0.7 at Nyquist.
    options = {"mtf_glp": {"nyquist_gain": 1.0 / (ratio * np.sin(np.pi / (2 * ratio)))}}
    err = {m: _rmse(fuse(m, ms, pan, **options.get(m, {})), truth) for m in SPECTRAL_METHODS}
    for method in ("brovey", "gihs", "gsa", "mtf_glp"):
        assert err[method] < 0.5 * err["bicubic"], err


@pytest.mark.parametrize("injection", ["regression", "hpm", "unit"])
@pytest.mark.parametrize("ratio", [2, 4])
def test_mtf_glp_recovers_proportional_bands_seen_through_its_mtf(injection: str, ratio: int) -> None:
    # Bands that are scaled copies of the PAN, degraded by exactly the MTF MTF-GLP assumes (Gaussian, gain 0.3
    # at the MS Nyquist, centred on each footprint): the matched PAN minus its GLP low-pass is each band's
    # missing detail, and all three injection rules put it back.
    import torch

    from maugif_core.multiplicative.sensor import SensorModel, degrade_sensor

    pan = gaussian_filter(_textured_grey(128, 128, 31), 1.0).astype(np.float32)
    scales = np.array([0.4, 0.7, 1.0], np.float32)
    truth = pan[..., None] * scales
    tensor = torch.from_numpy(np.ascontiguousarray(truth.transpose(2, 0, 1)))[None]
    ms = degrade_sensor(tensor, ratio, SensorModel.fixed(ratio, 0.3))[0].numpy().transpose(1, 2, 0)
    fused = fuse("mtf_glp", np.ascontiguousarray(ms), pan, injection=injection)
    inner = slice(4 * ratio, -4 * ratio)
    err = _rmse(fused[inner, inner], truth[inner, inner])
    err_bicubic = _rmse(fuse("bicubic", np.ascontiguousarray(ms), pan)[inner, inner], truth[inner, inner])
    assert err < 0.05 * err_bicubic, (err, err_bicubic)


def test_mtf_glp_gain_options() -> None:
    ms, pan = _material_scene(16, 16, 3, 5), _textured_grey(64, 64, 6)
    sharp = fuse("mtf_glp", ms, pan, nyquist_gain=0.45)
    soft = fuse("mtf_glp", ms, pan, nyquist_gain=0.15)
    assert np.abs(sharp - soft).max() > 1e-3  # the gain sets the GLP filter
    per_band = fuse("mtf_glp", ms, pan, nyquist_gain=[0.3, 0.3, 0.3])
    np.testing.assert_allclose(per_band, fuse("mtf_glp", ms, pan), atol=1e-6)
    with pytest.raises(BandCountError, match="nyquist_gain: expected one value or 3"):
        fuse("mtf_glp", ms, pan, nyquist_gain=[0.3, 0.3])
    with pytest.raises(OptionError, match="nyquist_gain"):
        fuse("mtf_glp", ms, pan, nyquist_gain=1.2)
    with pytest.raises(OptionError, match="injection"):
        fuse("mtf_glp", ms, pan, injection="cbd")


def test_gsa_and_brovey_recover_proportional_bands_from_any_pan_combination() -> None:
    # Bands that are scaled copies of one image: GSA's regression and gains, and Brovey's ratios, are exact;
    # GIHS adds the same detail to every band and is not.
    shading = _material_scene(64, 64, 1, 24)[..., 0]
    scales = np.array([0.3, 0.5, 0.8, 1.0], np.float32)
    truth = shading[..., None] * scales
    ms = downsample_block_mean(truth, 4)
    pan = truth @ np.array([0.1, 0.2, 0.3, 0.05], np.float32)  # not the band mean
    assert np.abs(fuse("gsa", ms, pan) - truth).max() < 1e-4
    assert np.abs(fuse("brovey", ms, pan) - truth).max() < 1e-4
    err_gihs, err_bicubic = _rmse(fuse("gihs", ms, pan), truth), _rmse(fuse("bicubic", ms, pan), truth)
    assert 1e-3 < err_gihs < err_bicubic


def test_hs_ms_gsa_beats_bicubic_on_sharp_scene() -> None:
    bands = 30
    truth = _sharp_material_scene(96, 96, bands, seed=0)
    srf = np.zeros((bands, 4), np.float32)
    for j in range(4):
        srf[j * 7 : (j + 1) * 7 + 2, j] = 1.0
    srf /= srf.sum(axis=0)
    msi = truth @ srf
    hs = downsample_block_mean(truth, 3)
    err = {m: _rmse(fuse(m, hs, msi), truth) for m in SPECTRAL_METHODS}
    assert err["gsa"] < 0.75 * err["bicubic"], err
    assert err["brovey"] < err["bicubic"] and err["gihs"] < err["bicubic"], err


def test_brovey_preserves_band_ratios() -> None:
    truth = _sharp_material_scene(64, 64, 4, seed=3) * 0.8
    ms = downsample_block_mean(truth, 4)
    pan = gaussian_filter(truth.mean(-1), 0.5) * 0.9 + 0.03  # a PAN that is not the band mean
    up = fuse("bicubic", ms, pan)
    out = fuse("brovey", ms, pan)
    inside = (up > 0.05).all(-1) & (up < 0.95).all(-1) & (out < 0.999).all(-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose((out[..., 0] / out[..., 2])[inside], (up[..., 0] / up[..., 2])[inside], rtol=1e-4)
    assert _rmse(out, up) > 1e-3  # it did change the image


def test_brovey_zero_intensity_is_finite() -> None:
    ms = np.zeros((8, 8, 3), np.float32)
    out = fuse("brovey", ms, np.full((32, 32), 0.5, np.float32), match_pan=False)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, 0.0)


def test_weights_option() -> None:
    truth = _material_scene(32, 32, 3, 25)
    ms, pan = downsample_block_mean(truth, 2), truth.mean(-1)
    for method in ("brovey", "gihs"):
        equal = fuse(method, ms, pan, weights=[1, 1, 1])
        np.testing.assert_allclose(equal, fuse(method, ms, pan), atol=1e-6)  # weights are normalised
        assert np.abs(fuse(method, ms, pan, weights=[1, 0, 0]) - equal).max() > 1e-3


# --------------------------------------------------------------------------------------------- errors


def test_unknown_method_lists_valid_names() -> None:
    a = _textured_grey(8, 8)
    with pytest.raises(UnknownMethodError) as info:
        fuse("wavelet", a, a)
    for name in METHODS:
        assert name in str(info.value)
    assert "'wavelet'" in str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, MaugifError)


@pytest.mark.parametrize("method", METHODS)
def test_input_validation_errors(method: str) -> None:
    spectral = method in SPECTRAL_METHODS
    a = _material_scene(8, 8, 3, 1) if spectral else _textured_grey(8, 8)
    b = _textured_grey(16, 16) if spectral else _textured_grey(8, 8)
    with pytest.raises(DTypeError, match="image_a"):
        fuse(method, a.astype(np.int32), b)
    with pytest.raises(DTypeError, match="image_b"):
        fuse(method, a, b.tolist())
    bad = b.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="image_b"):
        fuse(method, a, bad)
    with pytest.raises(ShapeError, match="image_a"):
        fuse(method, a[None], b)
    with pytest.raises(UnknownTaskError, match="task"):
        fuse(method, a, b, task="vif" if spectral else "pansharpen")
    with pytest.raises(TypeError):
        fuse(method, a, b, no_such_option=1)


@pytest.mark.parametrize("method", ADDITIVE_METHODS)
def test_additive_errors(method: str) -> None:
    a = _textured_grey(16, 16)
    with pytest.raises(ShapeError, match="same height and width"):
        fuse(method, a, _textured_grey(16, 17))
    with pytest.raises(ShapeError, match=r"image_a: expected shape \(H, W\) or \(H, W, C\)"):
        fuse(method, np.zeros((1, 16, 16, 5), np.float32), a)  # 5 bands alone fuse (the N-band rule)
    with pytest.raises(UnknownMethodError, match="chroma"):
        fuse(method, a, a, chroma="from_b")
    with pytest.raises(UnknownTaskError, match="nope"):
        fuse(method, a, a, task="nope")


@pytest.mark.parametrize("method", SPECTRAL_METHODS)
def test_spectral_ratio_errors(method: str) -> None:
    ms = _material_scene(8, 8, 3, 2)
    with pytest.raises(RatioError, match="image_b"):
        fuse(method, ms, _textured_grey(20, 20))
    with pytest.raises(RatioError):
        fuse(method, ms, _textured_grey(8, 8))
    with pytest.raises(ShapeError, match="ratio"):
        fuse(method, ms, _textured_grey(16, 24))


def test_option_errors() -> None:
    a = _textured_grey(16, 16)
    with pytest.raises(UnknownMethodError, match="wavelet"):
        fuse("dwt", a, a, wavelet="nope")
    for method in ("dwt", "laplacian"):
        for levels in (0, -1, 1.5, True):
            with pytest.raises(OptionError, match="levels"):
                fuse(method, a, a, levels=levels)
        with pytest.raises(ShapeError, match="at most"):
            fuse(method, a, a, levels=20)
    ms, pan = _material_scene(8, 8, 3, 3), _textured_grey(16, 16)
    for method in ("brovey", "gihs"):
        with pytest.raises(BandCountError, match="weights"):
            fuse(method, ms, pan, weights=[1, 1])
        with pytest.raises(OptionError, match="weights"):
            fuse(method, ms, pan, weights=[1, -1, 1])
        with pytest.raises(OptionError, match="weights"):
            fuse(method, ms, pan, weights=[0, 0, 0])
    with pytest.raises(OptionError, match="eps"):
        fuse("brovey", ms, pan, eps=0.0)
    assert issubclass(OptionError, ValueError) and issubclass(OptionError, MaugifError)


# --------------------------------------------------------------------------------------------- speed


@pytest.mark.parametrize("method", METHODS)
def test_512_image_is_fast(method: str) -> None:
    if method in SPECTRAL_METHODS:
        a, b = _material_scene(128, 128, 4, 0), _textured_grey(512, 512)
    else:
        a, b = np.rint(_smooth_rgb(512, 512, 1) * 255).astype(np.uint8), _textured_grey(512, 512)
    fuse(method, a, b)  # warm-up (imports, thread pools)
    start = time.perf_counter()
    fuse(method, a, b)
    assert time.perf_counter() - start < 1.0
