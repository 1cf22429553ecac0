"""Spectral basis and spatial decimation of the multiplicative mechanism (SPEC §1.2).

Grid convention (the pipeline's "aligned origins"): low-resolution pixel ``(i, j)`` covers the high-resolution
pixels ``[r·i, r·i + r) × [r·j, r·j + r)``; its centre lies at high-resolution coordinate ``r·i + (r − 1)/2``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from maugif_core.errors import RatioError, ShapeError

__all__ = [
    "BLUR_NYQUIST_GAIN",
    "blur_padding",
    "blur_sample",
    "blur_sigma",
    "decimate",
    "default_offset",
    "spectral_basis",
]

BLUR_NYQUIST_GAIN = 0.3
"""Gain of the blur at the low-resolution Nyquist frequency (the usual MTF-matched Wald-protocol filter)."""

# Pixels of the Gram matrix accumulated at a time: bounds the float64 copy to ~8 MiB per band.
_GRAM_CHUNK = 1 << 20


def spectral_basis(image_low: Tensor, rank: int) -> Tensor:
    """Φ: the first K left singular vectors of the image unfolded to ``L × mn`` (K = min(rank, L)).

    Computed in float64 as the leading eigenvectors of the ``L × L`` Gram matrix (equal to the left singular
    vectors; the data are not mean-centred, as in the reference). Each vector's sign is fixed so that its
    entries sum to a positive number (its largest-magnitude entry is positive when the sum is ~0), which makes
    Φ a deterministic function of the image.

    Args:
        image_low: H, ``(L, m, n)`` unit-float.
        rank: the requested K; capped at L.

    Returns:
        ``(L, K)`` float32 with orthonormal columns, on ``image_low``'s device, in order of decreasing
        singular value.
    """
    if image_low.ndim != 3:
        raise ShapeError(f"image_low: expected shape (L, m, n), got {tuple(image_low.shape)}")
    L = image_low.shape[0]
    K = min(int(rank), L)
    flat = image_low.reshape(L, -1)
    gram = torch.zeros(L, L, dtype=torch.float64, device=image_low.device)
    for start in range(0, flat.shape[1], _GRAM_CHUNK):
        block = flat[:, start : start + _GRAM_CHUNK].to(torch.float64)
        gram += block @ block.T
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    basis = vectors.flip(-1)[:, :K]
    sums = basis.sum(dim=0)
    peak = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)).squeeze(0)
    sign = torch.where(sums.abs() > 1e-9, sums.sign(), peak.sign())
    return (basis * sign).to(torch.float32)


def default_offset(ratio: int) -> int:
    """Default phase of plain decimation: ``r // 2``, the pixel nearest each r×r footprint's centre.

    Exactly centred for odd r; half a high-resolution pixel past the centre for even r (the closest a single
    pixel can be). The reference samples ``M[0::r]`` instead, (r − 1)/2 pixels off centre; E would have to
    learn that shift, and D — applied at high resolution — would then misplace detail by r times as much.
    """
    return ratio // 2


def blur_sigma(ratio: int, nyquist_gain: float = BLUR_NYQUIST_GAIN) -> float:
    """σ, in high-resolution pixels, of the Gaussian with gain ``nyquist_gain`` at frequency 1/(2r).

    A Gaussian's frequency response is ``exp(−2π²σ²f²)``, so ``σ = r·√(−2 ln g)/π`` (≈ 0.494·r for g = 0.3).
    """
    return ratio * math.sqrt(-2.0 * math.log(nyquist_gain)) / math.pi


def blur_padding(ratio: int) -> int:
    """High-resolution pixels the ``blur`` decimation reads beyond each r×r footprint, on each side.

    The Gaussian is truncated at 3σ around the footprint's centre, ``(r − 1)/2`` pixels inside its edge.
    """
    return max(0, math.ceil(3 * blur_sigma(ratio) - (ratio - 1) / 2))


def _blur_taps(ratio: int, device: torch.device) -> tuple[Tensor, int]:
    """1-D Gaussian taps centred on a footprint's centre, and the padding they need on each side."""
    sigma = blur_sigma(ratio)
    centre = (ratio - 1) / 2
    pad = blur_padding(ratio)
    positions = torch.arange(-pad, ratio + pad, dtype=torch.float64) - centre
    taps = torch.exp(-0.5 * (positions / sigma) ** 2)
    return (taps / taps.sum()).to(device=device, dtype=torch.float32), pad


