"""Scene-level state of a raster pair fused as tile rows, computed once per scene from a decimated read.

A scene fused window by window must not let any tile compute its own statistics (SPEC §2, §3: seams). What
the whole-image path derives from the whole image is derived here once, from both rasters read at a reduced
resolution (GDAL serves it from overviews when the files have them; at full resolution when the scene is at or
under ``state_max_pixels``, so the state is then exactly the whole-image path's), and shipped with every tile
row of the scene as bytes:

- ``stretch``: the linear map to unit float of data whose dtype has no natural [0, 1] mapping (int16, int32,
  floats outside [0, 1]) — the finite min/max over both images, as :func:`pipeline.fuse.predictor._stretch` does;
- additive tasks: the per-image BatchNorm statistics of both decoders (``bn_mode="per_image"``), taken on the
  nodata-filled luma, and the halo (the model's receptive-field radius);
- multiplicative tasks: the fitted model (spectral basis Φ, encoder/decoder weights, injection gains, sensor)
  as a config plus ``state_dict``, fitted with the registration from the rasters' transforms when both are
  georeferenced, and what it estimated (:attr:`details`).

No pixel of the scene is held at full resolution unless the scene is small.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import RasterReadError

__all__ = [
    "SceneState",
    "apply_stretch",
    "decimation_factor",
    "dumps_state",
    "loads_state",
    "read_decimated",
    "registration_for",
    "stretch_params",
]

logger = logging.getLogger(__name__)

_NATIVE = (np.dtype(np.uint8), np.dtype(np.uint16))


@dataclass
class SceneState:
    """What every tile of one scene shares.

    Attributes:
        task: the pair's task.
        halo: receptive-field radius of the fusion, in output-grid pixels.
        ratio: resolution ratio r of B over A (1 for additive tasks).
        stretch: ``(lo, scale)`` mapping raw values to unit float as ``(x - lo) / scale``, or None.
        norm_stats: per-image BatchNorm statistics ``(stats_b, stats_a)`` of an additive model, or None.
        model_config: fitted multiplicative config (``MultiplicativeConfig.model_dump()``), or None.
        model_state: fitted multiplicative ``state_dict``, or None.
        details: what the per-scene fit estimated (sensor registration, MTF gain), plain values.
        decimation: the factor of the read the state was computed from (1: full resolution).
    """

    task: str
    halo: int
    ratio: int = 1
    stretch: tuple[float, float] | None = None
    norm_stats: Any = None
    model_config: dict[str, Any] | None = None
    model_state: dict[str, torch.Tensor] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    decimation: int = 1


def dumps_state(state: SceneState) -> bytes:
    """Serialise a state for a tile row's ``SCENE_STATE`` column (``torch.save`` of plain containers)."""
    buffer = io.BytesIO()
    torch.save(dict(state.__dict__), buffer)
    return buffer.getvalue()


def loads_state(data: bytes) -> SceneState:
    """Inverse of :func:`dumps_state` (``weights_only`` loading: tensors and plain values only)."""
    fields = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if fields.get("stretch") is not None:
        fields["stretch"] = tuple(fields["stretch"])
    return SceneState(**fields)


def decimation_factor(height: int, width: int, max_pixels: int) -> int:
    """Smallest integer k with ``ceil(H / k) * ceil(W / k) <= max_pixels`` (1 when the grid already fits)."""
    k = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    while math.ceil(height / k) * math.ceil(width / k) > max_pixels:
        k += 1
    return k


def read_decimated(
    uri: str,
    out_shape: tuple[int, int],
    *,
    window: tuple[int, int, int, int] | None = None,
    config: ReadConfig | None = None,
    storage: StorageConfig | None = None,
) -> np.ndarray:
    """Read a raster (or a window of it) resampled to ``out_shape`` by nearest neighbour.

    GDAL picks the overview level closest to the requested size when the file has overviews, so a decimated
    read fetches far fewer bytes than the full-resolution pixels; at the window's own size it is a plain read.

    Args:
        uri: the raster.
        out_shape: ``(h, w)`` of the result.
        window: ``(row_off, col_off, height, width)`` (boundless: outside pixels get nodata, else 0), or the
            whole raster when None.

    Returns:
        ``(h, w, C)`` in the file's dtype.
    """
    from pipeline.io.readers import open_raster

    with open_raster(uri, config=config, storage=storage) as dataset:
        try:
            return _read_resampled(dataset, out_shape, window)
        except Exception as e:  # GDAL reports bad blocks as several types
            raise RasterReadError(
                f"{uri}: corrupt or truncated pixel data in the scene-state read of a {out_shape[0]}x{out_shape[1]} "
                f"overview: {type(e).__name__}: {e}"
            ) from e


