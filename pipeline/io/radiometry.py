"""Raster values to the models' unit range and back, and the pixels that cannot be fused (nodata, NaN, +/-Inf).

The rules (README, "Channels, value ranges and nodata"):

* **Invalid pixels.** A pixel is invalid in an image when any of its bands equals the declared nodata (NaN-aware)
  or, in a float image, any band is NaN or +/-Inf, whether or not a nodata value is declared. A pixel invalid in
  A or in B is nodata in the output; invalid pixels are filled with 0 before fusion (as declared nodata always
  was: they count as zeros in the per-image BatchNorm statistics and the per-scene fit) and are left out of the
  value range below, so a NaN or an Inf can never reach the models or the output.
* **To unit float, per image** (:func:`unit_mapping`). uint8 / uint16: value / dtype maximum. A float image whose
  valid values all lie in [0, 1]: as it is. Anything else (float data outside [0, 1], signed or 32-bit integers):
  a linear stretch by the image's own *robust range*, lo and hi = the 0.1th and 99.9th percentiles of its valid
  values (computed in float64 from at most 2**20 evenly strided samples), values beyond them clipped to [0, 1];
  a constant image maps to 0. Each image is mapped on its own, so two sources in different units (reflectance and
  kelvin, dB and counts) each use the model's whole input range, and a few extreme pixels (1e30 in data of order
  1) cannot squash the rest to one value.
* **Back to A's units.** Natural and unit images: clamped to [0, 1] and scaled. Stretched (additive tasks):
  ``A + (F - A_unit) * (hi - lo)``, the change fusion made added to A's own values, so a pixel fusion leaves
  unchanged comes back bit-exact, outliers beyond the robust range included; stretched (multiplicative tasks,
  whose output is a new image): ``lo + F * (hi - lo)``. Either is computed in float64, clipped to A's valid
  [min, max] (always finite) and cast to A's dtype (integers rounded).
* **Output nodata** (:func:`output_nodata`): A's nodata; else B's when A's dtype can hold it; else NaN for a
  float A. The writers declare that value on the output. An integer A that declares none (and whose partner's
  nodata it cannot hold) gets 0 at invalid pixels, undeclared: declare a nodata on A to mark them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["UnitMapping", "fill_value", "invalid_mask", "nodata_value", "output_nodata", "union_mask", "unit_mapping"]

_NATURAL_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
ROBUST_PERCENTILES = (0.1, 99.9)
_MAX_SAMPLES = 1 << 20


def nodata_value(meta: Mapping[str, Any]) -> float | None:
    """The nodata of a ``meta`` dict as a float (NaN included; stored as the string ``"nan"``), or None."""
    value = meta.get("nodata")
    return None if value is None else float(value)


def union_mask(mask_a: np.ndarray | None, mask_b: np.ndarray | None) -> np.ndarray | None:
    """Pixels invalid in either image (each mask ``(H, W)`` on the same grid, or None for none)."""
    if mask_a is None:
        return mask_b
    return mask_a if mask_b is None else mask_a | mask_b


def invalid_mask(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Pixels that cannot be fused: any band equal to ``nodata`` (NaN-aware) or, for floats, not finite.

    Args:
        image: ``(H, W, C)`` in the file's dtype.
        nodata: the declared nodata value, or None.

    Returns:
        Boolean ``(H, W)`` mask, or None when no pixel is invalid.
    """
    hit = None
    if image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        if bad.any():
            hit = bad.any(axis=2)
    if nodata is not None and not math.isnan(nodata) and _representable(nodata, image.dtype):
        equal = (image == np.asarray(nodata, dtype=image.dtype)).any(axis=2)
        hit = equal if hit is None else hit | equal
    if hit is None or not hit.any():
        return None
    return hit


