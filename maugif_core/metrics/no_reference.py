"""Full-resolution (no-reference) quality of pansharpening: QNR, D_λ and D_s (Alparone et al. 2008).

Choices (implementations differ in windows and filtering; these are ours):

* Q is the Wang–Bovik index on non-overlapping blocks (MATLAB ``blockproc``), ``block_size`` (32) at full
  resolution and ``block_size / ratio`` on the low-resolution MS, as in the original QNR paper (Vivone's
  toolbox 1.0 compares with the upsampled MS instead). Partial edge blocks are dropped rather than rejected.
* The PAN is brought to the MS grid by a Gaussian low-pass whose gain at the MS Nyquist frequency is 0.3 (a
  generic MTF; toolboxes use sensor-specific MTF filters or bicubic ``imresize``), then decimated by
  ``ratio``.
* p = q = 1 and α = β = 1 by default.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from maugif_core.errors import BandCountError, RatioError, ShapeError
from maugif_core.metrics._common import check_ratio
from maugif_core.metrics.spectral import _as_cube, _uqi_from_moments

__all__ = ["d_lambda", "d_s", "degrade_pan", "full_resolution_distortions", "qnr"]


def degrade_pan(
    pan: np.ndarray, ratio: int, nyquist_gain: float = 0.3, registration: tuple[float, float] | None = None
) -> np.ndarray:
    """Bring a PAN image to the MS grid: Gaussian low-pass, then keep one pixel per ``ratio``×``ratio`` cell.

    The Gaussian's frequency response at the low-resolution Nyquist frequency 1/(2·ratio) equals
    ``nyquist_gain`` (σ = ratio·sqrt(−2 ln g)/π; 0.3 is the usual MTF gain assumed for an unknown sensor). The
    kept pixel is the one at offset ``ratio // 2`` in each cell. This is the generic, sensor-agnostic stand-in
    for the MTF-matched filters of Vivone et al.'s toolbox.

    ``registration`` ``(dy, dx)``: sample instead where the MS pixel ``(i, j)`` lies on the PAN grid,
    ``(ratio·i + dy, ratio·j + dx)`` (cubic-spline interpolation of the low-passed PAN, edges replicated; equal
    to the default for ``(ratio // 2, ratio // 2)``). A PAN sampled off the MS registration lowers
    Q(MS, PAN_low) and so rewards fused images misregistered the same way (plain upsampling) in D_s.

    Args:
        pan: ``(H, W)`` float64 in unit range, H and W multiples of ``ratio``.
        ratio: integer resolution ratio >= 2.
        nyquist_gain: filter gain at the low-resolution Nyquist frequency, in (0, 1).
        registration: where MS pixel 0 lies on the PAN grid, in PAN pixels; None = ``ratio // 2``.

    Returns:
        ``(H / ratio, W / ratio)`` float64.
    """
    sigma = ratio * np.sqrt(-2.0 * np.log(nyquist_gain)) / np.pi
    low = ndimage.gaussian_filter(pan, sigma, mode="reflect", truncate=4.0)
    if registration is None:
        return low[ratio // 2 :: ratio, ratio // 2 :: ratio]
    rows = ratio * np.arange(pan.shape[0] // ratio) + float(registration[0])
    cols = ratio * np.arange(pan.shape[1] // ratio) + float(registration[1])
    grid = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(low, grid, order=3, mode="nearest")


def _block_q_matrix(cube: np.ndarray, block: int) -> np.ndarray:
    """``(C, C)`` mean Wang–Bovik UQI between every pair of bands over non-overlapping blocks.

    Blocks are ``block``×``block`` (MATLAB ``blockproc``; partial edge blocks dropped); all pairs come from
    one pass of block moments.
    """
    hb, wb, c = cube.shape[0] // block, cube.shape[1] // block, cube.shape[2]
    blocks = cube[: hb * block, : wb * block].reshape(hb, block, wb, block, c).transpose(0, 2, 1, 3, 4)
    blocks = blocks.reshape(hb * wb, block * block, c)
    mean = blocks.mean(axis=1)  # (n, C)
    centred = blocks - mean[:, None, :]
    cov = np.matmul(centred.transpose(0, 2, 1), centred) / (block * block)  # (n, C, C), BLAS
    var = np.diagonal(cov, axis1=1, axis2=2)  # (n, C)
    q = _uqi_from_moments(
        mean[:, :, None], mean[:, None, :], var[:, :, None], var[:, None, :], cov
    )  # (n, C, C) by broadcasting
    return q.mean(axis=0)


def _distortions(
    f: np.ndarray,
    m: np.ndarray,
    pan: np.ndarray,
    ratio: int,
    block_size: int,
    nyquist_gain: float,
    registration: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Band-pair Q matrices at full and low resolution, the PAN appended as the last band of each."""
    pan_low = degrade_pan(pan, ratio, nyquist_gain, registration)
    q_high = _block_q_matrix(np.concatenate([f, pan[..., None]], axis=2), block_size)
    q_low = _block_q_matrix(np.concatenate([m, pan_low[..., None]], axis=2), block_size // ratio)
    bands = f.shape[2]
    return q_high[:bands, :bands], q_low[:bands, :bands], q_high[:bands, bands], q_low[:bands, bands]


def _d_lambda_from(q_high: np.ndarray, q_low: np.ndarray, p: float) -> float:
    upper = np.triu_indices(q_high.shape[0], k=1)
    return float(np.mean(np.abs(q_high[upper] - q_low[upper]) ** p) ** (1.0 / p))


def _d_s_from(q_pan_high: np.ndarray, q_pan_low: np.ndarray, q: float) -> float:
    return float(np.mean(np.abs(q_pan_high - q_pan_low) ** q) ** (1.0 / q))


def _prepare_full(
    fused: np.ndarray, ms: np.ndarray, pan: np.ndarray, ratio: int, block_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    ratio = check_ratio(ratio)
    f, m, p = _as_cube(fused, "fused"), _as_cube(ms, "ms"), _as_cube(pan, "pan")
    if p.shape[2] != 1:
        raise BandCountError(f"pan: expected a single band, got {p.shape[2]} (shape {pan.shape})")
    if f.shape[2] != m.shape[2]:
        raise BandCountError(
            f"fused and ms must have the same number of bands, got {f.shape[2]} (fused) and {m.shape[2]} (ms)"
        )
    if f.shape[:2] != p.shape[:2]:
        raise ShapeError(f"fused and pan must have the same height and width, got {f.shape[:2]} and {p.shape[:2]}")
    if (m.shape[0] * ratio, m.shape[1] * ratio) != f.shape[:2]:
        raise RatioError(
            f"ms: expected shape (H/ratio, W/ratio) = ({f.shape[0] / ratio:g}, {f.shape[1] / ratio:g}) "
            f"for fused {f.shape[:2]} and ratio {ratio}, got {m.shape[:2]}"
        )
    if block_size % ratio != 0 or block_size < 2 * ratio:
        raise ValueError(f"block_size: expected a multiple of ratio ({ratio}) >= {2 * ratio}, got {block_size}")
    if min(f.shape[:2]) < block_size:
        raise ShapeError(f"fused: expected at least {block_size}x{block_size} pixels, got {f.shape[:2]}")
    return f, m, p[..., 0], ratio


def d_lambda(fused: np.ndarray, ms: np.ndarray, pan: np.ndarray, ratio: int, block_size: int = 32, p: int = 1) -> float:
    """Spectral distortion D_λ of QNR (Alparone et al. 2008), lower is better.

    D_λ = (mean over band pairs l ≠ r of |Q(F_l, F_r) − Q(MS_l, MS_r)|^p)^(1/p), Q the Wang–Bovik index on
    non-overlapping blocks: ``block_size`` on the fused image, ``block_size / ratio`` on the low-resolution MS
    (the original paper's choice; Vivone's toolbox 1.0 instead compares with the upsampled MS). Partial edge
    blocks are dropped. ``pan`` is only validated (kept in the signature for symmetry with :func:`d_s`).

    Args:
        fused: ``(H, W, C)`` fused image, C >= 2.
        ms: ``(H / ratio, W / ratio, C)`` original multispectral image.
        pan: ``(H, W)`` or ``(H, W, 1)`` panchromatic image.
        ratio: integer resolution ratio >= 2.
        block_size: Q block side at full resolution (a multiple of ratio).
        p: exponent.

    Returns:
        D_λ, unitless, in [0, 1] (0 = no spectral distortion).
    """
    f, m, pan_u, ratio = _prepare_full(fused, ms, pan, ratio, block_size)
    _check_two_bands(f)
    q_ff, q_mm, _, _ = _distortions(f, m, pan_u, ratio, block_size, 0.3)
    return _d_lambda_from(q_ff, q_mm, p)


def d_s(
    fused: np.ndarray,
    ms: np.ndarray,
    pan: np.ndarray,
    ratio: int,
    block_size: int = 32,
    q: int = 1,
    nyquist_gain: float = 0.3,
) -> float:
    """Spatial distortion D_s of QNR (Alparone et al. 2008), lower is better.

    D_s = (mean over bands l of |Q(F_l, P) − Q(MS_l, P_low)|^q)^(1/q), Q on non-overlapping blocks
    (``block_size`` at full, ``block_size / ratio`` at low resolution), P_low = :func:`degrade_pan` of the PAN
    (Gaussian low-pass with the given Nyquist gain, then decimation by ``ratio``). The low-pass choice is ours
    (documented, sensor-agnostic); toolboxes use sensor MTF filters or bicubic ``imresize``, so expect
    differences in the second decimal.

    Args:
        fused: ``(H, W, C)`` fused image.
        ms: ``(H / ratio, W / ratio, C)`` original multispectral image.
        pan: ``(H, W)`` or ``(H, W, 1)`` panchromatic image.
        ratio: integer resolution ratio >= 2.
        block_size: Q block side at full resolution (a multiple of ratio).
        q: exponent.
        nyquist_gain: PAN low-pass gain at the low-resolution Nyquist frequency.

    Returns:
        D_s, unitless, in [0, 1] (0 = no spatial distortion).
    """
    f, m, pan_u, ratio = _prepare_full(fused, ms, pan, ratio, block_size)
    _, _, q_fp, q_mp = _distortions(f, m, pan_u, ratio, block_size, nyquist_gain)
    return _d_s_from(q_fp, q_mp, q)


def qnr(
    fused: np.ndarray,
    ms: np.ndarray,
    pan: np.ndarray,
    ratio: int,
    block_size: int = 32,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> float:
    """Quality with no reference QNR = (1 − D_λ)^α · (1 − D_s)^β (Alparone et al. 2008), in [0, 1], 1 is best.

    See :func:`d_lambda` and :func:`d_s` for the windows and the PAN filtering.

    Args:
        fused: ``(H, W, C)`` fused image, C >= 2.
        ms: ``(H / ratio, W / ratio, C)`` original multispectral image.
        pan: ``(H, W)`` or ``(H, W, 1)`` panchromatic image.
        ratio: integer resolution ratio >= 2.
        block_size: Q block side at full resolution.
        alpha, beta: exponents.

    Returns:
        QNR, unitless.
    """
    dl, ds = full_resolution_distortions(fused, ms, pan, ratio, block_size)
    return float((1.0 - dl) ** alpha * (1.0 - ds) ** beta)


def full_resolution_distortions(
    fused: np.ndarray,
    ms: np.ndarray,
    pan: np.ndarray,
    ratio: int,
    block_size: int = 32,
    registration: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """``(D_λ, D_s)`` with p = q = 1 from one pass over the block moments (what :func:`qnr` combines).

    Args:
        fused: ``(H, W, C)`` fused image, C >= 2.
        ms: ``(H / ratio, W / ratio, C)`` original multispectral image.
        pan: ``(H, W)`` or ``(H, W, 1)`` panchromatic image.
        ratio: integer resolution ratio >= 2.
        block_size: Q block side at full resolution.
        registration: where the MS pixel 0 lies on the PAN grid for the PAN's degradation (:func:`degrade_pan`);
            None = ``ratio // 2``.

    Returns:
        ``(d_lambda, d_s)``, both unitless in [0, 1].
    """
    f, m, pan_u, ratio = _prepare_full(fused, ms, pan, ratio, block_size)
    _check_two_bands(f)
    q_ff, q_mm, q_fp, q_mp = _distortions(f, m, pan_u, ratio, block_size, 0.3, registration)
    return _d_lambda_from(q_ff, q_mm, 1.0), _d_s_from(q_fp, q_mp, 1.0)


def _check_two_bands(f: np.ndarray) -> None:
    if f.shape[2] < 2:
        raise BandCountError(f"fused: expected at least 2 bands for D_lambda, got {f.shape[2]}")
