"""Scene helpers of the multiplicative model: fingerprints, geometry checks, array layout, strip-wise fusion."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from maugif_core.config import MultiplicativeConfig
from maugif_core.errors import BandCountError, RatioError
from maugif_core.imaging import to_unit_float

__all__ = ["FUSE_ROWS", "check_geometry", "fuse_in_strips", "ratio_of", "scene_fingerprint", "to_chw"]

# High-resolution rows fused at a time by ``fuse``: bounds the (K, rows, W) float32 intermediate.
FUSE_ROWS = 1024


def scene_fingerprint(image_a: np.ndarray, image_b: np.ndarray) -> bytes:
    """SHA-256 of a scene: both shapes and dtypes, and every row's and column's sum of both images (float64).

    One read pass over the data (cheap next to a fit), and any change of a pixel changes a row and a column sum,
    so two different scenes share a fingerprint only by a float64 coincidence in every row and column.
    """
    digest = hashlib.sha256()
    for image in (image_a, image_b):
        array = np.asarray(image)
        digest.update(repr((array.shape, array.dtype.str)).encode())
        cube = array.reshape(array.shape[0], array.shape[1], -1)
        digest.update(np.ascontiguousarray(cube.sum(axis=1, dtype=np.float64)).tobytes())
        digest.update(np.ascontiguousarray(cube.sum(axis=0, dtype=np.float64)).tobytes())
    return digest.digest()


def ratio_of(low_hw: tuple[int, int], high_hw: tuple[int, int], name_low: str, name_high: str) -> int:
    """The integer ratio r ≥ 2 with ``high_hw == r * low_hw``, or :class:`RatioError`."""
    (h, w), (H, W) = low_hw, high_hw
    if H % h or W % w or H // h != W // w or H // h < 2:
        raise RatioError(
            f"{name_high} {H}x{W} must be an integer multiple r >= 2 of {name_low} {h}x{w} in both axes "
            f"(same r), got ratios {H / h:g} and {W / w:g}"
        )
    return H // h


def to_chw(image: np.ndarray) -> Tensor:
    """``(H, W)`` or ``(H, W, C)`` array → ``(C, H, W)`` float32 unit-float tensor."""
    unit = to_unit_float(image)
    if unit.ndim == 2:
        unit = unit[..., None]
    return torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))


def check_geometry(cfg: MultiplicativeConfig, L: int, l: int, low_hw: tuple[int, int], high_hw: tuple[int, int]) -> int:
    """Band counts and ratio of a scene against the config; returns the ratio r.

    Raises:
        BandCountError: fewer than 2 bands in A, or band counts other than the config's.
        RatioError: not an integer ratio >= 2, not the config's ratio, or a decimation offset >= r.
    """
    if L < 2:
        raise BandCountError(
            f"image_a: expected a spectral image with at least 2 bands, shape (h, w, L), got {L} band(s)"
        )
    if cfg.bands_low is not None and (L, l) != (cfg.bands_low, cfg.bands_high):
        raise BandCountError(
            f"image_a/image_b: config expects {cfg.bands_low} and {cfg.bands_high} bands, got {L} and {l}"
        )
    r = ratio_of(tuple(low_hw), tuple(high_hw), "image_a", "image_b")
    if cfg.ratio is not None and r != cfg.ratio:
        raise RatioError(f"image_b/image_a: config ratio is {cfg.ratio}, the images have ratio {r}")
    if cfg.decimation_offset is not None and cfg.decimation_offset >= r:
        raise RatioError(f"config.decimation_offset {cfg.decimation_offset} must be smaller than ratio {r}")
    return r


def fuse_in_strips(fuse_tensor: Any, image_a: Tensor, image_b: Tensor, ratio: int, radius: int) -> Tensor:
    """``fuse_tensor`` over strips of :data:`FUSE_ROWS` high-resolution rows, cut on the low-resolution grid with a
    halo of ``radius`` (rounded up to a multiple of ``ratio``) and cropped: the whole-image result, memory bound."""
    r = ratio
    H = image_b.shape[-2]
    halo = -(-radius // r) * r
    rows = max(r, FUSE_ROWS // r * r)
    strips = []
    with torch.no_grad():
        for top in range(0, H, rows):
            bottom = min(top + rows, H)
            lo, hi = max(0, top - halo), min(H, bottom + halo)
            fused = fuse_tensor(image_a[..., lo // r : hi // r, :], image_b[..., lo:hi, :])
            strips.append(fused[..., top - lo : top - lo + bottom - top, :])
    return torch.cat(strips, dim=-2)
