"""Classical additive-fusion baselines: average, max-abs, DWT and Laplacian pyramid (SPEC §1.3).

They share the MAUGIF additive model's conventions, through the same helpers
(:func:`maugif_core.additive.prepare_pair` / :func:`~maugif_core.additive.compose_colour`): inputs ``(H, W)``
or ``(H, W, C)`` (C = 1, 3 or 4) in uint8, uint16 or float in [0, 1], same height and width; only the
luma (BT.601 full-range Y) is fused; the chroma follows a rule, ``"from_a"`` (default) or
``"saturation_weighted"``, or the rule of a task preset (``task="mff"``); the result is clamped to [0, 1] and
returned in image A's dtype and layout.

Grey handling, as in the model: a single-channel image or one whose colour channels are all equal is grey. A
2-D or single-channel A gives a grey result whatever B is. A grey A stored as three equal channels gives three
equal channels under ``"from_a"`` (A has no chroma to give), and B's chroma under ``"saturation_weighted"``
(the neutral A gets zero weight). A's alpha channel, if any, is carried over unchanged; B's is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pywt
from scipy.ndimage import correlate1d

from maugif_core.additive import compose_colour, prepare_pair
from maugif_core.baselines._options import check_levels, check_task
from maugif_core.config import preset
from maugif_core.errors import UnknownMethodError

__all__ = [
    "CHROMA_RULES",
    "average",
    "build_laplacian_pyramid",
    "collapse_laplacian_pyramid",
    "dwt",
    "laplacian",
    "maxabs",
]

CHROMA_RULES = ("from_a", "saturation_weighted")
DEFAULT_LEVELS = 4

# Burt & Adelson (1983) generating kernel with a = 0.375: [1, 4, 6, 4, 1] / 16.
_BURT_ADELSON = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / np.float32(16.0)

LumaFuser = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _resolve_chroma(chroma: str | None, task: str | None, method: str) -> str:
    check_task(task, method, additive=True)
    if chroma is None:
        return preset(task).chroma if task is not None else "from_a"
    if chroma not in CHROMA_RULES:
        raise UnknownMethodError(f"chroma: expected one of {', '.join(CHROMA_RULES)}, got {chroma!r}")
    return chroma


def _fuse_additive(
    image_a: np.ndarray,
    image_b: np.ndarray,
    fuse_luma: LumaFuser,
    *,
    chroma: str | None,
    task: str | None,
    method: str,
) -> np.ndarray:
    rule = _resolve_chroma(chroma, task, method)
    prepared = prepare_pair(image_a, image_b)
    fused_y = fuse_luma(prepared.luma_a, prepared.luma_b)
    return compose_colour(fused_y, prepared, rule)


def _select_maxabs(coeff_a: np.ndarray, coeff_b: np.ndarray) -> np.ndarray:
    """Per element, the coefficient with the larger magnitude (A on ties)."""
    return np.where(np.abs(coeff_a) >= np.abs(coeff_b), coeff_a, coeff_b)


def average(
    image_a: np.ndarray, image_b: np.ndarray, *, chroma: str | None = None, task: str | None = None
) -> np.ndarray:
    """Fuse by averaging the two lumas: ``F_Y = (Y_A + Y_B) / 2``.

    Args:
        image_a: base image A, ``(H, W)`` or ``(H, W, C)``; its dtype and layout are those of the result.
        image_b: image B, ``(H, W)`` or ``(H, W, C)``.
        chroma: ``"from_a"`` or ``"saturation_weighted"``; None takes the task preset's rule, else
            ``"from_a"``.
        task: additive task name whose preset picks the chroma rule when ``chroma`` is None.

    Returns:
        The fused image, A's dtype and shape.
    """
    return _fuse_additive(image_a, image_b, lambda ya, yb: 0.5 * (ya + yb), chroma=chroma, task=task, method="average")


def maxabs(
    image_a: np.ndarray, image_b: np.ndarray, *, chroma: str | None = None, task: str | None = None
) -> np.ndarray:
    """Fuse by taking, per pixel, the luma of larger magnitude (on [0, 1] data: the brighter one).

    Args and returns as :func:`average`.
    """
    return _fuse_additive(image_a, image_b, _select_maxabs, chroma=chroma, task=task, method="maxabs")


def dwt(
    image_a: np.ndarray,
    image_b: np.ndarray,
    *,
    wavelet: str = "db2",
    levels: int | None = None,
    chroma: str | None = None,
    task: str | None = None,
) -> np.ndarray:
    """Discrete-wavelet-transform fusion: average the approximation, keep the max-abs detail coefficients.

    The 2-D DWT (PyWavelets, symmetric extension) is cropped back to the input size after reconstruction, so
    odd sizes are kept.

    Args:
        image_a, image_b, chroma, task: as :func:`average`.
        wavelet: a discrete PyWavelets wavelet name (``"haar"``, ``"db2"``, ``"sym4"``, ...).
        levels: decomposition depth; None = ``min(4, max level for the size)`` (0, i.e. plain averaging, for
            an image too small for one level of this wavelet).

    Returns:
        The fused image, A's dtype and shape.

    Raises:
        UnknownMethodError: ``wavelet`` is not a discrete PyWavelets wavelet.
        OptionError, ShapeError: ``levels`` not a positive integer, or too deep for the image size.
    """
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise UnknownMethodError(
            f"wavelet: expected a discrete PyWavelets wavelet (e.g. haar, db2, sym4; see pywt.wavelist), "
            f"got {wavelet!r}"
        )
    wave = pywt.Wavelet(wavelet)

    def fuse_luma(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
        shape = ya.shape
        max_levels = pywt.dwt_max_level(min(shape), wave.dec_len)
        depth = check_levels(levels, max_levels, DEFAULT_LEVELS, shape)
        if depth == 0:  # too small for one level: the approximation is the image itself
            return 0.5 * (ya + yb)
        coeffs_a = pywt.wavedec2(ya, wave, mode="symmetric", level=depth)
        coeffs_b = pywt.wavedec2(yb, wave, mode="symmetric", level=depth)
        fused = [0.5 * (coeffs_a[0] + coeffs_b[0])]
        for details_a, details_b in zip(coeffs_a[1:], coeffs_b[1:], strict=True):
            fused.append(tuple(_select_maxabs(da, db) for da, db in zip(details_a, details_b, strict=True)))
        return pywt.waverec2(fused, wave, mode="symmetric")[: shape[0], : shape[1]].astype(np.float32)

    return _fuse_additive(image_a, image_b, fuse_luma, chroma=chroma, task=task, method="dwt")


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    out = correlate1d(image, kernel, axis=0, mode="mirror")
    return correlate1d(out, kernel, axis=1, mode="mirror")


def _reduce(image: np.ndarray) -> np.ndarray:
    """Blur with the 5-tap kernel, then keep every second row and column: ``(H, W)`` → ``(⌈H/2⌉, ⌈W/2⌉)``."""
    return _blur(image, _BURT_ADELSON)[::2, ::2]


def _expand(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of the subsampling of :func:`_reduce`: zero-insert onto ``shape``, blur with twice the kernel.

    Whole-sample mirror boundaries keep the interpolation weights summing to one up to the borders, for odd
    and even sizes alike, so a constant expands to the same constant.
    """
    up = np.zeros(shape, dtype=np.float32)
    up[::2, ::2] = image
    return _blur(up, 2.0 * _BURT_ADELSON)


