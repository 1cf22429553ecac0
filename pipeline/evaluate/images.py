"""Images of the evaluation job: fused images encoded losslessly, and the display thumbnails of the visual grid."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

__all__ = ["encode_image", "grid_columns", "thumbnail_png"]


def encode_image(image: np.ndarray) -> tuple[bytes, str]:
    """Encode a fused image: uint8/uint16 with 1, 3 or 4 channels as PNG, anything else as float32 TIFF.

    Returns:
        ``(data, suffix)`` with suffix ``.png`` or ``.tif``.
    """
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] in (3, 4)):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    if array.dtype == np.uint16 and array.ndim == 2:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    from rasterio.io import MemoryFile

    cube = array[..., None] if array.ndim == 2 else array
    with MemoryFile() as memfile:
        profile = {"driver": "GTiff", "height": cube.shape[0], "width": cube.shape[1], "count": cube.shape[2],
                   "dtype": "float32" if cube.dtype.kind == "f" else str(cube.dtype)}  # fmt: skip
        with memfile.open(**profile) as dataset:
            dataset.write(np.ascontiguousarray(cube.transpose(2, 0, 1)).astype(profile["dtype"]))
        return memfile.read(), ".tif"


def grid_columns(methods: Sequence[str], with_reference: bool) -> list[str]:
    """Column order of the visual grid: A, B, the reference (Wald protocol), then the methods."""
    return ["A", "B", *(["reference"] if with_reference else []), *methods]


def _display_rgb(image: np.ndarray, rgb: list[int] | None, stretch_from: np.ndarray | None) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] for display.

    Images with the bands of ``stretch_from`` show bands ``rgb`` under the 1st–99th percentile stretch of
    ``stretch_from`` (one scale for every method of a pair); other spectral images (a PAN, the MS of an HS–MS
    pair) show their first three bands (or their only one) under their own stretch; without ``stretch_from``
    (additive tasks) images are shown as they are.
    """
    from maugif_core.imaging import to_unit_float

    unit = to_unit_float(np.asarray(image))
    if unit.ndim == 2:
        unit = unit[..., None]
    shares_bands = stretch_from is not None and stretch_from.shape[2] == unit.shape[2]
    if rgb is not None and shares_bands and max(rgb) < unit.shape[2]:
        picked, reference = unit[..., rgb], stretch_from[..., rgb]
    else:
        picked = unit[..., :3] if unit.shape[2] >= 3 else np.repeat(unit[..., :1], 3, axis=2)
        reference = picked
    if stretch_from is not None:
        lo = np.percentile(reference, 1, axis=(0, 1))
        hi = np.percentile(reference, 99, axis=(0, 1))
        picked = (picked - lo) / np.maximum(hi - lo, 1e-6)
    return np.clip(picked, 0.0, 1.0)


def thumbnail_png(
    image: np.ndarray, max_side: int, *, rgb: list[int] | None = None, stretch_from: np.ndarray | None = None
) -> bytes:
    """An 8-bit RGB PNG thumbnail (longest side ``max_side``, nearest-neighbour upscaling of small images).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` in any supported dtype.
        rgb: band indices shown as red, green, blue (spectral images); None: the first three channels.
        stretch_from: spectral images: a unit-float cube whose 1st–99th percentiles set the display stretch of
            every image of the pair (so methods are shown on one scale).
    """
    from PIL import Image

    shown = (_display_rgb(image, rgb, stretch_from) * 255.0 + 0.5).astype(np.uint8)
    picture = Image.fromarray(shown)
    scale = max_side / max(picture.size)
    size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
    picture = picture.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------------------
