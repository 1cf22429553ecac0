"""Quality metrics of multiplicative fusion (pansharpening, HS–MS fusion).

Reduced resolution (Wald protocol, a reference exists): :func:`sam`, :func:`ergas`, :func:`q_index`,
:func:`q2n`, :func:`psnr`. Full resolution (no reference): :func:`d_lambda`, :func:`d_s`, :func:`qnr`.

Images are ``(H, W, C)`` (or ``(H, W)`` for one band) uint8, uint16 or float arrays; each is brought to unit
range (integers divided by their dtype maximum, floats kept) in float64, so a float fused image in [0, 1]
compares with a uint16 reference. SAM, ERGAS and the Q indices are invariant to a common gain; PSNR takes the
data range explicitly.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from maugif_core.errors import ShapeError
from maugif_core.imaging import check_image
from maugif_core.metrics._common import box_valid, check_ratio, check_same_shape, to_unit64

__all__ = ["ergas", "psnr", "q2n", "q_index", "sam"]


def _as_cube(image: np.ndarray, name: str) -> np.ndarray:
    check_image(image, name, allow_bands=True)
    cube = to_unit64(image)
    return cube[..., None] if cube.ndim == 2 else cube


def _prepare_pair(fused: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    check_image(fused, "fused", allow_bands=True)
    check_image(reference, "reference", allow_bands=True)
    check_same_shape(fused, reference, "fused", "reference")
    return _as_cube(fused, "fused"), _as_cube(reference, "reference")


def sam(fused: np.ndarray, reference: np.ndarray) -> float:
    """Spectral angle mapper: mean angle between the spectra of ``fused`` and ``reference``, in **degrees**.

    Pixels where either spectrum has zero norm are excluded (as Vivone et al.'s toolbox and sewar do); cosines
    are clipped to [−1, 1] against rounding. sewar and torchmetrics return radians: × 180/π to compare.

    Args:
        fused, reference: ``(H, W, C)`` arrays, same shape.

    Returns:
        SAM in degrees, in [0, 180]; NaN when no pixel has two non-zero spectra.
    """
    f, r = _prepare_pair(fused, reference)
    dot = np.einsum("hwc,hwc->hw", f, r)
    norms = np.linalg.norm(f, axis=2) * np.linalg.norm(r, axis=2)
    valid = norms > 0
    if not valid.any():
        return float("nan")
    cosines = np.clip(dot[valid] / norms[valid], -1.0, 1.0)
    return float(np.degrees(np.arccos(cosines).mean()))


def ergas(fused: np.ndarray, reference: np.ndarray, ratio: int) -> float:
    """ERGAS (Wald 2000): 100 / ratio · sqrt(mean_k (RMSE_k / μ_k)²), lower is better.

    ``ratio`` is the resolution ratio of the fusion (high / low resolution pixel count per side, e.g. 4 for
    WorldView-2 PAN/MS), so the factor is the pixel-size ratio h/l = 1/ratio. torchmetrics takes ``ratio=4``;
    sewar takes ``r = 1/ratio``. μ_k is the mean of reference band k.

    Args:
        fused, reference: ``(H, W, C)`` arrays, same shape.
        ratio: integer resolution ratio >= 2.

    Returns:
        ERGAS, unitless (0 for a perfect result); ``inf`` if a reference band has zero mean.
    """
    ratio = check_ratio(ratio)
    f, r = _prepare_pair(fused, reference)
    rmse = np.sqrt(np.square(f - r).mean(axis=(0, 1)))
    mean = r.mean(axis=(0, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(rmse == 0, 0.0, rmse / mean)
    return float(100.0 / ratio * np.sqrt(np.mean(rel * rel)))


def psnr(fused: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio 10·log10(data_range² / MSE) over all pixels and bands, in dB.

    Args:
        fused, reference: ``(H, W)`` or ``(H, W, C)`` arrays, same shape; compared in unit range.
        data_range: peak value in unit range (1.0 = the full dtype range; pass e.g. 2047/65535 for 11-bit data
            stored as uint16).

    Returns:
        PSNR in dB (``inf`` for identical images).
    """
    if not data_range > 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    f, r = _prepare_pair(fused, reference)
    mse = float(np.square(f - r).mean())
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range * data_range / mse))


