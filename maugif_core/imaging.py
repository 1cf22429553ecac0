"""Image conventions shared by models, baselines and metrics.

Arrays enter as ``(H, W)`` or ``(H, W, C)`` NumPy arrays of dtype uint8, uint16 or float32/float64 and are worked on
as float32 in [0, 1] (uint8 / 255, uint16 / 65535; float inputs are taken as already in [0, 1]). Results go back to
the dtype and layout of a reference image with :func:`from_unit_float`.

Colour: full-range ITU-R BT.601 YCbCr on [0, 1] data, chroma centred on 0.5 (the JPEG/JFIF convention).
"""

from __future__ import annotations

import numpy as np

from maugif_core.errors import DTypeError, NonFiniteError, ShapeError

__all__ = [
    "SUPPORTED_DTYPES",
    "check_image",
    "check_same_size",
    "from_unit_float",
    "is_grey",
    "luma",
    "rgb_to_ycbcr",
    "saturation_weighted_chroma",
    "to_unit_float",
    "ycbcr_to_rgb",
]

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)

# BT.601 full range (JFIF). Rows: Y, Cb, Cr.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)

_DTYPE_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_image(image: np.ndarray, name: str = "image", *, allow_bands: bool = False) -> np.ndarray:
    """Validate an input image and return it unchanged.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        name: how the input is named in error messages (``image_a``, a URI, ...).
        allow_bands: accept any channel count (spectral images); otherwise C must be 1, 3 or 4 (alpha dropped later).

    Raises:
        DTypeError: not a NumPy array, or a dtype outside uint8/uint16/float32/float64.
        ShapeError: not 2-D or 3-D, empty, or an unsupported channel count.
        NonFiniteError: a float image holding NaN or Inf.
    """
    if not isinstance(image, np.ndarray):
        raise DTypeError(f"{name}: expected a numpy.ndarray, got {type(image).__name__}")
    if image.dtype not in [np.dtype(d) for d in SUPPORTED_DTYPES]:
        raise DTypeError(f"{name}: expected dtype uint8, uint16, float32 or float64, got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ShapeError(f"{name}: expected shape (H, W) or (H, W, C), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1 or (image.ndim == 3 and image.shape[2] < 1):
        raise ShapeError(f"{name}: expected a non-empty image, got shape {image.shape}")
    if image.ndim == 3 and not allow_bands and image.shape[2] not in (1, 3, 4):
        raise ShapeError(f"{name}: expected 1, 3 or 4 channels, got {image.shape[2]} (shape {image.shape})")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise NonFiniteError(f"{name}: expected finite values, found NaN or Inf")
    return image


def check_same_size(image_a: np.ndarray, image_b: np.ndarray) -> None:
    """Raise :class:`ShapeError` unless both images have the same height and width."""
    if image_a.shape[:2] != image_b.shape[:2]:
        raise ShapeError(
            f"image_a and image_b must have the same height and width, got {image_a.shape[:2]} and {image_b.shape[:2]}"
        )


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float32 in [0, 1] (integers scaled by their dtype maximum; floats kept as they are)."""
    scale = _DTYPE_MAX.get(image.dtype)
    if scale is None:
        return image.astype(np.float32, copy=False)
    return (image.astype(np.float32) / np.float32(scale)).astype(np.float32, copy=False)


def from_unit_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert a float image in [0, 1] back to ``dtype`` (clamped; integers rounded half to even)."""
    dtype = np.dtype(dtype)
    clipped = np.clip(image, 0.0, 1.0)
    scale = _DTYPE_MAX.get(dtype)
    if scale is None:
        return clipped.astype(dtype, copy=False)
    return np.rint(clipped * scale).astype(dtype)


def is_grey(image: np.ndarray, atol: float = 0.0) -> bool:
    """True for single-channel images and for colour images whose channels are all equal.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``; a fourth (alpha) channel is ignored.
        atol: tolerance on channel differences, in the image's own units (0 = exactly equal).
    """
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    rgb = image[..., :3]
    if atol == 0.0:
        return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return bool(np.abs(r - g).max() <= atol and np.abs(r - b).max() <= atol)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in [0, 1] → ``(..., 3)`` YCbCr in [0, 1] (chroma offset 0.5), float32."""
    ycc = rgb.astype(np.float32) @ _RGB_TO_YCBCR.T.astype(np.float32)
    ycc[..., 1:] += np.float32(0.5)
    return ycc


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """``(..., 3)`` YCbCr in [0, 1] (chroma offset 0.5) → RGB, float32, not clamped."""
    shifted = ycc.astype(np.float32).copy()
    shifted[..., 1:] -= np.float32(0.5)
    return shifted @ _YCBCR_TO_RGB.T.astype(np.float32)


def luma(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 luma of a unit-float image: the image itself when grey, BT.601 Y otherwise."""
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    if image.shape[2] == 1 or is_grey(image):
        return image[..., 0].astype(np.float32, copy=False)
    return rgb_to_ycbcr(image[..., :3])[..., 0]


def saturation_weighted_chroma(cbcr_a: np.ndarray, cbcr_b: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Blend two chroma planes, each pixel weighted by its distance from neutral grey.

    A strongly coloured source dominates a washed-out one, which is what multi-focus and multi-exposure stacks want
    (the standard rule in the MEF/MFF literature, e.g. Prabhakar et al. DeepFuse).

    Args:
        cbcr_a, cbcr_b: ``(H, W, 2)`` chroma in [0, 1] with 0.5 as neutral.

    Returns:
        ``(H, W, 2)`` float32 chroma.
    """
    wa = np.abs(cbcr_a - 0.5)
    wb = np.abs(cbcr_b - 0.5)
    den = wa + wb
    neutral = den < eps
    out = (cbcr_a * wa + cbcr_b * wb) / np.where(neutral, 1.0, den)
    out = np.where(neutral, 0.5 * (cbcr_a + cbcr_b), out)
    return out.astype(np.float32)