def decimate(
    image: Tensor,
    ratio: int,
    mode: Literal["plain", "blur"] = "plain",
    offset: int | None = None,
) -> Tensor:
    """Bring a high-resolution image to the low-resolution grid.

    ``plain``: ``image[..., off::r, off::r]`` with ``off = offset`` (default :func:`default_offset`).
    ``blur``: separable Gaussian (σ from :func:`blur_sigma`, truncated at 3σ) centred exactly on each r×r
    footprint's centre, edge-replicated at the borders, then one sample per footprint; ``offset`` is ignored.

    Args:
        image: ``(B, C, H, W)`` with H and W multiples of ``ratio``.
        ratio: integer r ≥ 2.
        mode: ``"plain"`` or ``"blur"``.
        offset: phase of plain decimation, ``0 <= offset < r``.

    Returns:
        ``(B, C, H / r, W / r)``, same dtype.
    """
    if image.ndim != 4:
        raise ShapeError(f"image: expected shape (B, C, H, W), got {tuple(image.shape)}")
    if int(ratio) != ratio or ratio < 2:
        raise RatioError(f"ratio: expected an integer >= 2, got {ratio}")
    B, C, H, W = image.shape
    if H % ratio or W % ratio:
        raise RatioError(f"image: expected height and width divisible by ratio {ratio}, got {H}x{W}")
    if mode == "plain":
        off = default_offset(ratio) if offset is None else int(offset)
        if not 0 <= off < ratio:
            raise RatioError(f"offset: expected 0 <= offset < ratio ({ratio}), got {off}")
        return image[..., off::ratio, off::ratio]
    if mode != "blur":
        raise ValueError(f"mode: expected 'plain' or 'blur', got {mode!r}")
    taps, pad = _blur_taps(ratio, image.device)
    n = taps.numel()
    x = image.reshape(B * C, 1, H, W).to(torch.float32)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, n, 1), stride=(ratio, 1))
    x = F.conv2d(x, taps.view(1, 1, 1, n), stride=(1, ratio))
    return x.reshape(B, C, H // ratio, W // ratio).to(image.dtype)


def blur_sample(image: Tensor, ratio: int, offset: int) -> Tensor:
    """The Gaussian of ``blur`` decimation centred on the ``plain`` sample ``(r·i + offset, r·j + offset)``.

    What a sensor whose low-resolution pixel ``i`` is registered at high-resolution pixel ``r·i + offset`` (the
    geometry of ``plain`` decimation) and blurred like ``blur`` decimation records. Edge-replicated at the
    borders; truncated at 3σ.

    Args:
        image: ``(B, C, H, W)`` with H and W multiples of ``ratio``.
        ratio: integer r ≥ 2.
        offset: ``0 <= offset < r``.

    Returns:
        ``(B, C, H / r, W / r)`` float32.
    """
    if image.ndim != 4:
        raise ShapeError(f"image: expected shape (B, C, H, W), got {tuple(image.shape)}")
    if not 0 <= offset < ratio:
        raise RatioError(f"offset: expected 0 <= offset < ratio ({ratio}), got {offset}")
    B, C, H, W = image.shape
    if H % ratio or W % ratio:
        raise RatioError(f"image: expected height and width divisible by ratio {ratio}, got {H}x{W}")
    sigma = blur_sigma(ratio)
    pad = math.ceil(3 * sigma)
    positions = torch.arange(-pad, pad + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (positions / sigma) ** 2)
    taps = (taps / taps.sum()).to(device=image.device, dtype=torch.float32)
    x = F.pad(image.reshape(B * C, 1, H, W).to(torch.float32), (pad, pad, pad, pad), mode="replicate")
    x = x[..., offset:, offset:]
    x = F.conv2d(x, taps.view(1, 1, -1, 1), stride=(ratio, 1))
    x = F.conv2d(x, taps.view(1, 1, 1, -1), stride=(1, ratio))
    return x[..., : H // ratio, : W // ratio].reshape(B, C, H // ratio, W // ratio)
