"""Shared plumbing of the metrics package: input checks, conventions, scaling, grey conversion and filters.

Everything here works in float64. Additive-fusion metrics see images on the 0–255 scale (``uint8`` as is,
``uint16`` × 255/65535, float in [0, 1] × 255), because several published definitions carry constants tied to
that scale (Qabf, Nabf, VIF's noise variance, SSIM's stabilisers). Spectral metrics see unit-float data
(:func:`maugif_core.imaging.to_unit_float`), where their definitions are scale-free or take an explicit range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import ndimage

from maugif_core.errors import BandCountError, RatioError, ShapeError, UnknownMethodError
from maugif_core.imaging import check_image, is_grey

__all__ = [
    "CONVENTIONS",
    "Convention",
    "Planes",
    "box_valid",
    "check_convention",
    "check_ratio",
    "check_same_shape",
    "fusion_planes",
    "gaussian_window",
    "grey255",
    "image_planes",
    "planes_mean",
    "prepare_single",
    "prepare_triplet",
    "to255",
    "triplet_planes",
    "to_unit64",
    "window_valid",
]

Convention = Literal["standard", "cddfuse", "vifb"]
CONVENTIONS: tuple[str, ...] = ("standard", "cddfuse", "vifb")

# MATLAB rgb2gray weights (the VIFB toolbox converts colour sources with them when the fused image is grey).
_RGB2GRAY_MATLAB = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
# BT.601 luma weights (maugif_core.imaging, OpenCV's COLOR_BGR2GRAY).
_BT601 = np.array([0.299, 0.587, 0.114])

#: ``(F, A, B)`` 2-D planes of a fused image and its sources, as returned by :func:`fusion_planes`.
Planes = list[tuple[np.ndarray, np.ndarray, np.ndarray]]

_INT_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_convention(convention: str) -> str:
    """Return ``convention`` if it names a known convention, else raise :class:`UnknownMethodError`."""
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise UnknownMethodError(
            f"convention: expected one of {', '.join(repr(c) for c in CONVENTIONS)}, got {convention!r}"
        )
    return convention


def check_ratio(ratio: object, name: str = "ratio") -> int:
    """Return ``ratio`` as an int if it is an integer >= 2, else raise :class:`RatioError`."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer, float, np.floating)):
        raise RatioError(f"{name}: expected an integer >= 2, got {type(ratio).__name__} {ratio!r}")
    if float(ratio) != int(ratio) or int(ratio) < 2:
        raise RatioError(f"{name}: expected an integer >= 2, got {ratio!r}")
    return int(ratio)


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` have the same height and width.

    Band-count disagreements are reported as :class:`BandCountError`.
    """
    if a.shape[:2] != b.shape[:2]:
        raise ShapeError(
            f"{name_a} and {name_b} must have the same height and width, got {a.shape[:2]} ({name_a}) and "
            f"{b.shape[:2]} ({name_b})"
        )
    bands_a = 1 if a.ndim == 2 else a.shape[2]
    bands_b = 1 if b.ndim == 2 else b.shape[2]
    if bands_a != bands_b:
        raise BandCountError(
            f"{name_a} and {name_b} must have the same number of bands, got {bands_a} ({name_a}) and "
            f"{bands_b} ({name_b})"
        )


def to255(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float64 on the 0–255 scale (uint8 as is, uint16 × 255/65535, float × 255).

    Non-uint8 images whose scaled values all lie within 1e-3 of integers (uint8 data divided by 255, stored
    as float32, or multiplied by 257 into uint16) are snapped to those integers, so that the same grey levels
    score the same whatever their container. This matters for the edge metrics: Qabf's orientation
    atan(s_y / s_x) jumps from +π/2 to −π/2 when a Sobel response that is exactly 0 on integer data comes out
    as −1e-6.
    """
    scale = _INT_MAX.get(image.dtype)
    out = image.astype(np.float64)
    if scale == 255.0:
        return out
    out *= 255.0 / (1.0 if scale is None else scale)
    levels = np.rint(out)
    if np.abs(out - levels).max(initial=0.0) < 1e-3:
        return levels
    return out


def to_unit64(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float64 in unit range (integers divided by their dtype maximum; floats kept)."""
    scale = _INT_MAX.get(image.dtype)
    out = image.astype(np.float64)
    return out if scale is None else out / scale


def _drop_alpha(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    return image


def grey255(image: np.ndarray, *, rounded: bool = False) -> np.ndarray:
    """``(H, W)`` float64 grey image on 0–255: the image itself if grey, else BT.601 luma.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` on the 0–255 scale (already converted by :func:`to255`); C in {1,
            3, 4}, alpha ignored. Colour images whose three channels are equal count as grey.
        rounded: round the luma to integers (OpenCV ``cvtColor`` + ``np.round``, the CDDFuse evaluator).
    """
    image = _drop_alpha(image)
    if image.ndim == 2:
        return np.round(image) if rounded else image
    grey = image[..., 0] if is_grey(image) else image @ _BT601
    return np.round(grey) if rounded else grey


def triplet_planes(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str) -> Planes:
    """Validate a fused image and its sources and split them into the planes ``convention`` evaluates."""
    check_convention(convention)
    return fusion_planes(*prepare_triplet(fused, image_a, image_b), convention)


def prepare_triplet(
    fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a fused image and its two sources and return them as float64 on 0–255 (alpha dropped).

    Raises:
        DTypeError, ShapeError, NonFiniteError: from :func:`maugif_core.imaging.check_image`, naming the
            argument.
        ShapeError: the three images do not share height and width.
    """
    arrays = {"fused": fused, "image_a": image_a, "image_b": image_b}
    for name, array in arrays.items():
        check_image(array, name)
    for name in ("image_a", "image_b"):
        if arrays[name].shape[:2] != fused.shape[:2]:
            raise ShapeError(
                f"{name} must have the same height and width as fused, got {arrays[name].shape[:2]} "
                f"({name}) and {fused.shape[:2]} (fused)"
            )
    f, a, b = (_drop_alpha(to255(array)) for array in (fused, image_a, image_b))
    return f, a, b


