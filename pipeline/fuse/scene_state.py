"""Scene-level state of a raster pair fused as tile rows, computed once per scene from a decimated read.

A scene fused window by window must not let any tile compute its own statistics (SPEC §2, §3: seams). What
the whole-image path derives from the whole image is derived here once, from both rasters read at a reduced
resolution (GDAL serves it from overviews when the files have them; at full resolution when the scene is at or
under ``state_max_pixels``, so the state is then exactly the whole-image path's), and shipped with every tile
row of the scene as bytes:

- ``mapping_a`` / ``mapping_b``: each image's map to unit float and back (:mod:`pipeline.io.radiometry`: natural
  scaling of uint8/uint16, or the robust per-image stretch of anything else), the whole-image path's rule;
- additive tasks: the per-image BatchNorm statistics of both decoders (``bn_mode="per_image"``), taken on the
  nodata-filled luma, and the halo (the model's receptive-field radius);
- multiplicative tasks: the fitted model (spectral basis Φ, encoder/decoder weights, injection gains, sensor)
  as a config plus ``state_dict``, fitted with the registration from the rasters' transforms when both are
  georeferenced, and what it estimated (:attr:`details`).

No pixel of the scene is held at full resolution unless the scene is small.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import RasterReadError
from pipeline.io.radiometry import UnitMapping, invalid_mask, unit_mapping

__all__ = [
    "mapping_from_dict",
    "mapping_to_dict",
    "scene_mappings",
    "SceneState",
    "decimation_factor",
    "dumps_state",
    "loads_state",
    "read_decimated",
    "registration_for",
]

logger = logging.getLogger(__name__)


@dataclass
class SceneState:
    """What every tile of one scene shares.

    Attributes:
        task: the pair's task.
        halo: receptive-field radius of the fusion, in output-grid pixels.
        ratio: resolution ratio r of B over A (1 for additive tasks).
        mapping_a, mapping_b: each image's unit mapping (:func:`mapping_to_dict` of a
            :class:`~pipeline.io.radiometry.UnitMapping`), from the scene-state read.
        norm_stats: per-image BatchNorm statistics ``(stats_b, stats_a)`` of an additive model, or None.
        model_config: fitted multiplicative config (``MultiplicativeConfig.model_dump()``), or None.
        model_state: fitted multiplicative ``state_dict``, or None.
        details: what the per-scene fit estimated (sensor registration, MTF gain), plain values.
        decimation: the factor of the read the state was computed from (1: full resolution).
    """

    task: str
    halo: int
    ratio: int = 1
    mapping_a: dict[str, Any] | None = None
    mapping_b: dict[str, Any] | None = None
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


def mapping_to_dict(mapping: UnitMapping) -> dict[str, Any]:
    """A :class:`~pipeline.io.radiometry.UnitMapping` as plain values (for the state's ``torch.save``)."""
    return {**dataclasses.asdict(mapping), "dtype": np.dtype(mapping.dtype).str}


def mapping_from_dict(fields: dict[str, Any]) -> UnitMapping:
    """Inverse of :func:`mapping_to_dict`."""
    return UnitMapping(**{**fields, "dtype": np.dtype(fields["dtype"])})


def scene_mappings(
    raw_a: np.ndarray, raw_b: np.ndarray, nodata_a: float | None, nodata_b: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each image's unit mapping (:func:`pipeline.io.radiometry.unit_mapping`, the whole-image path's rule) from the
    scene-state read, as plain values."""
    map_a = unit_mapping(raw_a, invalid_mask(raw_a, nodata_a))
    map_b = unit_mapping(raw_b, invalid_mask(raw_b, nodata_b))
    return mapping_to_dict(map_a), mapping_to_dict(map_b)


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