def _uqi_from_moments(mx: np.ndarray, my: np.ndarray, vx: np.ndarray, vy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """Wang–Bovik UQI from local moments, with ``img_qi``'s rules for flat windows (1, or the mean term)."""
    mx, my, vx, vy, cxy = np.broadcast_arrays(mx, my, vx, vy, cxy)
    mean_sq = mx * mx + my * my
    var_sum = vx + vy
    q = np.ones_like(mx)
    flat = (var_sum == 0) & (mean_sq != 0)
    q[flat] = 2.0 * mx[flat] * my[flat] / mean_sq[flat]
    den = var_sum * mean_sq
    ok = den != 0
    q[ok] = 4.0 * cxy[ok] * mx[ok] * my[ok] / den[ok]
    return q


def _uqi_sliding(x: np.ndarray, y: np.ndarray, block_size: int) -> float:
    # Local moments from exact window sums of integers would be exact; in float a flat window's variance can
    # come out as ±1e-17 instead of 0, so tiny variances relative to the signal are snapped to 0.
    mx, my = box_valid(x, block_size), box_valid(y, block_size)
    vx = box_valid(x * x, block_size) - mx * mx
    vy = box_valid(y * y, block_size) - my * my
    cxy = box_valid(x * y, block_size) - mx * my
    tol = 1e-12 * max(float(np.abs(x).max()), float(np.abs(y).max()), 1e-300) ** 2
    vx[np.abs(vx) < tol] = 0.0
    vy[np.abs(vy) < tol] = 0.0
    cxy[np.abs(cxy) < tol] = 0.0
    return float(_uqi_from_moments(mx, my, vx, vy, cxy).mean())


def q_index(fused: np.ndarray, reference: np.ndarray, block_size: int = 32) -> float:
    """Universal image quality index Q (Wang & Bovik 2002), averaged over bands ("Q_avg" of pansharpening
    papers).

    Per band, Q = 4 σ_xy μ_x μ_y / ((σ_x² + σ_y²)(μ_x² + μ_y²)) on every ``block_size``×``block_size`` window
    (sliding, step 1, 'valid'), averaged over windows, then over bands — Wang's ``img_qi`` with the block size
    32 used for pansharpening (8 is Wang's default). Flat windows score 1 (both flat, equal means) or the mean
    term. sewar's ``uqi`` is not this (it mixes window sums and means); torchmetrics' UQI uses a Gaussian
    window.

    Args:
        fused, reference: ``(H, W)`` or ``(H, W, C)`` arrays, same shape, at least ``block_size`` per side.
        block_size: window side in pixels.

    Returns:
        Q, unitless, in [−1, 1].
    """
    f, r = _prepare_pair(fused, reference)
    if min(f.shape[:2]) < block_size:
        raise ShapeError(f"fused: expected at least {block_size}x{block_size} pixels for Q, got {f.shape[:2]}")
    return float(np.mean([_uqi_sliding(r[..., k], f[..., k], block_size) for k in range(f.shape[2])]))


def _cd_conj(x: np.ndarray) -> np.ndarray:
    out = -x
    out[..., 0] = x[..., 0]
    return out


def _cd_mult(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Product of 2^n-ons stored on the last axis, with the Cayley–Dickson sign rule of Garzelli's
    ``onion_mult``.

    For x = (a, b), y = (c, d) split in halves: x·y = (a·c − d*·b, a*·d* + c·b*), * the hypercomplex
    conjugate.
    """
    n = x.shape[-1]
    if n == 1:
        return x * y
    h = n // 2
    a, b, c, d = x[..., :h], x[..., h:], y[..., :h], y[..., h:]
    first = _cd_mult(a, c) - _cd_mult(_cd_conj(d), b)
    second = _cd_mult(_cd_conj(a), _cd_conj(d)) + _cd_mult(c, _cd_conj(b))
    return np.concatenate([first, second], axis=-1)


def q2n(fused: np.ndarray, reference: np.ndarray, block_size: int = 32, shift: int | None = None) -> float:
    """Q2n hypercomplex quality index (Garzelli & Nencini 2009): Q4 for 4 bands, Q8 for 8, in [0, 1].

    Each pixel's spectrum is a 2^n-on z (bands zero-padded to the next power of two; complex, quaternion,
    octonion, ...). On each ``block_size``×``block_size`` block (step ``shift``)::

        Q2n = |σ_zẑ| / (σ_z σ_ẑ) · 2 σ_z σ_ẑ / (σ_z² + σ_ẑ²) · 2 |z̄| |ẑ̄| / (|z̄|² + |ẑ̄|²)

    with σ_zẑ = E[z ẑ*] − z̄ ẑ̄* the hypercomplex covariance (unbiased), z the reference and ẑ the fused
    spectrum; the index is the mean over blocks. Implementation details follow the authors' reference code (as
    distributed in Vivone et al.'s pansharpening toolbox) so that values compare with published tables: before
    the statistics, each band of each block is normalised by the reference block's mean m and sample std s, (x
    − m)/s + 1, for both images (s = 0 → machine epsilon; m = 0 → the fused band is only shifted by 1); the
    image is extended symmetrically at the bottom/right to a whole number of blocks; a block with σ_z² + σ_ẑ²
    = 0 scores its mean term. Unlike that code, data are not rounded to uint16 first (our inputs are unit
    floats).

    Args:
        fused, reference: ``(H, W, C)`` arrays, same shape.
        block_size: block side (32 in the literature).
        shift: block step; defaults to ``block_size`` (non-overlapping blocks), must not exceed it.

    Returns:
        Q2n, unitless (1 for a perfect result).
    """
    f, r = _prepare_pair(fused, reference)
    shift = block_size if shift is None else int(shift)
    if block_size < 2 or not 1 <= shift <= block_size:
        raise ValueError(
            f"block_size/shift: expected block_size >= 2 and 1 <= shift <= block_size, got {block_size}/{shift}"
        )
    h, w, bands = r.shape
    steps_y, steps_x = -(-h // shift), -(-w // shift)
    pad_y = (steps_y - 1) * shift + block_size - h
    pad_x = (steps_x - 1) * shift + block_size - w
    n = 1 << max(0, (bands - 1).bit_length())
    cubes = []
    for cube in (r, f):
        cube = np.pad(cube, ((0, pad_y), (0, pad_x), (0, 0)), mode="symmetric")
        cube = np.pad(cube, ((0, 0), (0, 0), (0, n - bands)))
        # (steps_y, steps_x, n, block, block) -> (steps_y, steps_x, block*block, n)
        blocks = sliding_window_view(cube, (block_size, block_size), axis=(0, 1))[::shift, ::shift]
        cubes.append(blocks.reshape(steps_y, steps_x, n, -1).transpose(0, 1, 3, 2))
    z, zh = cubes
    mean = z.mean(axis=2, keepdims=True)
    std = z.std(axis=2, ddof=1, keepdims=True)
    std = np.where(std == 0, np.finfo(np.float64).eps, std)
    z = (z - mean) / std + 1.0
    zh = np.where(mean == 0, zh, (zh - mean) / std) + 1.0
    zh_c = _cd_conj(zh)

    m = float(block_size * block_size)
    k = m / (m - 1.0)
    m1 = z.mean(axis=2)
    m2 = zh_c.mean(axis=2)
    mod1_sq = np.square(m1).sum(axis=-1)
    mod2_sq = np.square(m2).sum(axis=-1)
    mean_bias = 2.0 * np.sqrt(mod1_sq * mod2_sq) / (mod1_sq + mod2_sq)
    var_sum = k * (np.square(z).sum(axis=-1).mean(axis=2) + np.square(zh).sum(axis=-1).mean(axis=2)) - k * (
        mod1_sq + mod2_sq
    )
    cov = k * _cd_mult(z, zh_c).mean(axis=2) - k * _cd_mult(m1, m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_mod = np.sqrt(np.square(cov).sum(axis=-1)) * mean_bias * 2.0 / var_sum
    q_mod = np.where(var_sum == 0, mean_bias, q_mod)
    return float(q_mod.mean())
