"""Multiplicative-fusion metrics: SAM, ERGAS, PSNR, Q, Q2n (reduced resolution) and QNR, D_λ, D_s (full)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maugif_core import metrics
from maugif_core.errors import BandCountError, DTypeError, NonFiniteError, RatioError, ShapeError


def _cube(seed: int, shape: tuple[int, int, int] = (64, 96, 4)) -> np.ndarray:
    """A smooth, positive multispectral cube in [0.05, 0.95] with correlated but distinct bands."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w, c = shape
    common = ndimage.gaussian_filter(rng.standard_normal((h, w)), 4.0)
    bands = [common + 0.5 * ndimage.gaussian_filter(rng.standard_normal((h, w)), 2.0) for _ in range(c)]
    cube = np.stack(bands, axis=2)
    cube = (cube - cube.min()) / (cube.max() - cube.min())
    return 0.05 + 0.9 * cube


def _noisy(cube: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return np.clip(cube + sigma * np.random.default_rng(seed).standard_normal(cube.shape), 0.0, 1.0)


def _torch(cube: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1)))[None]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return _cube(1)


@pytest.fixture(scope="module")
def fused(reference) -> np.ndarray:
    return _noisy(reference, 0.03)


# --------------------------------------------------------------------------------------------------
# Reduced resolution: oracles
# --------------------------------------------------------------------------------------------------


def test_sam_degrees_matches_sewar_and_torchmetrics(fused, reference) -> None:
    import sewar
    from torchmetrics.functional.image import spectral_angle_mapper

    ours = metrics.sam(fused, reference)
    assert ours == pytest.approx(math.degrees(sewar.sam(reference, fused)), rel=1e-10)
    assert ours == pytest.approx(math.degrees(float(spectral_angle_mapper(_torch(fused), _torch(reference)))), rel=1e-9)
    assert 0.5 < ours < 20.0  # degrees, not radians


def test_sam_properties(reference) -> None:
    assert metrics.sam(reference, reference) == pytest.approx(0.0, abs=1e-6)
    assert metrics.sam(0.5 * reference, reference) == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    x = np.zeros((2, 2, 2))
    y = np.zeros((2, 2, 2))
    x[0, 0] = (1, 0)
    y[0, 0] = (0, 1)  # 90° at the only pixel where both spectra are non-zero
    x[1, 1] = (1, 1)  # y is zero there: excluded
    assert metrics.sam(x, y) == pytest.approx(90.0)
    assert math.isnan(metrics.sam(np.zeros((2, 2, 3)), np.zeros((2, 2, 3))))


def test_ergas_ratio_convention_matches_sewar_and_torchmetrics(fused, reference) -> None:
    import sewar
    from torchmetrics.functional.image import error_relative_global_dimensionless_synthesis

    ours = metrics.ergas(fused, reference, ratio=4)
    assert ours == pytest.approx(sewar.ergas(reference, fused, r=1 / 4), rel=1e-10)
    tm = float(error_relative_global_dimensionless_synthesis(_torch(fused), _torch(reference), ratio=4))
    assert ours == pytest.approx(tm, rel=1e-9)
    assert metrics.ergas(fused, reference, ratio=2) == pytest.approx(2 * ours)
    assert metrics.ergas(reference, reference, ratio=4) == 0.0


def test_ergas_by_hand() -> None:
    ref = np.ones((2, 2, 2))
    ref[..., 1] = 2.0
    fus = ref.copy()
    fus[..., 0] += 0.1  # RMSE 0.1 on a band of mean 1; band 2 exact
    assert metrics.ergas(fus, ref, 4) == pytest.approx(100 / 4 * math.sqrt((0.1**2 + 0.0) / 2))


def test_psnr_matches_torchmetrics(fused, reference) -> None:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    expected = float(peak_signal_noise_ratio(_torch(fused), _torch(reference), data_range=1.0))
    assert metrics.psnr(fused, reference) == pytest.approx(expected, rel=1e-6)  # torchmetrics sums in float32
    as_uint16 = np.round(reference * 65535).astype(np.uint16)
    assert metrics.psnr(as_uint16, as_uint16) == math.inf
    assert metrics.psnr(fused, reference, data_range=0.5) == pytest.approx(expected - 20 * math.log10(2))


