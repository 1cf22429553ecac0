"""Statistics, gradient and edge-transfer metrics of additive fusion: SD, SF, AG, CC, SCD, PSNR, Qabf, Nabf.

All work on the 0–255 scale; the conventions (``standard``, ``cddfuse``, ``vifb``) choose the grey plane(s)
and, where published formulas disagree, the formula (see each function and the package docstring).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from maugif_core.errors import ShapeError
from maugif_core.metrics._common import (
    Planes,
    image_planes,
    planes_mean,
    prepare_single,
    triplet_planes,
)

__all__ = [
    "average_gradient",
    "correlation_coefficient",
    "nabf",
    "psnr_fusion",
    "qabf",
    "scd",
    "spatial_frequency",
    "standard_deviation",
]

# Xydeas–Petrović Qabf constants (as in every published copy).
_QABF = {"tg": 0.9994, "kg": -15.0, "dg": 0.5, "ta": 0.9879, "ka": -22.0, "da": 0.8}
# Sobel kernels of the Qabf code: h3 responds to horizontal change (x), h1 to vertical change (y).
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


def _single_planes(image: np.ndarray, convention: str) -> list[np.ndarray]:
    return image_planes(prepare_single(image, "image"), convention)


def standard_deviation(image: np.ndarray, convention: str = "standard") -> float:
    """Standard deviation (SD), population form (divides by H·W), on the 0–255 scale.

    ``standard`` / ``cddfuse``: of the grey (luma) image. ``vifb``: per channel, averaged (VIFB
    ``metricsVariance``, which despite its name returns this standard deviation).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1].
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        SD in grey levels (0–255 scale).
    """
    return _sd(_single_planes(image, convention))


def _sd(planes: list[np.ndarray]) -> float:
    return float(np.mean([p.std() for p in planes]))


def spatial_frequency(image: np.ndarray, convention: str = "standard") -> float:
    """Spatial frequency SF = sqrt(RF² + CF²) on the 0–255 scale.

    ``standard`` / ``cddfuse`` (Eskicioglu & Fisher): RF² = mean of squared horizontal first differences,
    CF² = mean of squared vertical first differences, each mean over the differences that exist.
    ``vifb``: the VIFB code treats an ``(H, W, C)`` image as the ``(H, C·W)`` matrix of its channels side by
    side (MATLAB ``size`` with two outputs) and divides both sums of squares by ``H·C·W``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1]; at least 2×2.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        SF in grey levels per pixel.
    """
    return _sf(_single_planes(image, convention), convention)


def _sf(planes: list[np.ndarray], convention: str) -> float:
    _check_min_size(planes[0], 2, "image")
    if convention == "vifb":
        mat = np.concatenate(planes, axis=1)
        n = mat.size
        rf = np.square(np.diff(mat, axis=1)).sum() / n
        cf = np.square(np.diff(mat, axis=0)).sum() / n
        return float(np.sqrt(rf + cf))
    rf = np.square(np.diff(planes[0], axis=1)).mean()
    cf = np.square(np.diff(planes[0], axis=0)).mean()
    return float(np.sqrt(rf + cf))


def average_gradient(image: np.ndarray, convention: str = "standard") -> float:
    """Average gradient AG = Σ sqrt((gx² + gy²)/2) / N on the 0–255 scale.

    gx, gy are MATLAB ``gradient`` differences (central inside, one-sided on the border; ``numpy.gradient``).
    ``standard`` and ``vifb``: N = (H−1)(W−1) (VIFB ``metricsAvg_gradient``; ``vifb`` averages over channels).
    ``cddfuse``: N = H·W (a plain mean).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1]; at least 2×2.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        AG in grey levels per pixel.
    """
    return _ag(_single_planes(image, convention), convention)


def _ag(planes: list[np.ndarray], convention: str) -> float:
    _check_min_size(planes[0], 2, "image")

    def one(plane: np.ndarray) -> float:
        gy, gx = np.gradient(plane)
        s = np.sqrt((gx * gx + gy * gy) / 2.0)
        if convention == "cddfuse":
            return float(s.mean())
        return float(s.sum() / ((plane.shape[0] - 1) * (plane.shape[1] - 1)))

    return float(np.mean([one(p) for p in planes]))


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    yc = y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if den == 0.0:
        return float("nan")
    return float((xc * yc).sum() / den)


def correlation_coefficient(
    fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard"
) -> float:
    """Correlation coefficient CC = (r(A, F) + r(B, F)) / 2, Pearson r over all pixels.

    Same formula in every convention (``vifb`` averages it over channels). NaN if an image is constant.

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        CC, unitless, in [−1, 1].
    """
    return _cc(triplet_planes(fused, image_a, image_b, convention))


def _cc(planes: Planes) -> float:
    return planes_mean(planes, lambda f, a, b: (_corr(a, f) + _corr(b, f)) / 2.0)


def scd(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """Sum of the correlations of differences SCD = r(F − B, A) + r(F − A, B) (Aslantas & Bendes 2015).

    Same formula in every convention (``vifb`` averages it over channels). NaN if a difference is constant.

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        SCD, unitless, in [−2, 2].
    """
    return _scd(triplet_planes(fused, image_a, image_b, convention))


def _scd(planes: Planes) -> float:
    return planes_mean(planes, lambda f, a, b: _corr(f - b, a) + _corr(f - a, b))


def psnr_fusion(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """PSNR of a fused image against both sources, in dB.

    * ``standard``: 10·log10(255² / MSE), MSE = (MSE(A, F) + MSE(B, F)) / 2 on the 0–255 grey images; the true
      PSNR, typically 11–16 dB for IR–VIS fusion (the sources disagree, so F cannot match both).
    * ``cddfuse``: 10·log10(max(F)² / MSE), the same MSE (CDDFuse ``Evaluator.PSNR``).
    * ``vifb``: per channel, 20·log10(255 / sqrt(M)) with M = (sqrt(SSE(A, F)) + sqrt(SSE(B, F))) / (2·H·W) —
      the VIFB/MEFB "MSE" is sqrt(SSE)/N, which is why their PSNRs sit near 58 dB.

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        PSNR in dB (``inf`` when F equals both sources).
    """
    return _psnr(triplet_planes(fused, image_a, image_b, convention), convention)


def _psnr(planes: Planes, convention: str) -> float:
    def one(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        with np.errstate(divide="ignore"):
            if convention == "vifb":
                m = (np.sqrt(np.square(a - f).sum()) + np.sqrt(np.square(b - f).sum())) / (2.0 * f.size)
                return float(20.0 * np.log10(255.0 / np.sqrt(m)))
            mse = (np.square(a - f).mean() + np.square(b - f).mean()) / 2.0
            peak = float(f.max()) if convention == "cddfuse" else 255.0
            return float(10.0 * np.log10(peak * peak / mse))

    return planes_mean(planes, one)


def _qabf_gradients(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sx = ndimage.convolve(x, _SOBEL_X, mode="constant")
    sy = ndimage.convolve(x, _SOBEL_Y, mode="constant")
    g = np.sqrt(sx * sx + sy * sy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where(sx == 0.0, np.pi / 2.0, np.arctan(sy / sx))
    return g, angle


def _qabf_plane(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    g_f, a_f = _qabf_gradients(f)
    num = 0.0
    den = 0.0
    for src in (a, b):
        g_s, a_s = _qabf_gradients(src)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Every published copy sets G = g_F (not 1) where g_S == g_F; kept for comparability (see qabf).
            rel = np.where(g_s > g_f, g_f / g_s, np.where(g_s == g_f, g_f, g_s / g_f))
        orient = 1.0 - np.abs(a_s - a_f) / (np.pi / 2.0)
        q_g = _QABF["tg"] / (1.0 + np.exp(_QABF["kg"] * (rel - _QABF["dg"])))
        q_a = _QABF["ta"] / (1.0 + np.exp(_QABF["ka"] * (orient - _QABF["da"])))
        num += float((q_g * q_a * g_s).sum())
        den += float(g_s.sum())
    return num / den if den > 0 else float("nan")


def qabf(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """Xydeas–Petrović gradient-transfer index Q^{AB/F}, in [0, 1].

    Sobel gradients with zero padding ('same' convolution), strength-weighted edge preservation of A and B in
    F, sigmoid constants (Γg, κg, σg) = (0.9994, −15, 0.5), (Γα, κα, σα) = (0.9879, −22, 0.8). Computed on the
    0–255
    scale: every published copy sets the relative strength to g_F (instead of 1) where g_A = g_F, which makes
        the
    index scale-dependent; on 0–255 the effect is below 1e-3 and the values match the VIFB toolbox. The same
    formula serves every convention (``vifb`` averages it over channels).

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        Qabf, unitless (NaN if both sources are flat).
    """
    return planes_mean(triplet_planes(fused, image_a, image_b, convention), _qabf_plane)


def _nabf_gradients(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Kumar's sobel_fn: Sobel / 8 with a mirror extension (d c b | a b c d) of one pixel.
    gv = ndimage.correlate(x, _SOBEL_X / 8.0, mode="mirror")
    gh = ndimage.correlate(x, -_SOBEL_Y / 8.0, mode="mirror")
    g = np.sqrt(gv * gv + gh * gh)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where((gv == 0.0) & (gh == 0.0), 0.0, np.arctan(gv / gh))
    return g, angle


def _nabf_plane(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    td, wt_min, lg = 2.0, 0.001, 1.5
    nrg, kg, sg, nra, ka, sa = 0.9999, 19.0, 0.5, 0.9995, 22.0, 0.5
    g_f, a_f = _nabf_gradients(f)
    grads = [_nabf_gradients(a), _nabf_gradients(b)]
    q = []
    w = []
    for g_s, a_s in grads:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where((g_s == 0) | (g_f == 0), 0.0, np.where(g_s > g_f, g_f / g_s, g_s / g_f))
        orient = np.abs(np.abs(a_s - a_f) - np.pi / 2.0) * 2.0 / np.pi
        q_g = nrg / (1.0 + np.exp(-kg * (rel - sg)))
        q_a = nra / (1.0 + np.exp(-ka * (orient - sa)))
        q.append(np.sqrt(q_g * q_a))
        w.append(np.where(g_s >= td, g_s**lg, wt_min))
    artefact = (g_f > grads[0][0]) & (g_f > grads[1][0])
    num = (artefact * ((1.0 - q[0]) * w[0] + (1.0 - q[1]) * w[1])).sum()
    return float(num / (w[0] + w[1]).sum())


def nabf(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """Fusion artefacts N^{AB/F}, Petrović's measure as modified by B. K. Shreyamsha Kumar (2013); lower is
    better.

    Sobel/8 gradients with a one-pixel mirror extension; where F's edge strength exceeds both sources', the
    lost edge preservation (1 − Q^{S/F}) is summed with weights w_S = g_S^1.5 (g_S >= Td = 2, else 0.001) and
    normalised by Σ(w_A + w_B). The threshold Td is in 0–255 grey levels, so the metric runs on that scale.
    Same formula in every convention (``vifb`` averages it over channels). Note: some Python ports (Tang's
    ``Nabf.py``) set the weights below Td to 0 instead of 0.001; that changes values slightly.

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        Nabf, unitless, in [0, 1].
    """
    return planes_mean(triplet_planes(fused, image_a, image_b, convention), _nabf_plane)


def _check_min_size(image: np.ndarray, size: int, name: str) -> None:
    if image.shape[0] < size or image.shape[1] < size:
        raise ShapeError(f"{name}: expected at least {size}x{size} pixels, got shape {image.shape}")