def _representable(value: float, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    if math.isnan(value) or math.isinf(value) or value != round(value):
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def output_nodata(dtype: np.dtype | str, nodata_a: float | None, nodata_b: float | None) -> float | None:
    """The nodata declared on an output in A's ``dtype``: A's nodata; else B's when ``dtype`` can hold it; else NaN
    for a float ``dtype``; else None (an integer A declaring none has no value to spare: its invalid pixels are
    written as 0, see :func:`fill_value`)."""
    dtype = np.dtype(dtype)
    if nodata_a is not None:
        return float(nodata_a)
    if nodata_b is not None and _representable(float(nodata_b), dtype):
        return float(nodata_b)
    return float("nan") if dtype.kind == "f" else None


def fill_value(dtype: np.dtype | str, nodata_a: float | None, nodata_b: float | None) -> float:
    """The value written where a pixel is invalid in A or B: :func:`output_nodata`, or 0 where that is None."""
    value = output_nodata(dtype, nodata_a, nodata_b)
    return 0.0 if value is None else value


@dataclass(frozen=True)
class UnitMapping:
    """How one image's values map to unit float and back (see the module docstring).

    Attributes:
        kind: ``"natural"`` (uint8/uint16 scaled by the dtype maximum), ``"unit"`` (float already in [0, 1]) or
            ``"stretch"`` (robust linear stretch).
        dtype: the image's dtype.
        lo, hi: the robust range of a stretched image (``hi == lo + 1`` for a constant image).
        vmin, vmax: the image's valid minimum and maximum (the output is clipped to them).
    """

    kind: str
    dtype: np.dtype
    lo: float = 0.0
    hi: float = 1.0
    vmin: float = 0.0
    vmax: float = 1.0

    @property
    def scale(self) -> float:
        return self.hi - self.lo

    def to_unit(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """``(H, W, C)`` image → float32 in [0, 1], invalid pixels (``mask``) set to 0."""
        if self.kind == "natural":
            unit = image.astype(np.float32) / np.float32(_NATURAL_MAX[self.dtype])
        elif self.kind == "unit":
            unit = image.astype(np.float32)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                unit = np.clip((image.astype(np.float64) - self.lo) / self.scale, 0.0, 1.0).astype(np.float32)
        if mask is not None:
            unit = np.where(mask[..., None], np.float32(0.0), unit)
        return np.ascontiguousarray(unit, dtype=np.float32)

    def from_unit(self, fused: np.ndarray) -> np.ndarray:
        """Unit-float fused values (any layout) → this image's dtype: scaled, clipped to its valid range."""
        from maugif_core.imaging import from_unit_float

        if self.kind != "stretch":
            return from_unit_float(fused, self.dtype)
        return self._cast(self.lo + fused.astype(np.float64) * self.scale)

    def from_unit_residual(self, fused: np.ndarray, unit_base: np.ndarray, raw_base: np.ndarray) -> np.ndarray:
        """Additive output: the change from ``unit_base`` to ``fused`` (unit float) added to ``raw_base``.

        All three share a layout (e.g. ``(H, W, C)``); ``raw_base`` is the image this mapping was built from.
        Natural and unit images fall back to :meth:`from_unit` (exact there already).
        """
        if self.kind != "stretch":
            return self.from_unit(fused)
        delta = fused.astype(np.float64) - unit_base.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            return self._cast(raw_base.astype(np.float64) + delta * self.scale)

    def _cast(self, values: np.ndarray) -> np.ndarray:
        out = np.clip(np.nan_to_num(values, nan=self.vmin), self.vmin, self.vmax)
        if self.dtype.kind in "iu":
            return np.rint(out).astype(self.dtype)
        return out.astype(self.dtype)


def unit_mapping(image: np.ndarray, mask: np.ndarray | None) -> UnitMapping:
    """The unit mapping of ``image`` ``(H, W, C)``, from its valid pixels (``mask`` marks the invalid ones)."""
    dtype = image.dtype
    if dtype in _NATURAL_MAX:
        return UnitMapping("natural", dtype)
    valid = image if mask is None else image[~mask]
    values = valid.reshape(-1)
    if dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return UnitMapping("unit" if dtype.kind == "f" else "stretch", dtype)
    vmin, vmax = float(values.min()), float(values.max())
    if dtype.kind == "f" and vmin >= 0.0 and vmax <= 1.0:
        return UnitMapping("unit", dtype, vmin=vmin, vmax=vmax)
    step = max(1, math.ceil(values.size / _MAX_SAMPLES))
    lo, hi = np.percentile(values[::step].astype(np.float64), ROBUST_PERCENTILES)
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        lo, hi = (vmin, vmax) if vmax > vmin else (vmin, vmin + 1.0)
    return UnitMapping("stretch", dtype, lo=lo, hi=hi, vmin=vmin, vmax=vmax)