def _max_pyramid_levels(shape: tuple[int, ...]) -> int:
    side, count = min(shape[:2]), 0
    while side > 1:
        side = (side + 1) // 2
        count += 1
    return count


def build_laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Burt–Adelson Laplacian pyramid of a single-channel image.

    Args:
        image: ``(H, W)`` float image.
        levels: number of detail levels (>= 0).

    Returns:
        ``levels`` detail images (finest first, level k of size about ``H / 2**k``) followed by the coarsest
        Gaussian level (the base), all float32.
    """
    current = np.asarray(image, dtype=np.float32)
    pyramid = []
    for _ in range(levels):
        smaller = _reduce(current)
        pyramid.append(current - _expand(smaller, current.shape))
        current = smaller
    pyramid.append(current)
    return pyramid


def collapse_laplacian_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Rebuild the image from :func:`build_laplacian_pyramid`'s output (exact up to float rounding)."""
    current = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        current = detail + _expand(current, detail.shape)
    return current


def laplacian(
    image_a: np.ndarray,
    image_b: np.ndarray,
    *,
    levels: int | None = None,
    chroma: str | None = None,
    task: str | None = None,
) -> np.ndarray:
    """Laplacian-pyramid fusion (Burt & Adelson): average the base, keep the max-abs detail at every level.

    Args:
        image_a, image_b, chroma, task: as :func:`average`.
        levels: number of detail levels; None = ``min(4, as many as the size allows)``; each level halves the
            size (rounding up), down to a 1-pixel side at most.

    Returns:
        The fused image, A's dtype and shape.

    Raises:
        OptionError, ShapeError: ``levels`` not a positive integer, or too deep for the image size.
    """

    def fuse_luma(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
        depth = check_levels(levels, _max_pyramid_levels(ya.shape), DEFAULT_LEVELS, ya.shape)
        pyr_a = build_laplacian_pyramid(ya, depth)
        pyr_b = build_laplacian_pyramid(yb, depth)
        fused = [_select_maxabs(da, db) for da, db in zip(pyr_a[:-1], pyr_b[:-1], strict=True)]
        fused.append(0.5 * (pyr_a[-1] + pyr_b[-1]))
        return collapse_laplacian_pyramid(fused)

    return _fuse_additive(image_a, image_b, fuse_luma, chroma=chroma, task=task, method="laplacian")