def _read_resampled(dataset: Any, out_shape: tuple[int, int], window: tuple[int, int, int, int] | None) -> np.ndarray:
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    kwargs: dict[str, Any] = {}
    if window is not None:
        row_off, col_off, height, width = window
        kwargs["window"] = Window(col_off, row_off, width, height)
        inside = row_off >= 0 and col_off >= 0 and row_off + height <= dataset.height
        if not inside or col_off + width > dataset.width:
            kwargs.update(boundless=True, fill_value=dataset.nodata if dataset.nodata is not None else 0)
    bands = dataset.read(out_shape=(dataset.count, *out_shape), resampling=Resampling.nearest, **kwargs)
    return np.ascontiguousarray(np.moveaxis(bands, 0, -1))


def stretch_params(image_a: np.ndarray, image_b: np.ndarray) -> tuple[float, float] | None:
    """``(lo, scale)`` of the unit-float stretch the whole-image path applies (None: no stretch needed).

    Mirrors :func:`pipeline.fuse.predictor._stretch`: uint8/uint16 pairs and float pairs already in [0, 1] need none;
    anything else is stretched linearly over both images' finite values.
    """
    if image_a.dtype in _NATIVE and image_b.dtype in _NATIVE:
        return None
    a = image_a.astype(np.float32)
    b = image_b.astype(np.float32)
    finite = np.concatenate([a[np.isfinite(a)].ravel(), b[np.isfinite(b)].ravel()])
    floats = image_a.dtype.kind == "f" and image_b.dtype.kind == "f"
    if floats and (finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0)):
        return None
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return lo, (hi - lo if hi > lo else 1.0)


def apply_stretch(image: np.ndarray, stretch: tuple[float, float] | None) -> np.ndarray:
    """Raw pixels → unit float32 (``to_unit_float`` for uint8/uint16 and unit floats, else the stretch)."""
    from maugif_core.imaging import to_unit_float

    if stretch is None:
        return to_unit_float(image)
    lo, scale = stretch
    return ((image.astype(np.float32) - np.float32(lo)) / np.float32(scale)).astype(np.float32)


def restore_stretch(fused: np.ndarray, stretch: tuple[float, float], dtype: np.dtype) -> np.ndarray:
    """Unit float → raw units in ``dtype`` (inverse of :func:`apply_stretch`, rounded and clipped for integers)."""
    lo, scale = stretch
    out = fused.astype(np.float64) * scale + lo
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def registration_for(
    meta_a: dict[str, Any], meta_b: dict[str, Any], *, decimation: int = 1
) -> tuple[float, float] | None:
    """The registration of A (low resolution) on B from both rasters' transforms, or None when either has none.

    ``meta_a["transform"]`` must be the transform of the low-resolution image as fused (its aligned window);
    ``decimation`` k scales both grids (a state fitted on a read decimated by k).
    """
    from affine import Affine

    from maugif_core.multiplicative.sensor import registration_from_transforms

    ta, tb = meta_a.get("transform"), meta_b.get("transform")
    if not ta or not tb or not meta_a.get("crs") or not meta_b.get("crs"):
        return None
    ratio = round(int(meta_b["height"]) / int(meta_a["height"])) if meta_a.get("height") else None
    ta_k = Affine(*ta[:6]) @ Affine.scale(decimation)
    tb_k = Affine(*tb[:6]) @ Affine.scale(decimation)
    if not ratio or abs(ta_k.a / tb_k.a - ratio) > 1e-6 * ratio:
        ratio = round(ta_k.a / tb_k.a)
    try:
        return registration_from_transforms(tuple(ta_k)[:6], tuple(tb_k)[:6], ratio)
    except Exception as e:  # rotated grids: estimated from the scene instead
        logger.info("no registration from the transforms of %s / %s: %s", meta_a.get("uri"), meta_b.get("uri"), e)
        return None
