"""Fusing one decoded pair with a registered :class:`~maugif_core.methods.FusionMethod` other than MAUGIF.

The predictor (:class:`pipeline.fuse.predictor.FusionPredictor`) sends every pair here when the job's ``method`` is not
``maugif``: the method is built once per actor from the registry (built-in baselines, or third-party methods of
the ``maugif.methods`` entry-point group), and each pair is fused

* whole when it has at most ``max_untiled_pixels`` pixels (B's grid), else
* tile by tile through :func:`pipeline.io.tiling.fuse_tiled`, with the method's declared ``halo`` as the tiles'
  overlap, on B's grid (A's window derived through the integer ratio for multiplicative tasks);

nodata pixels of either image are filled with 0 before fusion and set to A's nodata (else B's) in the result, as
for MAUGIF. Images are HWC ``(H, W, C)`` in and out, in A's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.io.radiometry import nodata_value

__all__ = ["check_method_task", "fuse_with_method"]


def check_method_task(method: Any, task: str) -> None:
    """Raise ValueError when ``method``'s mechanism cannot take ``task`` (a pair-level failure)."""
    from maugif_core.methods import supports_task

    if not supports_task(method, task):
        raise ValueError(
            f"method {method.name!r} is {method.mechanism}: it cannot fuse a pair of task {task!r} "
            f"(expected a{'n' if method.mechanism == 'additive' else ''} {method.mechanism} task)"
        )


def _chw(image: np.ndarray) -> np.ndarray:
    return np.moveaxis(image, -1, 0)


def fuse_with_method(
    method: Any,
    task: str,
    image_a: np.ndarray,
    image_b: np.ndarray,
    meta_a: dict[str, Any],
    meta_b: dict[str, Any],
    *,
    tile_size: int,
    max_untiled_pixels: int,
) -> np.ndarray:
    """Fuse one pair with ``method``; the result is ``(H, W, C)`` on B's grid in A's dtype.

    Args:
        method: a :class:`~maugif_core.methods.FusionMethod`.
        task: the pair's task (passed on to the method; its mechanism must match).
        image_a, image_b: decoded ``(H, W, C)`` images (A at ``1/r`` of B's size for multiplicative tasks).
        meta_a, meta_b: decoded metadata (only ``nodata`` is used; ``{}`` when unknown).
        tile_size: core tile size on B's grid.
        max_untiled_pixels: larger images (B's pixels) are fused tile by tile.

    Raises:
        ValueError: a task the method cannot take, or sizes that do not match through an integer ratio.
    """
    from pipeline.io.tiling import fuse_tiled

    check_method_task(method, task)
    height, width = image_b.shape[:2]
    ratio = max(1, height // max(1, image_a.shape[0]))
    nodata_a, nodata_b = nodata_value(meta_a), nodata_value(meta_b)

    def fuse_fn(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
        fused = method.fuse(np.moveaxis(tile_a, 0, -1), np.moveaxis(tile_b, 0, -1), task=task)
        fused = np.asarray(fused)
        return _chw(fused if fused.ndim == 3 else fused[..., None])

    whole = height * width <= max_untiled_pixels
    if whole and nodata_a is None and nodata_b is None:
        fused = np.asarray(method.fuse(image_a, image_b, task=task))
        return fused if fused.ndim == 3 else fused[..., None]
    core = max(height, width) if whole else tile_size
    fused = fuse_tiled(
        fuse_fn,
        _chw(image_a),
        _chw(image_b),
        core,
        int(method.halo),
        ratio,
        nodata_a=nodata_a,
        nodata_b=nodata_b,
    )
    return np.moveaxis(fused, 0, -1)
