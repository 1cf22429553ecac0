"""Grid alignment of image pairs: equal grids for additive tasks, nested grids for remote-sensing pairs.

For ``pansharpen`` and ``hsi_msi`` the high-resolution image (B) defines the grid. The low-resolution image
(A)
must nest in it: the same CRS, no rotation, pixel sizes in an integer ratio ``r`` and origins that fall on
each other's pixel corners. Then the low-resolution window of any high-resolution window whose offset is a
multiple of ``r`` is exact integer arithmetic (:meth:`GridPlan.lowres_window`). A pair that does not nest is
either rejected with the reason (:class:`~pipeline.errors.GridError`: different CRS, no overlap, non-integer
ratio, unaligned origins, rotation) or, when ``ReadConfig.reproject`` / ``ReadConfig.resample_offgrid`` allow,
its low-resolution image is warped (rasterio ``WarpedVRT``) onto the aligned grid ``r x`` coarser than B's,
with B's origin and CRS.

Plain (non-georeferenced) pairs nest when B's size is exactly ``r`` times A's in both axes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import GridError

__all__ = ["GridPlan", "check_additive", "plan_grid", "read_lowres"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridPlan:
    """How a low-resolution image maps onto the high-resolution grid.

    Attributes:
        ratio: Integer resolution ratio ``r`` (high-res pixels per low-res pixel along each axis).
        hi_shape: ``(H, W)`` of the high-resolution image.
        lo_shape: ``(h, w)`` of the low-resolution grid (the warped grid when ``resample``).
        lo_offset: ``(row, col)`` of the low-res pixel whose corner is the high-res origin.
        resample: The low-res image must be warped onto the aligned grid first.
        reason: Why it must (None when aligned as is).
        crs: CRS of the grid (B's), or None for plain images.
        lo_transform: Affine ``(a, b, c, d, e, f)`` of the aligned low-res grid, or None for plain images.
    """

    ratio: int
    hi_shape: tuple[int, int]
    lo_shape: tuple[int, int]
    lo_offset: tuple[int, int] = (0, 0)
    resample: bool = False
    reason: str | None = None
    crs: str | None = None
    lo_transform: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as ``meta_a["grid"]``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def lowres_window(self, hi_window: Any) -> tuple[int, int, int, int]:
        """The low-res ``(row_off, col_off, height, width)`` covering a high-res window.

        Args:
            hi_window: ``(row_off, col_off, height, width)`` or an object with those attributes; offsets
                must be multiples of ``ratio`` (tile grids are laid out on the ratio). The size is rounded up,
                so the last low-res row/column may extend past the image edge (read it boundless).

        Raises:
            GridError: an offset is not a multiple of the ratio.
        """
        if all(hasattr(hi_window, a) for a in ("row_off", "col_off", "height", "width")):
            row_off, col_off = int(hi_window.row_off), int(hi_window.col_off)
            height, width = int(hi_window.height), int(hi_window.width)
        else:
            row_off, col_off, height, width = (int(v) for v in hi_window)
        r = self.ratio
        if row_off % r or col_off % r:
            raise GridError(
                f"high-res window offset ({row_off}, {col_off}) is not a multiple of the ratio {r}: "
                "expected tile offsets on the ratio grid"
            )
        return (
            self.lo_offset[0] + row_off // r,
            self.lo_offset[1] + col_off // r,
            -(-height // r),
            -(-width // r),
        )


def _crs(value: str | None) -> Any:
    from rasterio.crs import CRS

    return None if value is None else CRS.from_user_input(value)


def _georeferenced(meta: Mapping[str, Any]) -> bool:
    return meta.get("crs") is not None and meta.get("transform") is not None


def _size(meta: Mapping[str, Any]) -> str:
    return f"{meta['height']}x{meta['width']}"


def _name(meta: Mapping[str, Any], role: str) -> str:
    return f"{role} ({meta['uri']})" if meta.get("uri") else role


def check_additive(meta_a: Mapping[str, Any], meta_b: Mapping[str, Any], *, tolerance: float = 1e-6) -> None:
    """Check that an additive pair (vif, medical, mff, mef, general) shares one pixel grid.

    Raises:
        GridError: sizes differ; both georeferenced with different CRSs; or same CRS but different transforms.
    """
    a, b = _name(meta_a, "A"), _name(meta_b, "B")
    if (meta_a["height"], meta_a["width"]) != (meta_b["height"], meta_b["width"]):
        raise GridError(f"size mismatch: {a} is {_size(meta_a)}, {b} is {_size(meta_b)}; expected equal sizes (H x W)")
    if _georeferenced(meta_a) and _georeferenced(meta_b):
        if _crs(meta_a["crs"]) != _crs(meta_b["crs"]):
            raise GridError(f"CRS mismatch: {a} is {meta_a['crs']}, {b} is {meta_b['crs']}; expected one CRS")
        ta, tb = np.asarray(meta_a["transform"]), np.asarray(meta_b["transform"])
        pixel = max(abs(ta[0]), abs(ta[4]), 1e-12)
        if not np.allclose(ta, tb, rtol=0, atol=tolerance * pixel):
            raise GridError(
                f"grid mismatch: {a} has transform {list(ta)}, {b} has {list(tb)}; expected the same pixel grid"
            )


def _is_integer(value: float, tol: float) -> bool:
    return abs(value - round(value)) <= tol * max(1.0, abs(value))


def _plain_plan(meta_lo: Mapping[str, Any], meta_hi: Mapping[str, Any]) -> GridPlan:
    (h, w), (H, W) = (meta_lo["height"], meta_lo["width"]), (meta_hi["height"], meta_hi["width"])
    if H % h or W % w or H // h != W // w:
        raise GridError(
            f"non-integer ratio: low-res {_name(meta_lo, 'A')} is {h}x{w}, high-res {_name(meta_hi, 'B')} is "
            f"{H}x{W} (ratios {H / h:.4g}, {W / w:.4g}); expected B = r x A for one integer r"
        )
    return GridPlan(ratio=H // h, hi_shape=(H, W), lo_shape=(h, w))


def _overlaps(meta_lo: Mapping[str, Any], meta_hi: Mapping[str, Any]) -> tuple[bool, tuple, tuple]:
    from rasterio.transform import Affine, array_bounds
    from rasterio.warp import transform_bounds

    lo = array_bounds(meta_lo["height"], meta_lo["width"], Affine(*meta_lo["transform"]))
    hi = array_bounds(meta_hi["height"], meta_hi["width"], Affine(*meta_hi["transform"]))
    lo_w, lo_s, lo_e, lo_n = lo[0], lo[1], lo[2], lo[3]
    if _crs(meta_lo["crs"]) != _crs(meta_hi["crs"]):
        lo_w, lo_s, lo_e, lo_n = transform_bounds(_crs(meta_lo["crs"]), _crs(meta_hi["crs"]), *lo)
    west, south, east, north = hi[0], hi[1], hi[2], hi[3]
    inside = min(lo_e, east) > max(lo_w, west) and min(lo_n, north) > max(lo_s, south)
    return inside, (lo_w, lo_s, lo_e, lo_n), hi


def plan_grid(meta_lo: Mapping[str, Any], meta_hi: Mapping[str, Any], *, config: ReadConfig | None = None) -> GridPlan:
    """Plan how the low-res image A nests in the high-res grid of B (pansharpen, hsi_msi).

    Raises:
        GridError: the grids do not nest and ``config`` does not allow warping (reason in the message), or the
            images do not overlap at all.
    """
    config = config or ReadConfig()
    if not (_georeferenced(meta_lo) and _georeferenced(meta_hi)):
        if _georeferenced(meta_lo) != _georeferenced(meta_hi):
            logger.warning(
                "only one of %s / %s is georeferenced: pairing by size",
                meta_lo.get("uri"),
                meta_hi.get("uri"),
            )
        return _plain_plan(meta_lo, meta_hi)
    from rasterio.transform import Affine

    a, b = _name(meta_lo, "A"), _name(meta_hi, "B")
    tol = config.grid_tolerance
    lo_t, hi_t = Affine(*meta_lo["transform"]), Affine(*meta_hi["transform"])
    hi_shape = (int(meta_hi["height"]), int(meta_hi["width"]))
    reason = None
    same_crs = _crs(meta_lo["crs"]) == _crs(meta_hi["crs"])
    if not same_crs and not config.reproject:
        raise GridError(
            f"different CRS: {a} is {meta_lo['crs']}, {b} is {meta_hi['crs']}; set read.reproject=true to "
            "warp A onto B's CRS, or reproject the inputs"
        )
    overlap, lo_bounds, hi_bounds = _overlaps(meta_lo, meta_hi)
    if not overlap:
        raise GridError(
            f"no overlap: {a} covers {tuple(round(v, 3) for v in lo_bounds)}, {b} covers "
            f"{tuple(round(v, 3) for v in hi_bounds)} (in B's CRS); expected overlapping footprints"
        )
    if not same_crs:
        reason = f"CRS {meta_lo['crs']} -> {meta_hi['crs']}"
    elif lo_t.b or lo_t.d or hi_t.b or hi_t.d:
        reason = "rotated grid"
    else:
        rx, ry = lo_t.a / hi_t.a, lo_t.e / hi_t.e
        ox, oy = (hi_t.c - lo_t.c) / lo_t.a, (hi_t.f - lo_t.f) / lo_t.e
        if not (_is_integer(rx, tol) and _is_integer(ry, tol) and round(rx) == round(ry) and round(rx) >= 1):
            reason = (
                f"non-integer ratio: pixel sizes of A ({lo_t.a:g}, {lo_t.e:g}) / "
                f"B ({hi_t.a:g}, {hi_t.e:g}) = "
                f"{rx:.6g}, {ry:.6g}"
            )
        elif not (_is_integer(ox, tol) and _is_integer(oy, tol)):
            reason = f"origins not aligned: B's origin falls at A pixel (row {oy:.4g}, col {ox:.4g})"
        else:
            r = round(rx)
            return GridPlan(
                ratio=r,
                hi_shape=hi_shape,
                lo_shape=(int(meta_lo["height"]), int(meta_lo["width"])),
                lo_offset=(round(oy), round(ox)),
                crs=meta_hi["crs"],
                lo_transform=tuple(float(v) for v in tuple(lo_t)[:6]),
            )
    if same_crs and not config.resample_offgrid:
        raise GridError(
            f"off-grid pair {a} / {b}: {reason}; set read.resample_offgrid=true to warp A onto an "
            "aligned grid, or resample the inputs"
        )
    r = max(1, round(_native_resolution(meta_lo, meta_hi["crs"]) / abs(hi_t.a)))
    aligned = Affine(hi_t.a * r, 0.0, hi_t.c, 0.0, hi_t.e * r, hi_t.f)
    return GridPlan(
        ratio=r,
        hi_shape=hi_shape,
        lo_shape=(math.ceil(hi_shape[0] / r), math.ceil(hi_shape[1] / r)),
        resample=True,
        reason=reason,
        crs=meta_hi["crs"],
        lo_transform=tuple(float(v) for v in tuple(aligned)[:6]),
    )


def _native_resolution(meta_lo: Mapping[str, Any], dst_crs: str) -> float:
    """A's pixel size expressed in the units of ``dst_crs``."""
    from rasterio.transform import Affine, array_bounds
    from rasterio.warp import calculate_default_transform

    t = Affine(*meta_lo["transform"])
    bounds = array_bounds(meta_lo["height"], meta_lo["width"], t)
    west, south, east, north = bounds[0], bounds[1], bounds[2], bounds[3]
    dst, _, _ = calculate_default_transform(
        _crs(meta_lo["crs"]), _crs(dst_crs), meta_lo["width"], meta_lo["height"], west, south, east, north
    )
    return abs(dst.a)


def read_lowres(
    uri: str, plan: GridPlan, *, config: ReadConfig | None = None, storage: StorageConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the low-res image on the plan's aligned grid, covering the whole high-res extent.

    Aligned pairs are read by window (boundless: outside pixels get nodata, else 0); off-grid pairs through a
    ``WarpedVRT`` onto ``plan.lo_transform``. ``meta["grid"]`` records the plan.
    """
    from pipeline.io.readers import open_raster, read_window

    config = config or ReadConfig()
    if not plan.resample:
        window = plan.lowres_window((0, 0, plan.hi_shape[0], plan.hi_shape[1]))
        image, meta = read_window(uri, window, config=config, storage=storage, boundless=True)
        meta.update(height=window[2], width=window[3], transform=meta.pop("window_transform", meta["transform"]))
        meta.pop("window", None)
    else:
        from rasterio.enums import Resampling
        from rasterio.transform import Affine
        from rasterio.vrt import WarpedVRT

        from pipeline.io.readers import _raster_meta, _read_raster

        with open_raster(uri, config=config, storage=storage) as src:
            options = {"nodata": src.nodata} if src.nodata is not None else {}
            with WarpedVRT(
                src,
                crs=src.crs if plan.crs is None else _crs(plan.crs),
                transform=Affine(*plan.lo_transform),
                height=plan.lo_shape[0],
                width=plan.lo_shape[1],
                resampling=Resampling[config.resampling],
                **options,
            ) as vrt:
                image, meta = _read_raster(uri, vrt, "TIFF", config, None)
                meta.update(_raster_meta(uri, vrt, "TIFF", None), driver=src.driver)
        logger.info("%s warped onto the aligned grid (%s)", uri, plan.reason)
    meta["grid"] = plan.to_dict()
    return image, meta