def _uqi_bruteforce(x: np.ndarray, y: np.ndarray, block: int) -> float:
    vals = []
    for i in range(x.shape[0] - block + 1):
        for j in range(x.shape[1] - block + 1):
            u, v = x[i : i + block, j : j + block].ravel(), y[i : i + block, j : j + block].ravel()
            c = np.cov(u, v)
            vals.append(4 * c[0, 1] * u.mean() * v.mean() / ((c[0, 0] + c[1, 1]) * (u.mean() ** 2 + v.mean() ** 2)))
    return float(np.mean(vals))


def test_q_index_is_wang_bovik_on_sliding_blocks(fused, reference) -> None:
    small_f, small_r = fused[:40, :44], reference[:40, :44]
    expected = np.mean([_uqi_bruteforce(small_r[..., k], small_f[..., k], 8) for k in range(4)])
    assert metrics.q_index(small_f, small_r, block_size=8) == pytest.approx(expected, rel=1e-9)
    assert metrics.q_index(reference, reference) == pytest.approx(1.0)
    # A global gain g lowers the contrast and the mean terms alike: (2g / (1 + g²))².
    assert metrics.q_index(0.8 * reference, reference) == pytest.approx((2 * 0.8 / 1.64) ** 2, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Q2n
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bands", [4, 8, 3])
def test_q2n_identity_is_one(bands) -> None:
    cube = _cube(bands, (64, 64, bands))
    assert metrics.q2n(cube, cube) == pytest.approx(1.0, abs=1e-12)


def test_q2n_decreases_with_noise(reference) -> None:
    values = [metrics.q2n(_noisy(reference, s), reference) for s in (0.005, 0.02, 0.05, 0.15)]
    assert all(0.0 < v < 1.0 for v in values)
    assert values == sorted(values, reverse=True)
    assert values[0] > 0.95 and values[-1] < 0.8


def test_q2n_penalises_spectral_bias_and_band_swaps(reference) -> None:
    # Q2n sees the bands jointly: swapping two bands keeps every per-band statistic but changes the spectrum.
    swapped = reference[..., [1, 0, 2, 3]]
    assert metrics.q2n(swapped, reference) < 0.99
    assert metrics.q_index(swapped, reference) < 1.0
    assert metrics.q2n(reference + 0.1, reference) < metrics.q2n(reference + 0.01, reference) < 1.0


def test_q2n_handles_ragged_sizes_and_overlap(fused, reference) -> None:
    ragged_f, ragged_r = fused[:50, :70], reference[:50, :70]
    value = metrics.q2n(ragged_f, ragged_r)
    assert 0.5 < value < 1.0
    overlapping = metrics.q2n(ragged_f, ragged_r, block_size=32, shift=16)
    assert 0.5 < overlapping < 1.0
    with pytest.raises(ValueError, match="shift"):
        metrics.q2n(fused, reference, block_size=16, shift=32)


def test_q2n_matches_reference_port_when_available(fused, reference) -> None:
    """sewar builds that ship ``q2n`` port the authors' MATLAB loop by loop: an independent implementation."""
    import sewar

    if not hasattr(sewar, "q2n"):
        pytest.skip("this sewar build has no q2n")
    for f, r in ((fused, reference), (fused[:50, :70, :3], reference[:50, :70, :3])):
        assert metrics.q2n(f, r) == pytest.approx(sewar.q2n(r, f), rel=1e-9)
    eight_f = np.concatenate([fused, fused[..., ::-1]], axis=2)
    eight_r = np.concatenate([reference, reference[..., ::-1]], axis=2)
    assert metrics.q2n(eight_f, eight_r) == pytest.approx(sewar.q2n(eight_r, eight_f), rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Full resolution
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ms, pan, sharp): a 128×128×4 scene, its 4× MS, and a PAN as the band mean."""
    sharp = _cube(7, (128, 128, 4))
    ms = sharp.reshape(32, 4, 32, 4, 4).mean(axis=(1, 3))
    pan = sharp.mean(axis=2)
    return ms, pan, sharp


def test_d_lambda_zero_for_replicated_ms(scene) -> None:
    ms, pan, _ = scene
    replicated = np.kron(ms, np.ones((4, 4, 1)))  # each 32×32 block holds one 8×8 MS block, 16 times over
    assert metrics.d_lambda(replicated, ms, pan, ratio=4) == pytest.approx(0.0, abs=1e-12)


def test_qnr_orders_good_and_bad_fusions(scene) -> None:
    ms, pan, sharp = scene
    good = metrics.evaluate_full(sharp, ms, pan, ratio=4)
    assert set(good) == {"qnr", "d_lambda", "d_s"}
    assert good["qnr"] == pytest.approx((1 - good["d_lambda"]) * (1 - good["d_s"]))
    assert good["qnr"] == pytest.approx(metrics.qnr(sharp, ms, pan, ratio=4))
    assert good["d_lambda"] == pytest.approx(metrics.d_lambda(sharp, ms, pan, ratio=4), rel=1e-12)
    assert good["d_s"] == pytest.approx(metrics.d_s(sharp, ms, pan, ratio=4), rel=1e-12)
    rng = np.random.default_rng(0)
    shuffled = sharp.copy()
    shuffled[..., 2] = rng.permutation(sharp[..., 2].ravel()).reshape(128, 128)  # destroys band 2's structure
    bad = metrics.evaluate_full(shuffled, ms, pan, ratio=4)
    assert bad["d_lambda"] > good["d_lambda"]
    assert bad["d_s"] > good["d_s"]
    assert 0.0 <= bad["qnr"] < good["qnr"] <= 1.0


def test_full_resolution_input_errors(scene) -> None:
    ms, pan, sharp = scene
    with pytest.raises(RatioError, match="ms: expected shape"):
        metrics.evaluate_full(sharp, ms, pan, ratio=2)
    with pytest.raises(RatioError, match="integer >= 2"):
        metrics.evaluate_full(sharp, ms, pan, ratio=1)
    with pytest.raises(BandCountError, match="fused and ms"):
        metrics.evaluate_full(sharp[..., :3], ms, pan, ratio=4)
    with pytest.raises(BandCountError, match="pan"):
        metrics.evaluate_full(sharp, ms, sharp[..., :3], ratio=4)
    with pytest.raises(ShapeError, match="fused and pan"):
        metrics.evaluate_full(sharp, ms, pan[:64], ratio=4)


# --------------------------------------------------------------------------------------------------
# evaluate_reduced and errors
# --------------------------------------------------------------------------------------------------


def test_evaluate_reduced(fused, reference) -> None:
    scores = metrics.evaluate_reduced(fused, reference, ratio=4)
    assert tuple(scores) == metrics.REDUCED_KEYS == ("sam", "ergas", "q2n", "q", "psnr")
    assert scores["sam"] == metrics.sam(fused, reference)
    assert scores["q2n"] == metrics.q2n(fused, reference)
    eleven_bit = metrics.evaluate_reduced(fused, reference, ratio=4, data_range=2047 / 65535)
    assert eleven_bit["psnr"] == pytest.approx(scores["psnr"] + 20 * math.log10(2047 / 65535))
    perfect = metrics.evaluate_reduced(reference, reference, ratio=4)
    assert perfect["sam"] == pytest.approx(0.0, abs=1e-6) and perfect["ergas"] == 0.0
    assert perfect["q2n"] == pytest.approx(1.0) and perfect["q"] == pytest.approx(1.0)
    # uint16 reference vs float fused: both compared in unit range.
    as_uint16 = np.round(reference * 65535).astype(np.uint16)
    assert metrics.evaluate_reduced(fused, as_uint16, ratio=4)["q2n"] == pytest.approx(scores["q2n"], rel=1e-4)


def test_reduced_input_errors(fused, reference) -> None:
    with pytest.raises(ShapeError, match=r"fused and reference.*\(63, 96\)"):
        metrics.sam(fused[:-1], reference)
    with pytest.raises(BandCountError, match="3 \\(fused\\) and 4 \\(reference\\)"):
        metrics.ergas(fused[..., :3], reference, 4)
    with pytest.raises(DTypeError, match="reference.*int64"):
        metrics.q2n(fused, reference.astype(np.int64))
    bad = fused.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="fused"):
        metrics.evaluate_reduced(bad, reference, 4)
    with pytest.raises(RatioError, match="ratio"):
        metrics.ergas(fused, reference, 2.5)
