"""Structural and information-fidelity metrics of additive fusion: SSIM, MS-SSIM and VIF (VIFp).

All run on the 0–255 scale (their stabilising constants and VIF's noise variance are tied to it).
"""

from __future__ import annotations

import numpy as np

from maugif_core.errors import ShapeError
from maugif_core.metrics._common import (
    Planes,
    box_valid,
    gaussian_window,
    planes_mean,
    triplet_planes,
    window_valid,
)

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "ssim", "vif"]

#: Wang, Simoncelli & Bovik (2003) scale weights, finest first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_GAUSS_11 = gaussian_window(11, 1.5)


def _ssim_terms(
    x: np.ndarray, y: np.ndarray, *, gaussian: bool, data_range: float, sample_cov: bool
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and contrast-structure maps over the 'valid' windows.

    ``gaussian``: 11×11 Gaussian window, σ = 1.5 (Wang et al. 2004); otherwise a 7×7 uniform window (skimage's
    default). ``sample_cov`` rescales the local (co)variances by n/(n − 1) as skimage does by default.
    """

    def filt(z: np.ndarray) -> np.ndarray:
        return window_valid(z, _GAUSS_11) if gaussian else box_valid(z, 7)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    norm = 49.0 / 48.0 if sample_cov else 1.0
    var_x = norm * (filt(x * x) - mu_x * mu_x)
    var_y = norm * (filt(y * y) - mu_y * mu_y)
    cov = norm * (filt(x * y) - mu_x * mu_y)
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    lum = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return lum * cs, cs


def _ssim_pair(x: np.ndarray, y: np.ndarray, convention: str) -> float:
    if convention == "cddfuse":
        # skimage.metrics.structural_similarity defaults on float input in skimage < 0.19: 7×7 uniform window,
        # sample covariance, data_range = 2 (the float dtype range −1..1), on 0–255 data.
        s, _ = _ssim_terms(x, y, gaussian=False, data_range=2.0, sample_cov=True)
    else:
        s, _ = _ssim_terms(x, y, gaussian=True, data_range=255.0, sample_cov=False)
    return float(s.mean())


def ssim(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """Structural similarity of the fused image with both sources.

    * ``standard``: the **mean** (SSIM(A, F) + SSIM(B, F)) / 2 of Wang et al. (2004) SSIM: 11×11 Gaussian
      window, σ = 1.5, K = (0.01, 0.03), L = 255, averaged over the 'valid' windows (equals ``skimage`` with
      ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``). In [−1, 1].
    * ``cddfuse``: the **sum** SSIM(F, A) + SSIM(F, B) with the old skimage defaults CDDFuse ran with (7×7
      uniform window, sample covariance, data_range = 2 on 0–255 data, so C1, C2 are nearly 0). In [−2, 2].
    * ``vifb``: the **sum** of Wang SSIMs (as ``standard``), per channel, averaged over channels. In [−2, 2].

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W,
            at least 11×11.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        SSIM, unitless.
    """
    return _ssim(triplet_planes(fused, image_a, image_b, convention), convention)


def _ssim(planes: Planes, convention: str) -> float:
    def one(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        total = _ssim_pair(a, f, convention) + _ssim_pair(b, f, convention)
        return total / 2.0 if convention == "standard" else total

    return planes_mean(planes, one)


def _downsample2(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def _ms_ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    min_side = min(x.shape)
    scales = len(MS_SSIM_WEIGHTS)
    while scales > 1 and (min_side >> (scales - 1)) < 11:
        scales -= 1
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    if scales < len(MS_SSIM_WEIGHTS):  # the published weights sum to 1.0001: leave them alone when all fit
        weights = weights / weights.sum()
    value = 1.0
    for j in range(scales):
        s_map, cs_map = _ssim_terms(x, y, gaussian=True, data_range=255.0, sample_cov=False)
        term = s_map.mean() if j == scales - 1 else cs_map.mean()
        # Negative contrast-structure means would make the fractional power complex: clamp at 0 (as
        # pytorch-msssim).
        value *= max(float(term), 0.0) ** weights[j]
        if j < scales - 1:
            x, y = _downsample2(x), _downsample2(y)
    return float(value)


def ms_ssim(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), mean of MS-SSIM(A, F) and MS-SSIM(B, F).

    Five scales with weights :data:`MS_SSIM_WEIGHTS`, 11×11 Gaussian window (σ = 1.5), L = 255, 2×2 average
    pooling between scales (odd trailing rows/columns dropped, as ``torch.nn.functional.avg_pool2d``). Images
    whose short side is under 176 pixels get only the scales whose short side stays >= 11, with the weights
    renormalised to sum to 1. Negative per-scale terms are clamped to 0. No benchmark lineage defines it
    differently, so every convention uses this formula (``vifb`` averages it over channels).

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W,
            at least 11×11.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        MS-SSIM, unitless, in [0, 1].
    """
    return _ms_ssim(triplet_planes(fused, image_a, image_b, convention))


def _ms_ssim(planes: Planes) -> float:
    return planes_mean(planes, lambda f, a, b: (_ms_ssim_pair(a, f) + _ms_ssim_pair(b, f)) / 2.0)


_VIF_MIN_SIZE = 65  # smallest side for which all four scales keep a full window


def _vifp_pair(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain multiscale VIF (Sheikh & Bovik, LIVE ``vifp_mscale``) of ``dist`` against ``ref``."""
    if min(ref.shape) < _VIF_MIN_SIZE:
        raise ShapeError(f"fused: expected at least {_VIF_MIN_SIZE}x{_VIF_MIN_SIZE} pixels for VIF, got {ref.shape}")
    eps = 1e-10
    num = 0.0
    den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = gaussian_window(n, n / 5.0)
        if scale > 1:
            ref = window_valid(ref, win)[::2, ::2]
            dist = window_valid(dist, win)[::2, ::2]
        mu1, mu2 = window_valid(ref, win), window_valid(dist, win)
        s1 = np.maximum(window_valid(ref * ref, win) - mu1 * mu1, 0.0)
        s2 = np.maximum(window_valid(dist * dist, win) - mu2 * mu2, 0.0)
        s12 = window_valid(ref * dist, win) - mu1 * mu2

        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps
        g[flat_ref] = 0.0
        sv[flat_ref] = s2[flat_ref]
        s1[flat_ref] = 0.0
        flat_dist = s2 < eps
        g[flat_dist] = 0.0
        sv[flat_dist] = 0.0
        negative = g < 0.0
        sv[negative] = s2[negative]
        g[negative] = 0.0
        sv[sv <= eps] = eps

        num += float(np.log10(1.0 + g * g * s1 / (sv + sigma_nsq)).sum())
        den += float(np.log10(1.0 + s1 / sigma_nsq).sum())
    return num / den if den > 0 else float("nan")


def vif(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard") -> float:
    """Visual information fidelity for fusion: VIFp(A, F) + VIFp(B, F) (a **sum**, as in CDDFuse / MAUGIF
    tables).

    VIFp is the pixel-domain multiscale VIF of the LIVE code (``vifp_mscale``): four scales with Gaussian
    windows of 17, 9, 5, 3 taps (σ = N/5), 'valid' filtering and dyadic decimation, HVS noise variance σ_n² =
    2 on the 0–255 scale; the same number as sewar ``vifp`` and torchmetrics ``visual_information_fidelity``
    for one pair. Same formula in every convention (``vifb`` averages it over channels). NaN when a source is
    flat.

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W,
            at least 65×65.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        VIF, unitless (>= 0; about 0.5–1.5 for useful fusion).
    """
    return _vif(triplet_planes(fused, image_a, image_b, convention))


def _vif(planes: Planes) -> float:
    return planes_mean(planes, lambda f, a, b: _vifp_pair(a, f) + _vifp_pair(b, f))
