"""Additive-fusion metrics: oracles (skimage, sewar, torchmetrics), literal references, properties, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maugif_core import metrics
from maugif_core.errors import DTypeError, NonFiniteError, ShapeError, UnknownMethodError


def _scene(seed: int, shape: tuple[int, int] = (96, 112)) -> np.ndarray:
    """A smooth, textured uint8 grey scene (not white noise: SSIM/VIF/Qabf need structure)."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    base = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
    base += 0.3 * ndimage.gaussian_filter(rng.standard_normal(shape), 0.8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base += 0.02 * (xx - yy)
    base = (base - base.min()) / (base.max() - base.min())
    return np.round(base * 235 + 10).astype(np.uint8)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, image_a, image_b) uint8 grey: F is a noisy average of two different scenes."""
    a = _scene(1)
    b = _scene(2)
    rng = np.random.default_rng(3)
    f = np.clip(0.55 * a + 0.45 * b + rng.normal(0, 4, a.shape), 0, 255).round().astype(np.uint8)
    return f, a, b


# --------------------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------------------


def test_ssim_standard_matches_skimage_gaussian(pair) -> None:
    from skimage.metrics import structural_similarity

    f, a, b = pair
    expected = [
        structural_similarity(
            s.astype(np.float64),
            f.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        for s in (a, b)
    ]
    assert metrics.ssim(f, a, b) == pytest.approx(np.mean(expected), abs=1e-10)


def test_ssim_cddfuse_is_old_skimage_default_sum(pair) -> None:
    from skimage.metrics import structural_similarity

    f, a, b = pair
    ff = f.astype(np.float64)
    expected = sum(structural_similarity(ff, s.astype(np.float64), data_range=2) for s in (a, b))
    assert metrics.ssim(f, a, b, convention="cddfuse") == pytest.approx(expected, abs=1e-9)


def test_vif_single_pair_matches_sewar_and_torchmetrics(pair) -> None:
    import sewar
    import torch
    from torchmetrics.functional.image import visual_information_fidelity

    f, a, b = pair
    fa = [x.astype(np.float64) for x in (f, a, b)]

    def tm(ref: np.ndarray) -> float:
        t = lambda x: torch.from_numpy(x)[None, None]  # noqa: E731
        return float(visual_information_fidelity(t(fa[0]), t(ref)))

    per_source = [sewar.vifp(ref, fa[0]) for ref in fa[1:]]
    assert per_source == pytest.approx([tm(ref) for ref in fa[1:]], rel=1e-9)
    assert metrics.vif(f, a, b) == pytest.approx(sum(per_source), rel=1e-9)
    # F identical to A: VIFp(A, A) = 1, so VIF = 1 + VIFp(B, A).
    assert metrics.vif(a, a, b) == pytest.approx(1.0 + sewar.vifp(fa[2], fa[1]), rel=1e-9)


def test_ms_ssim_matches_torchmetrics_cs_and_skimage_last_scale() -> None:
    """Our MS-SSIM = Π_{j<5} cs_j^w_j (torchmetrics, valid windows) × SSIM_5^w_5 (skimage, pooled images).

    torchmetrics' own last scale averages SSIM over a reflect-padded image (not Wang's valid windows), so its
    full MS-SSIM differs in the third decimal; its contrast-structure terms are the valid-window ones.
    """
    import torch
    from skimage.metrics import structural_similarity
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms_ssim

    a = _scene(5, (200, 216)).astype(np.float64)
    f = np.clip(a + np.random.default_rng(6).normal(0, 12, a.shape), 0, 255)
    t = lambda x: torch.from_numpy(x)[None, None]  # noqa: E731
    weights = metrics.MS_SSIM_WEIGHTS
    cs_part = float(tm_ms_ssim(t(f), t(a), data_range=255.0, betas=(*weights[:4], 0.0)))
    pooled = [a, f]
    for _ in range(4):
        pooled = [torch.nn.functional.avg_pool2d(t(x), 2)[0, 0].numpy() for x in pooled]
    last = structural_similarity(
        pooled[0], pooled[1], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    expected = cs_part * last ** weights[4]
    # Both sources equal A: the mean of two equal terms. Float input in [0, 1] is scaled back to 0-255.
    ours = metrics.ms_ssim(f / 255.0, a / 255.0, a / 255.0)
    assert ours == pytest.approx(expected, rel=1e-9)
    assert metrics.ms_ssim(a / 255.0, a / 255.0, a / 255.0) == pytest.approx(1.0, abs=1e-12)


def _mi_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    joint, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=256, range=[[-0.5, 255.5], [-0.5, 255.5]])
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / np.outer(px, py)[nz])).sum())


def test_mutual_information_standard_and_cddfuse(pair) -> None:
    f, a, b = pair
    expected_bits = _mi_bruteforce(a, f) + _mi_bruteforce(b, f)
    assert metrics.mutual_information(f, a, b) == pytest.approx(expected_bits, rel=1e-12)
    assert metrics.mutual_information(f, a, b, convention="cddfuse") == pytest.approx(
        expected_bits * math.log(2), rel=1e-12
    )
    # MI(F; F) = H(F): fusing A with itself and returning A gives 2·EN(A).
    assert metrics.mutual_information(a, a, a) == pytest.approx(2 * metrics.entropy(a), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Literal references: the published MATLAB loops transcribed as written (slow; small images only)
# --------------------------------------------------------------------------------------------------


def _conv2_same(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    kf = k[::-1, ::-1]
    xp = np.pad(x, 1)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = (xp[i : i + 3, j : j + 3] * kf).sum()
    return out


def _qabf_loops(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``metricsQabf.m`` / CDDFuse ``Evaluator.Qabf`` as written, per pixel."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def grad(x):
        sx, sy = _conv2_same(x, h3), _conv2_same(x, h1)
        g = np.sqrt(sx**2 + sy**2)
        ang = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                ang[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, ang

    (ga, aa), (gb, ab), (gf, af) = grad(a), grad(b), grad(f)

    def q(gs, as_):
        out = np.zeros_like(gs)
        for i in range(gs.shape[0]):
            for j in range(gs.shape[1]):
                if gs[i, j] > gf[i, j]:
                    g = gf[i, j] / gs[i, j]
                elif gs[i, j] == gf[i, j]:
                    g = gf[i, j]
                else:
                    g = gs[i, j] / gf[i, j]
                alpha = 1 - abs(as_[i, j] - af[i, j]) / (math.pi / 2)
                out[i, j] = 0.9994 / (1 + math.exp(-15 * (g - 0.5))) * 0.9879 / (1 + math.exp(-22 * (alpha - 0.8)))
        return out

    return float(((q(ga, aa) * ga + q(gb, ab) * gb).sum()) / (ga + gb).sum())


def _nabf_loops(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Shreyamsha Kumar's ``objective_fusion_perform_fn.m`` (NABF output) as written, per pixel."""
    vt = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float) / 8
    ht = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float) / 8

    def sobel(x):
        p, q = x.shape
        ext = np.zeros((p + 2, q + 2))
        ext[1:-1, 1:-1] = x
        ext[0, :], ext[-1, :] = ext[2, :], ext[-3, :]
        ext[:, 0], ext[:, -1] = ext[:, 2], ext[:, -3]
        gv, gh = np.zeros_like(x), np.zeros_like(x)
        for i in range(p):
            for j in range(q):
                gv[i, j] = (ext[i : i + 3, j : j + 3] * vt).sum()
                gh[i, j] = (ext[i : i + 3, j : j + 3] * ht).sum()
        return gv, gh

    grads = {}
    for name, x in (("a", a), ("b", b), ("f", f)):
        gv, gh = sobel(x)
        ang = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                if gv[i, j] == 0 and gh[i, j] == 0:
                    ang[i, j] = 0
                elif gh[i, j] == 0:
                    ang[i, j] = math.copysign(math.pi / 2, gv[i, j])
                else:
                    ang[i, j] = math.atan(gv[i, j] / gh[i, j])
        grads[name] = (np.sqrt(gv**2 + gh**2), ang)
    gf, af = grads["f"]
    num = 0.0
    den = 0.0
    qs, ws = [], []
    for key in ("a", "b"):
        gs, as_ = grads[key]
        qm, wm = np.zeros_like(gs), np.zeros_like(gs)
        for i in range(gs.shape[0]):
            for j in range(gs.shape[1]):
                if gs[i, j] == 0 or gf[i, j] == 0:
                    g = 0.0
                elif gs[i, j] > gf[i, j]:
                    g = gf[i, j] / gs[i, j]
                else:
                    g = gs[i, j] / gf[i, j]
                alpha = abs(abs(as_[i, j] - af[i, j]) - math.pi / 2) * 2 / math.pi
                qg = 0.9999 / (1 + math.exp(-19 * (g - 0.5)))
                qa = 0.9995 / (1 + math.exp(-22 * (alpha - 0.5)))
                qm[i, j] = math.sqrt(qg * qa)
                wm[i, j] = gs[i, j] ** 1.5 if gs[i, j] >= 2 else 0.001
        qs.append(qm)
        ws.append(wm)
    den = (ws[0] + ws[1]).sum()
    for i in range(gf.shape[0]):
        for j in range(gf.shape[1]):
            if gf[i, j] > grads["a"][0][i, j] and gf[i, j] > grads["b"][0][i, j]:
                num += (1 - qs[0][i, j]) * ws[0][i, j] + (1 - qs[1][i, j]) * ws[1][i, j]
    return num / den


