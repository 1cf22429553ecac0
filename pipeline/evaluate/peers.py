"""Peer methods from optional dependencies, scored like the baselines when installed: rio-pansharpen's Brovey and
OpenCV's Mertens exposure fusion."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["fuse_mertens", "fuse_rio_brovey"]

logger = logging.getLogger(__name__)


def _rgb_indices(meta: dict[str, Any], bands: int) -> list[int]:
    """Band indices of red, green, blue from the GeoTIFF band descriptions, else the first three bands."""
    names = [str(d or "").strip().lower() for d in meta.get("descriptions") or []]
    found = [names.index(c) for c in ("red", "green", "blue") if c in names]
    if len(found) == 3 and max(found) < bands:
        return found
    if bands < 3:
        raise ValueError(f"rio_brovey needs at least 3 bands in image_a, got {bands}")
    return [0, 1, 2]


def fuse_rio_brovey(low: np.ndarray, high: np.ndarray, ratio: int, rgb: list[int], weight: float = 0.2) -> np.ndarray:
    """rio-pansharpen's Brovey (its ``pansharpen`` function: bilinear ``reproject`` upsampling, nodata mask,
    ``Brovey`` with the CLI's default weight 0.2) on unit-float data.

    The Brovey ratio comes from the R, G, B bands (``rgb``) as rio-pansharpen defines it and multiplies every
    band. Data go in scaled to the uint16 range (rio-pansharpen clips to the PAN dtype's integer range) and
    come back in unit range. The pair carries no CRS, so a placeholder projected CRS and pixel-size transforms
    stand in for the georeferencing rio-pansharpen requires.

    Raises:
        ImportError: rio-pansharpen is not installed.
    """
    from affine import Affine
    from rio_pansharpen.worker import pansharpen

    order = rgb + [b for b in range(low.shape[2]) if b not in rgb]
    scale = float(np.iinfo(np.uint16).max)
    vis = np.ascontiguousarray((low[..., order] * scale).transpose(2, 0, 1), dtype=np.float32)
    pan = (high.mean(axis=2) if high.shape[2] > 1 else high[..., 0]).astype(np.float32) * scale
    # North-up grids with the origin at the top-left corner (y = H); an origin at y = 0 (the image below the
    # x axis) makes rasterio's reproject return zeros here.
    top = float(high.shape[0])
    sharp = pansharpen(
        vis, Affine(float(ratio), 0, 0, 0, -float(ratio), top), pan, Affine(1.0, 0, 0, 0, -1.0, top),
        np.uint16, "EPSG:3857", "EPSG:3857", weight, method="Brovey", src_nodata=0,
    )  # fmt: skip
    out = np.empty((high.shape[0], high.shape[1], low.shape[2]), np.float32)
    out[..., order] = sharp.transpose(1, 2, 0).astype(np.float32) / scale
    return out


def fuse_mertens(image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """OpenCV's Mertens exposure fusion of two images (grey ones as three equal channels), in A's dtype.

    Raises:
        ImportError: OpenCV (``opencv-python-headless``) is not installed.
    """
    import cv2

    from maugif_core.imaging import from_unit_float, to_unit_float

    def bgr(image: np.ndarray) -> np.ndarray:
        unit = to_unit_float(image)
        if unit.ndim == 2:
            unit = unit[..., None]
        unit = unit[..., :3]
        if unit.shape[2] == 1:
            unit = np.repeat(unit, 3, axis=2)
        # OpenCV's Mertens takes 8-bit-range data (a float input in [0, 1] comes back 255 times too dark).
        return np.ascontiguousarray(unit[..., ::-1] * 255.0, dtype=np.float32)

    fused = cv2.createMergeMertens().process([bgr(image_a), bgr(image_b)])[..., ::-1]
    if image_a.ndim == 2 or image_a.shape[2] == 1:
        fused = fused.mean(axis=2) if image_a.ndim == 2 else fused.mean(axis=2, keepdims=True)
    return from_unit_float(np.ascontiguousarray(fused), image_a.dtype)
