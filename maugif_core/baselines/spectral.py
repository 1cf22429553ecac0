"""Classical pansharpening and HS–MS fusion baselines: bicubic, Brovey, GIHS, GSA and MTF-GLP (SPEC §1.3).

Convention: ``image_a`` is the low-resolution spectral image, ``(h, w, L)`` or ``(h, w)`` (one band);
``image_b`` is the high-resolution image on the target grid, ``(r·h, r·w)`` or ``(r·h, r·w, l)``, with one
integer ratio ``r >= 2`` for both axes, inferred from the sizes. The result has A's bands on B's grid, in A's
dtype and layout (a 2-D A gives a 2-D result), clamped to [0, 1] in unit-float terms (integers scaled by their
dtype maximum, as everywhere in ``maugif_core``). Nodata is out of scope: every pixel is treated as valid.

Grid alignment: a low-resolution pixel covers an ``r × r`` block of the high-resolution grid (origins aligned)
and sits at that block's centre, i.e. high-resolution pixel ``i`` lies at low-resolution coordinate
``(i + 0.5) / r - 0.5``. Bicubic upsampling (``torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)``, Keys a = -0.75, edge replication) and the block-mean degradation
(:func:`downsample_block_mean`) both follow it, so a scene degraded by block means and upsampled again is
centred.

Multi-band B (HS–MS fusion): Brovey and GIHS use the mean of B's bands as the panchromatic image; GSA uses the
regression "hypersharpening" extension (Selva et al. 2015): every A band is regressed onto B's bands at low
resolution, and the same coefficients weight B's high-frequency detail injected into that band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maugif_core.baselines._options import OptionError, check_task
from maugif_core.errors import BandCountError, RatioError, ShapeError
from maugif_core.imaging import check_image, from_unit_float, to_unit_float

__all__ = [
    "bicubic",
    "brovey",
    "downsample_block_mean",
    "gihs",
    "gsa",
    "infer_ratio",
    "mtf_glp",
    "upsample_bicubic",
]

# Below this, a variance or a standard deviation counts as zero (unit-float data).
_TINY = 1e-12


def infer_ratio(shape_low: tuple[int, ...], shape_high: tuple[int, ...]) -> int:
    """Integer resolution ratio between a low- and a high-resolution image.

    Args:
        shape_low: shape of the low-resolution image, ``(h, w, ...)``.
        shape_high: shape of the high-resolution image, ``(H, W, ...)``.

    Returns:
        ``r`` with ``H = r·h`` and ``W = r·w``.

    Raises:
        ShapeError: the two axes have different ratios.
        RatioError: the common ratio is not an integer, or is below 2.
    """
    h, w = shape_low[:2]
    H, W = shape_high[:2]
    if H * w != W * h:
        raise ShapeError(
            f"image_b: expected the same resolution ratio on both axes as image_a, got image_a {h}x{w} and "
            f"image_b {H}x{W} (ratios {H / h:g} and {W / w:g})"
        )
    if H % h or W % w or H // h < 2:
        raise RatioError(
            f"image_b: expected a size that is an integer multiple >= 2 of image_a's {h}x{w}, got {H}x{W} "
            f"(ratio {H / h:g})"
        )
    return H // h


def upsample_bicubic(image: np.ndarray, ratio: int) -> np.ndarray:
    """Bicubic upsampling by an integer ratio, pixel-centre aligned (see the module docstring).

    Args:
        image: ``(h, w, C)`` float32.
        ratio: integer factor ``r >= 1``.

    Returns:
        ``(r·h, r·w, C)`` float32, not clamped (bicubic overshoots at sharp edges).
    """
    h, w = image.shape[:2]
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]
    with torch.no_grad():
        up = F.interpolate(tensor, size=(h * ratio, w * ratio), mode="bicubic", align_corners=False)
    return np.ascontiguousarray(up[0].numpy().transpose(1, 2, 0))


def downsample_block_mean(image: np.ndarray, ratio: int) -> np.ndarray:
    """Mean over non-overlapping ``r × r`` blocks: ``(r·h, r·w[, C])`` → ``(h, w[, C])``, float32.

    Raises:
        ShapeError: the height or width is not a multiple of ``ratio``.
    """
    H, W = image.shape[:2]
    if H % ratio or W % ratio:
        raise ShapeError(f"image: expected a height and width that are multiples of {ratio}, got {H}x{W}")
    blocks = image.reshape(H // ratio, ratio, W // ratio, ratio, *image.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


@dataclass(frozen=True)
class _SpectralPair:
    ms_low: np.ndarray  # (h, w, L) float32, image A
    ms_up: np.ndarray  # (H, W, L) float32, A upsampled bicubically
    high: np.ndarray  # (H, W, l) float32, image B
    ratio: int


def _as_bands(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


def _prepare(image_a: np.ndarray, image_b: np.ndarray, task: str | None, method: str) -> _SpectralPair:
    check_task(task, method, additive=False)
    check_image(image_a, "image_a", allow_bands=True)
    check_image(image_b, "image_b", allow_bands=True)
    ratio = infer_ratio(image_a.shape, image_b.shape)
    ms_low = _as_bands(to_unit_float(image_a))
    return _SpectralPair(ms_low, upsample_bicubic(ms_low, ratio), _as_bands(to_unit_float(image_b)), ratio)


def _finish(fused: np.ndarray, image_a: np.ndarray) -> np.ndarray:
    if image_a.ndim == 2:
        fused = fused[..., 0]
    return from_unit_float(fused, image_a.dtype)


def _intensity_weights(weights: np.ndarray | list[float] | None, bands: int) -> np.ndarray:
    if weights is None:
        return np.full(bands, 1.0 / bands, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != bands:
        raise BandCountError(f"weights: expected {bands} values (one per band of image_a), got {w.size}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise OptionError(f"weights: expected finite non-negative values with a positive sum, got {w.tolist()}")
    return (w / w.sum()).astype(np.float32)


def _panchromatic(high: np.ndarray) -> np.ndarray:
    """The panchromatic image: B itself, or the mean of its bands when B has several."""
    return high[..., 0] if high.shape[2] == 1 else high.mean(axis=2, dtype=np.float32)


def _match_pan(pan: np.ndarray, intensity_low: np.ndarray, ratio: int) -> np.ndarray:
    """Match PAN's mean and standard deviation to the intensity's, both measured at low resolution.

    Using PAN's block-mean-degraded statistics (rather than the full-resolution ones) leaves PAN's detail
    unattenuated: a PAN that equals the intensity of the latent high-resolution scene is left unchanged.
    """
    pan_low = downsample_block_mean(pan, ratio)
    sd_pan = float(pan_low.std(dtype=np.float64))
    gain = float(intensity_low.std(dtype=np.float64)) / sd_pan if sd_pan > _TINY else 1.0
    offset = float(intensity_low.mean(dtype=np.float64)) - gain * float(pan_low.mean(dtype=np.float64))
    return (pan * np.float32(gain) + np.float32(offset)).astype(np.float32)


def bicubic(image_a: np.ndarray, image_b: np.ndarray, *, task: str | None = None) -> np.ndarray:
    """Upsample A bicubically onto B's grid; B only sets the grid (the reference bar to beat).

    Args:
        image_a: low-resolution spectral image, ``(h, w)`` or ``(h, w, L)``.
        image_b: high-resolution image, ``(r·h, r·w)`` or ``(r·h, r·w, l)``.
        task: ``"pansharpen"``, ``"hsi_msi"`` or None; validated only.

    Returns:
        ``(r·h, r·w[, L])`` in A's dtype.
    """
    pair = _prepare(image_a, image_b, task, "bicubic")
    return _finish(pair.ms_up, image_a)


def brovey(
    image_a: np.ndarray,
    image_b: np.ndarray,
    *,
    weights: np.ndarray | list[float] | None = None,
    match_pan: bool = True,
    eps: float = 1e-6,
    task: str | None = None,
) -> np.ndarray:
    """Brovey transform: scale every upsampled band by ``PAN / I``, so band ratios are kept per pixel.

    ``I = Σ_k w_k · MS_k`` (weights normalised to sum 1; equal by default), from the upsampled bands clipped
    at 0.

    Args:
        image_a, image_b, task: as :func:`bicubic`.
        weights: ``(L,)`` non-negative intensity weights, or None for equal weights.
        match_pan: first match PAN's mean and standard deviation to I's, both measured at low resolution
            (PAN degraded by block means), so that a PAN on another radiometric scale does not rescale the
            result.
        eps: intensity floor of the division, in unit-float units; where ``I < eps`` the result is dark.

    Returns:
        ``(r·h, r·w[, L])`` in A's dtype.

    Raises:
        BandCountError: ``weights`` does not have L values.
        OptionError: negative or all-zero ``weights``, or ``eps <= 0``.
    """
    if not (np.isfinite(eps) and eps > 0):
        raise OptionError(f"eps: expected a positive finite number, got {eps!r}")
    pair = _prepare(image_a, image_b, task, "brovey")
    w = _intensity_weights(weights, pair.ms_low.shape[2])
    ms_up = np.maximum(pair.ms_up, 0.0)  # bicubic overshoot below 0 would flip the ratios' sign
    intensity = ms_up @ w
    pan = _panchromatic(pair.high)
    if match_pan:
        pan = _match_pan(pan, pair.ms_low @ w, pair.ratio)
    gain = np.maximum(pan, 0.0) / np.maximum(intensity, np.float32(eps))
    return _finish(ms_up * gain[..., None], image_a)


def gihs(
    image_a: np.ndarray,
    image_b: np.ndarray,
    *,
    weights: np.ndarray | list[float] | None = None,
    match_pan: bool = True,
    task: str | None = None,
) -> np.ndarray:
    """Generalised IHS (Tu et al. 2001/2004): add ``PAN - I`` to every upsampled band.

    ``I = Σ_k w_k · MS_k`` (weights normalised to sum 1; equal by default, Tu et al.'s fast IHS for any L).

    Args:
        image_a, image_b, task: as :func:`bicubic`.
        weights: ``(L,)`` non-negative intensity weights, or None for equal weights.
        match_pan: first match PAN's mean and standard deviation to I's, both measured at low resolution
            (PAN degraded by block means), so that a PAN on another radiometric scale does not rescale the
            result.

    Returns:
        ``(r·h, r·w[, L])`` in A's dtype.

    Raises:
        BandCountError: ``weights`` does not have L values.
        OptionError: negative or all-zero ``weights``.
    """
    pair = _prepare(image_a, image_b, task, "gihs")
    w = _intensity_weights(weights, pair.ms_low.shape[2])
    intensity = pair.ms_up @ w
    pan = _panchromatic(pair.high)
    if match_pan:
        pan = _match_pan(pan, pair.ms_low @ w, pair.ratio)
    return _finish(pair.ms_up + (pan - intensity)[..., None], image_a)


def _lstsq_with_intercept(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares ``target ≈ [design, 1] @ coef`` in float64; ``(N, p)``, ``(N, q)`` → ``(p + 1, q)``."""
    x = np.concatenate([design.astype(np.float64), np.ones((design.shape[0], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(x, target.astype(np.float64), rcond=None)
    return coef


def gsa(image_a: np.ndarray, image_b: np.ndarray, *, task: str | None = None) -> np.ndarray:
    """Gram–Schmidt adaptive (GSA, Aiazzi et al. 2007), with a regression extension for multi-band B.

    Single-band B (pansharpening): the intensity ``I = Σ_k α_k MS_k + β`` has the weights that best fit the
    block-mean-degraded PAN from A's bands at low resolution (least squares), and is applied to the upsampled
    bands; each band gets the detail ``PAN - I`` with the gain ``g_k = cov(MS_k, I) / var(I)`` (the
    Gram–Schmidt projection). A constant intensity gives zero gains (the bicubic result). PAN is not rescaled:
    the regression already puts I on PAN's radiometric scale (Vivone et al.'s toolbox also matches PAN's
    standard deviation to that of the upsampled, hence blurred, I, which attenuates the injected detail).

    Multi-band B (HS–MS fusion): each A band is regressed on B's bands degraded to low resolution,
    ``A_k ≈ Σ_j β_kj B_j↓ + c_k``, and receives ``Σ_j β_kj (B_j - upsample(B_j↓))`` (Selva et al. 2015).

    Args:
        image_a, image_b, task: as :func:`bicubic`.

    Returns:
        ``(r·h, r·w[, L])`` in A's dtype.
    """
    pair = _prepare(image_a, image_b, task, "gsa")
    ms_low, ms_up, high, ratio = pair.ms_low, pair.ms_up, pair.high, pair.ratio
    bands = ms_low.shape[2]
    if high.shape[2] == 1:
        pan = high[..., 0]
        pan_low = downsample_block_mean(pan, ratio)
        coef = _lstsq_with_intercept(ms_low.reshape(-1, bands), pan_low.reshape(-1, 1))[:, 0]
        intensity = (ms_up @ coef[:bands].astype(np.float32) + np.float32(coef[bands])).astype(np.float32)
        centred_i = (intensity - np.float32(intensity.mean(dtype=np.float64))).reshape(-1)
        var_i = float(np.dot(centred_i, centred_i)) / centred_i.size
        # cov(MS_k, I) = mean(MS_k · (I - mean I)): centring I alone suffices, no centred copy of the bands.
        cov = ms_up.reshape(-1, bands).T @ centred_i / np.float32(centred_i.size)
        gains = (cov / np.float32(var_i) if var_i > _TINY else np.zeros(bands)).astype(np.float32)
        fused = ms_up + (pan - intensity)[..., None] * gains
    else:
        high_low = downsample_block_mean(high, ratio)
        coef = _lstsq_with_intercept(high_low.reshape(-1, high.shape[2]), ms_low.reshape(-1, bands))
        detail = high - upsample_bicubic(high_low, ratio)
        fused = ms_up + detail @ coef[:-1].astype(np.float32)
    return _finish(fused, image_a)


def _mtf_lowpass(image: np.ndarray, ratio: int, gains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GLP low-pass of ``(H, W, C)``: per channel, the Gaussian MTF of gain ``gains[c]`` at the low-resolution
    Nyquist frequency, sampled at each r×r footprint's centre, re-expanded by the centre-aligned bicubic."""
    import torch

    from maugif_core.multiplicative.sensor import SensorModel, degrade_sensor

    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]
    with torch.no_grad():
        low = torch.cat(
            [
                degrade_sensor(tensor[:, c : c + 1], ratio, SensorModel.fixed(ratio, float(g)))
                for c, g in enumerate(gains)
            ],
            dim=1,
        )
    low_np = np.ascontiguousarray(low[0].numpy().transpose(1, 2, 0))
    return low_np, upsample_bicubic(low_np, ratio)


def mtf_glp(
    image_a: np.ndarray,
    image_b: np.ndarray,
    *,
    nyquist_gain: float | list[float] | np.ndarray = 0.3,
    injection: str = "regression",
    task: str | None = None,
) -> np.ndarray:
    """MTF-GLP (Aiazzi et al. 2006; Vivone et al. 2015's benchmark): Generalized Laplacian Pyramid detail from an
    MTF-matched Gaussian filter, injected with per-band gains.

    PAN's detail is ``P_k − LP_k(P_k)``, where ``LP`` is the Gaussian whose gain at the MS Nyquist frequency
    1/(2r) matches band k's sensor MTF (``nyquist_gain``: one value, or one per band of A — e.g. the nominal
    WorldView-2 MS gains ≈ 0.29 … 0.35; 0.3 when the sensor is unknown), decimated at each footprint's centre
    and re-expanded by the same bicubic as A (the GLP), so that the detail is what A's sensor cannot see.
    ``P_k`` is PAN histogram-matched to the upsampled band k (mean and standard deviation, the latter against
    the low-passed PAN, as Vivone et al.'s toolbox).

    Injection gains:

    * ``"regression"`` (default; MTF-GLP-CBD / "FS" regression): ``g_k = cov(MS_k↑, LP(P)) / var(LP(P))``,
      per band over the scene, the context-based-decision gain without local windows;
    * ``"hpm"`` (MTF-GLP-HPM): multiplicative, ``MS_k↑ · P_k / LP_k(P_k)`` (needs a positive low-pass PAN);
    * ``"unit"``: ``g_k = 1`` (additive MTF-GLP).

    Multi-band B (HS–MS fusion): every A band is regressed on B's MTF-degraded bands at low resolution, and
    receives ``Σ_j β_kj (B_j − LP(B_j))`` (the hypersharpening extension, as :func:`gsa`); ``injection`` is
    ignored.

    Args:
        image_a, image_b, task: as :func:`bicubic`.
        nyquist_gain: the MTF gain(s) at the MS Nyquist frequency, each in (0, 1).
        injection: ``"regression"``, ``"hpm"`` or ``"unit"``.

    Returns:
        ``(r·h, r·w[, L])`` in A's dtype.

    Raises:
        BandCountError: a per-band ``nyquist_gain`` without L values.
        OptionError: a gain outside (0, 1), or an unknown ``injection``.
    """
    if injection not in ("regression", "hpm", "unit"):
        raise OptionError(f"injection: expected 'regression', 'hpm' or 'unit', got {injection!r}")
    pair = _prepare(image_a, image_b, task, "mtf_glp")
    ms_low, ms_up, high, ratio = pair.ms_low, pair.ms_up, pair.high, pair.ratio
    bands = ms_low.shape[2]
    gains = np.asarray(nyquist_gain, dtype=np.float64).ravel()
    if gains.size == 1:
        gains = np.repeat(gains, bands)
    if gains.size != bands:
        raise BandCountError(f"nyquist_gain: expected one value or {bands} (one per band of image_a), got {gains.size}")
    if not (np.isfinite(gains).all() and (gains > 0).all() and (gains < 1).all()):
        raise OptionError(f"nyquist_gain: expected values in (0, 1), got {gains.tolist()}")
    if high.shape[2] > 1:
        mean_gain = np.full(high.shape[2], float(gains.mean()))
        high_low, high_lp = _mtf_lowpass(high, ratio, mean_gain)
        coef = _lstsq_with_intercept(high_low.reshape(-1, high.shape[2]), ms_low.reshape(-1, bands))
        return _finish(ms_up + (high - high_lp) @ coef[:-1].astype(np.float32), image_a)
    pan = high[..., 0]
    # One low-pass per distinct gain (usually one): LP(P) for the matching and the injection.
    unique = {float(g): None for g in gains}
    for g in unique:
        unique[g] = _mtf_lowpass(pan[..., None], ratio, np.array([g]))[1][..., 0]
    fused = np.empty_like(ms_up)
    for k in range(bands):
        lp = unique[float(gains[k])]
        sd_lp = float(lp.std(dtype=np.float64))
        scale = float(ms_up[..., k].std(dtype=np.float64)) / sd_lp if sd_lp > _TINY else 1.0
        shift = float(ms_up[..., k].mean(dtype=np.float64))
        matched = (pan - np.float32(pan.mean(dtype=np.float64))) * np.float32(scale) + np.float32(shift)
        matched_lp = (lp - np.float32(lp.mean(dtype=np.float64))) * np.float32(scale) + np.float32(shift)
        if injection == "hpm":
            fused[..., k] = ms_up[..., k] * matched / np.maximum(matched_lp, np.float32(1e-6))
            continue
        if injection == "unit":
            g_k = 1.0
        else:
            centred = matched_lp - np.float32(matched_lp.mean(dtype=np.float64))
            var = float(np.dot(centred.ravel(), centred.ravel())) / centred.size
            cov = float(np.dot(ms_up[..., k].ravel(), centred.ravel())) / centred.size
            g_k = cov / var if var > _TINY else 0.0
        fused[..., k] = ms_up[..., k] + np.float32(g_k) * (matched - matched_lp)
    return _finish(fused, image_a)