@pytest.fixture(scope="module")
def small(pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f, a, b = pair
    return f[20:48, 30:62], a[20:48, 30:62], b[20:48, 30:62]


def test_qabf_matches_literal_matlab_loops(small) -> None:
    f, a, b = small
    expected = _qabf_loops(*(x.astype(np.float64) for x in (a, b, f)))
    assert metrics.qabf(f, a, b) == pytest.approx(expected, rel=1e-12)


def test_nabf_matches_literal_kumar_loops(small) -> None:
    f, a, b = small
    expected = _nabf_loops(*(x.astype(np.float64) for x in (a, b, f)))
    assert expected > 0  # the fixture has artefacts to count
    assert metrics.nabf(f, a, b) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Hand-computed values and properties
# --------------------------------------------------------------------------------------------------


def test_spatial_frequency_and_average_gradient_by_hand() -> None:
    img = np.array([[0, 10, 30], [20, 20, 20]], dtype=np.uint8)
    rf = (10**2 + 20**2 + 0 + 0) / 4  # horizontal differences
    cf = (20**2 + 10**2 + 10**2) / 3  # vertical differences
    assert metrics.spatial_frequency(img) == pytest.approx(math.sqrt(rf + cf))
    # vifb on a grey image: sums over H*W.
    assert metrics.spatial_frequency(img, convention="vifb") == pytest.approx(math.sqrt((500 + 600) / 6.0))
    gy, gx = np.gradient(img.astype(np.float64))
    s = np.sqrt((gx**2 + gy**2) / 2)
    assert metrics.average_gradient(img) == pytest.approx(s.sum() / 2.0)
    assert metrics.average_gradient(img, convention="cddfuse") == pytest.approx(s.mean())


def test_spatial_frequency_vifb_concatenates_channels() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 100  # jump of 100 between channel planes R|G and G|B in the (H, 3W) matrix
    # Row differences: per row, R->G boundary +100, G->B boundary -100: 2 rows × 2 jumps of 100².
    assert metrics.spatial_frequency(rgb, convention="vifb") == pytest.approx(math.sqrt(4 * 100**2 / 12))
    assert metrics.spatial_frequency(rgb) == 0.0  # each plane is flat


def test_entropy_and_sd_properties() -> None:
    flat = np.full((16, 16), 77, dtype=np.uint8)
    assert metrics.entropy(flat) == 0.0
    assert metrics.standard_deviation(flat) == 0.0
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert metrics.entropy(ramp) == pytest.approx(8.0)
    assert metrics.standard_deviation(ramp) == pytest.approx(np.arange(256).std())
    two_level = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    assert metrics.entropy(two_level) == pytest.approx(1.0)


def test_psnr_conventions_by_hand() -> None:
    a = np.full((4, 4), 100, dtype=np.uint8)
    b = np.full((4, 4), 120, dtype=np.uint8)
    f = np.full((4, 4), 110, dtype=np.uint8)
    mse = (10**2 + 10**2) / 2
    assert metrics.psnr_fusion(f, a, b) == pytest.approx(10 * math.log10(255**2 / mse))
    assert metrics.psnr_fusion(f, a, b, convention="cddfuse") == pytest.approx(10 * math.log10(110**2 / mse))
    m = (math.sqrt(16 * 100) + math.sqrt(16 * 100)) / (2 * 16)
    assert metrics.psnr_fusion(f, a, b, convention="vifb") == pytest.approx(20 * math.log10(255 / math.sqrt(m)))


def test_cc_and_scd_properties(pair) -> None:
    f, a, b = pair
    assert metrics.correlation_coefficient(a, a, a) == pytest.approx(1.0)
    inverted = (255 - a).astype(np.uint8)
    assert metrics.correlation_coefficient(inverted, a, a) == pytest.approx(-1.0)
    # SCD of F = A + B − mean (the ideal additive fusion): F − B = A + const, F − A = B + const → 2.
    fused = a.astype(np.float64) + b - 128.0
    scale = 1.0 / (fused.max() - fused.min())
    unit = lambda x: (x - fused.min()) * scale  # noqa: E731 - one affine map keeps correlations
    assert metrics.scd(unit(fused), unit(a.astype(np.float64)), unit(b.astype(np.float64))) == pytest.approx(2.0)


def test_qabf_and_nabf_behave(pair) -> None:
    f, a, b = pair
    assert metrics.nabf(a, a, a) == 0.0  # F never exceeds the sources' edge strength
    noisy = np.clip(f + np.random.default_rng(0).normal(0, 25, f.shape), 0, 255).astype(np.uint8)
    assert metrics.nabf(noisy, a, b) > metrics.nabf(f, a, b)
    assert metrics.qabf(noisy, a, b) < metrics.qabf(f, a, b)
    assert 0.95 < metrics.qabf(a, a, a) < 1.0  # Γg·Γα with the sigmoids saturated


def test_grey_as_rgb_equals_grey_and_dtypes_agree(pair) -> None:
    f, a, b = pair
    rgb = lambda x: np.repeat(x[..., None], 3, axis=2)  # noqa: E731
    grey_scores = metrics.evaluate(f, a, b)
    assert metrics.evaluate(rgb(f), rgb(a), b) == grey_scores
    unit = metrics.evaluate(f / 255.0, a.astype(np.float32) / np.float32(255), (b.astype(np.uint16) * 257))
    for key, value in grey_scores.items():
        assert unit[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_evaluate_keys_and_consistency(pair) -> None:
    f, a, b = pair
    for convention in metrics.CONVENTIONS:
        scores = metrics.evaluate(f, a, b, convention=convention)
        assert tuple(scores) == metrics.ADDITIVE_KEYS
        assert set(scores) == {
            "en", "sd", "sf", "ag", "mi", "scd", "cc", "vif", "qabf", "nabf", "ssim", "ms_ssim", "psnr"
        }  # fmt: skip
        assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
        assert scores["vif"] == metrics.vif(f, a, b, convention=convention)
        assert scores["psnr"] == metrics.psnr_fusion(f, a, b, convention=convention)


def test_colour_fused_uses_luma_in_standard() -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert metrics.standard_deviation(rgb) == pytest.approx(luma.std())
    per_channel = np.mean([rgb[..., k].std() for k in range(3)])
    assert metrics.standard_deviation(rgb, convention="vifb") == pytest.approx(per_channel)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_unknown_convention(pair) -> None:
    f, a, b = pair
    with pytest.raises(UnknownMethodError, match="convention.*'standard'.*got 'matlab'"):
        metrics.evaluate(f, a, b, convention="matlab")
    with pytest.raises(UnknownMethodError, match="convention"):
        metrics.entropy(f, convention="VIFB")


def test_shape_mismatch_names_argument(pair) -> None:
    f, a, b = pair
    with pytest.raises(ShapeError, match=r"image_b.*\(95, 112\).*fused"):
        metrics.evaluate(f, a, b[:-1])
    with pytest.raises(ShapeError, match="image_a"):
        metrics.qabf(f, a[:, :-2], b)
    with pytest.raises(ShapeError, match="fused.*1, 3 or 4 channels"):
        metrics.ssim(np.zeros((20, 20, 5), np.uint8), a[:20, :20], b[:20, :20])
    with pytest.raises(ShapeError, match="65x65"):
        metrics.vif(f[:40, :40], a[:40, :40], b[:40, :40])


def test_bad_dtype_and_non_finite(pair) -> None:
    f, a, b = pair
    with pytest.raises(DTypeError, match="image_a.*int32"):
        metrics.evaluate(f, a.astype(np.int32), b)
    with pytest.raises(DTypeError, match="fused.*numpy.ndarray.*list"):
        metrics.mutual_information(f.tolist(), a, b)
    bad = (f / 255.0).copy()
    bad[3, 3] = np.nan
    with pytest.raises(NonFiniteError, match="fused"):
        metrics.evaluate(bad, a, b)
    with pytest.raises(NonFiniteError, match="image"):
        metrics.entropy(bad)