def _matlab_rgb2gray_rounded(image: np.ndarray) -> np.ndarray:
    return np.round(image @ _RGB2GRAY_MATLAB)


def fusion_planes(fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str) -> Planes:
    """Split a validated 0–255 triplet into the ``(F, A, B)`` 2-D planes a convention evaluates.

    * ``standard``: one plane per image, BT.601 luma (grey images and grey-as-RGB kept as they are).
    * ``cddfuse``: one plane per image, BT.601 luma rounded to integers (OpenCV ``COLOR_BGR2GRAY`` +
      ``np.round``).
    * ``vifb``: one plane per channel of the fused image (the VIFB toolbox averages a metric over them); a
      single-channel source is reused for every channel; if the fused image is grey, colour sources are
      converted with MATLAB's ``rgb2gray`` (rounded, as on uint8 input).

    Args:
        fused, image_a, image_b: outputs of :func:`prepare_triplet`, ``(H, W)`` or ``(H, W, 3)`` on 0–255.
        convention: a name from :data:`CONVENTIONS`.

    Returns:
        A list of ``(F, A, B)`` tuples of ``(H, W)`` float64 arrays.
    """
    check_convention(convention)
    if convention in ("standard", "cddfuse"):
        rounded = convention == "cddfuse"
        return [
            (
                grey255(fused, rounded=rounded),
                grey255(image_a, rounded=rounded),
                grey255(image_b, rounded=rounded),
            )
        ]
    if fused.ndim == 2:
        sources = [s if s.ndim == 2 else _matlab_rgb2gray_rounded(s) for s in (image_a, image_b)]
        return [(fused, sources[0], sources[1])]
    planes = []
    for k in range(fused.shape[2]):
        a_k = image_a if image_a.ndim == 2 else image_a[..., k]
        b_k = image_b if image_b.ndim == 2 else image_b[..., k]
        planes.append((fused[..., k], a_k, b_k))
    return planes


def prepare_single(image: np.ndarray, name: str = "fused") -> np.ndarray:
    """Validate one image and return it as float64 on 0–255 (alpha dropped)."""
    check_image(image, name)
    return _drop_alpha(to255(image))


def image_planes(image: np.ndarray, convention: str) -> list[np.ndarray]:
    """The 2-D planes of one validated 0–255 image a convention evaluates (see :func:`fusion_planes`)."""
    check_convention(convention)
    if convention == "vifb":
        return [image] if image.ndim == 2 else [image[..., k] for k in range(image.shape[2])]
    return [grey255(image, rounded=convention == "cddfuse")]


def planes_mean(
    planes: Planes,
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
) -> float:
    """Mean of ``fn(F, A, B)`` over the planes of :func:`fusion_planes`."""
    return float(np.mean([fn(f, a, b) for f, a, b in planes]))


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """1-D normalised Gaussian of ``size`` taps (MATLAB ``fspecial('gaussian')`` is its outer product).

    ``fspecial`` also zeroes taps below ``eps * max``; for the windows used here (size <= 17, sigma = size/5
    or 1.5) no tap is that small, so the 2-D window is exactly separable.
    """
    half = (size - 1) / 2.0
    x = np.arange(size, dtype=np.float64) - half
    w = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return w / w.sum()


def window_valid(image: np.ndarray, window_1d: np.ndarray) -> np.ndarray:
    """Separable windowed mean over the 'valid' region (MATLAB ``filter2(w, x, 'valid')`` with ``w`` = outer
    product).

    Args:
        image: ``(H, W)`` float64.
        window_1d: ``(K,)`` taps (symmetric; normalised by the caller).

    Returns:
        ``(H - K + 1, W - K + 1)`` float64.

    Raises:
        ShapeError: the image is smaller than the window.
    """
    k = window_1d.size
    if image.shape[0] < k or image.shape[1] < k:
        raise ShapeError(f"image: expected at least {k}x{k} pixels for a {k}-tap window, got {image.shape}")
    r = k // 2
    out = ndimage.correlate1d(image, window_1d, axis=0, mode="constant")
    out = ndimage.correlate1d(out, window_1d, axis=1, mode="constant")
    return out[r : image.shape[0] - (k - 1 - r), r : image.shape[1] - (k - 1 - r)]


def box_valid(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over every ``size``×``size`` window fully inside ``image`` (MATLAB ``filter2(ones/size², x,
    'valid')``).

    Returns:
        ``(H - size + 1, W - size + 1)`` float64.

    Raises:
        ShapeError: the image is smaller than the window.
    """
    if image.shape[0] < size or image.shape[1] < size:
        raise ShapeError(f"image: expected at least {size}x{size} pixels for a {size}x{size} window, got {image.shape}")
    start = size // 2
    out = ndimage.uniform_filter1d(image, size, axis=0, mode="constant")
    out = ndimage.uniform_filter1d(out, size, axis=1, mode="constant")
    return out[start : image.shape[0] - (size - 1 - start), start : image.shape[1] - (size - 1 - start)]
