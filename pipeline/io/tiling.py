"""Seam-free tiled fusion: a tile grid with halos, clamped edge tiles, stitching by cropping, nodata masks.

Geometry (all windows in pixels of the output grid, which is the high-resolution grid for ``pansharpen`` and
``hsi_msi``, and the grid of image A otherwise):

- **Cores** partition the image: rows ``[0, t), [t, 2t), ...`` with the last one ending at the image edge,
  so no row or column is ever skipped (a last core may be narrower than ``t``).
- **Read windows** all have the same size ``min(H, t + 2h) x min(W, t + 2h)`` (so tiles batch together) and
  are clamped inside the image. Every core pixel therefore has at least ``h`` pixels of real context on each
  side, or the read window ends exactly where the image ends, where a "same"-padded convolution sees the same
  zero padding as on the whole image. Hence, for a model whose receptive-field radius is at most ``h`` and
  which uses no per-tile statistics, tiled output equals whole-image output up to float rounding. The halo a
  tile actually has on each side is recorded in its :class:`TileSpec` (``halo_top`` etc.).
- **Ratio r** (multiplicative tasks): tile size, halo, image size and hence every window are multiples of
  ``r``, so the low-resolution window of a tile is exactly its high-resolution window divided by ``r``
  (aligned origins).

Nodata: a pixel is nodata in the output when it is nodata in image A or in image B (any band); those pixels
are filled with a neutral value before fusion and set to the output nodata value afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError, GridError

__all__ = [
    "TileSpec",
    "Window",
    "apply_nodata",
    "crop_tile",
    "extract_tile",
    "fill_nodata",
    "fuse_tiled",
    "nodata_mask",
    "plan_tiles",
    "stitch_tiles",
]


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: rows ``[row_off, row_off + height)``, columns ``[col_off, col_off + width)``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    def scaled(self, factor: int) -> Window:
        """This window on a grid ``factor`` times coarser (exact: every field must be a multiple of
        ``factor``)."""
        if any(v % factor for v in (self.row_off, self.col_off, self.height, self.width)):
            raise GridError(f"window {self} is not aligned to the resolution ratio {factor}")
        return Window(self.row_off // factor, self.col_off // factor, self.height // factor, self.width // factor)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (the ``WINDOW`` column of tile rows)."""
        return {"row_off": self.row_off, "col_off": self.col_off, "height": self.height, "width": self.width}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Window:
        return cls(int(data["row_off"]), int(data["col_off"]), int(data["height"]), int(data["width"]))


@dataclass(frozen=True)
class TileSpec:
    """One tile of a grid: its indices, the core it owns and the (haloed, clamped) window it is computed on.

    Attributes:
        row: zero-based tile row index.
        col: zero-based tile column index.
        core: the output pixels this tile owns (cores partition the image).
        read: the window read and fused, core plus the halo available inside the image.
    """

    row: int
    col: int
    core: Window
    read: Window

    @property
    def crop_top(self) -> int:
        """Row offset of the core inside the read window (= halo actually present above the core)."""
        return self.core.row_off - self.read.row_off

    @property
    def crop_left(self) -> int:
        """Column offset of the core inside the read window (= halo actually present left of the core)."""
        return self.core.col_off - self.read.col_off

    @property
    def halo_top(self) -> int:
        return self.crop_top

    @property
    def halo_left(self) -> int:
        return self.crop_left

    @property
    def halo_bottom(self) -> int:
        return self.read.row_end - self.core.row_end

    @property
    def halo_right(self) -> int:
        return self.read.col_end - self.core.col_end


def _axis_plan(size: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Cores and read windows along one axis: ``(core_start, core_end, read_start, read_end)``."""
    read_len = min(size, tile + 2 * halo)
    plan = []
    for core_start in range(0, size, tile):
        core_end = min(core_start + tile, size)
        read_start = min(max(core_start - halo, 0), size - read_len)
        plan.append((core_start, core_end, read_start, read_start + read_len))
    return plan


def plan_tiles(height: int, width: int, tile_size: int, halo: int, ratio: int = 1) -> list[TileSpec]:
    """Plan the tile grid of an ``height x width`` output grid.

    Args:
        height: output-grid rows ``H`` (a multiple of ``ratio``).
        width: output-grid columns ``W`` (a multiple of ``ratio``).
        tile_size: core size ``t`` in pixels (a multiple of ``ratio``).
        halo: context ``h`` on every side, at least the model's receptive-field radius; rounded up to a
            multiple of ``ratio``.
        ratio: integer resolution ratio between the output grid and the low-resolution input (1 when equal).

    Returns:
        Tiles in row-major order; ``ceil(H / t) * ceil(W / t)`` of them.

    Raises:
        ConfigError: a non-positive size, negative halo, or a tile size that is not a multiple of ``ratio``.
        GridError: an image size that is not a multiple of ``ratio``.
    """
    if height <= 0 or width <= 0 or tile_size <= 0 or halo < 0 or ratio <= 0:
        raise ConfigError(
            f"plan_tiles needs positive height, width, tile_size and ratio and halo >= 0; got "
            f"height={height}, width={width}, tile_size={tile_size}, halo={halo}, ratio={ratio}"
        )
    if tile_size % ratio:
        raise ConfigError(f"tile_size={tile_size} must be a multiple of the resolution ratio {ratio}")
    if height % ratio or width % ratio:
        raise GridError(f"a {height}x{width} high-resolution grid is not a whole multiple of the ratio {ratio}")
    halo = math.ceil(halo / ratio) * ratio
    rows = _axis_plan(height, tile_size, halo)
    cols = _axis_plan(width, tile_size, halo)
    return [
        TileSpec(
            row=i,
            col=j,
            core=Window(r0, c0, r1 - r0, c1 - c0),
            read=Window(rr0, rc0, rr1 - rr0, rc1 - rc0),
        )
        for i, (r0, r1, rr0, rr1) in enumerate(rows)
        for j, (c0, c1, rc0, rc1) in enumerate(cols)
    ]


def extract_tile(image: np.ndarray, spec: TileSpec, *, downscale: int = 1) -> np.ndarray:
    """The read window of ``spec`` cut from ``image``.

    Args:
        image: ``(..., H, W)`` array on the output grid, or ``(..., H / r, W / r)`` when ``downscale = r``.
        spec: the tile.
        downscale: ``r`` to cut the matching window of a low-resolution image.

    Returns:
        A view of shape ``(..., read.height / r, read.width / r)``.
    """
    window = spec.read.scaled(downscale) if downscale != 1 else spec.read
    return image[..., window.row_off : window.row_end, window.col_off : window.col_end]


def crop_tile(tile: np.ndarray, spec: TileSpec) -> np.ndarray:
    """Crop a fused tile ``(..., read.height, read.width)`` back to its core ``(..., core.height,
    core.width)``."""
    if tile.shape[-2:] != (spec.read.height, spec.read.width):
        raise GridError(
            f"fused tile ({spec.row}, {spec.col}) has shape {tile.shape[-2:]}; expected its read window "
            f"{(spec.read.height, spec.read.width)}"
        )
    return tile[
        ...,
        spec.crop_top : spec.crop_top + spec.core.height,
        spec.crop_left : spec.crop_left + spec.core.width,
    ]


def stitch_tiles(tiles: Iterable[tuple[TileSpec, np.ndarray]], height: int, width: int) -> np.ndarray:
    """Assemble fused tiles into the full image by cropping every tile to its core.

    Args:
        tiles: ``(spec, fused_tile)`` pairs; each tile ``(..., read.height, read.width)``; leading dims and
            dtype from the first tile.
        height: output rows ``H``.
        width: output columns ``W``.

    Returns:
        ``(..., H, W)`` array.

    Raises:
        GridError: no tiles, a tile of the wrong shape, or cores that do not cover the image exactly once.
    """
    out: np.ndarray | None = None
    covered = 0
    for spec, tile in tiles:
        core = crop_tile(tile, spec)
        if out is None:
            out = np.empty((*tile.shape[:-2], height, width), dtype=tile.dtype)
        out[..., spec.core.row_off : spec.core.row_end, spec.core.col_off : spec.core.col_end] = core
        covered += spec.core.height * spec.core.width
    if out is None:
        raise GridError("stitch_tiles got no tiles")
    if covered != height * width:
        raise GridError(f"tile cores cover {covered} pixels; the {height}x{width} image has {height * width}")
    return out


def nodata_mask(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Pixels where any band equals ``nodata`` (NaN-aware).

    Args:
        image: ``(H, W)`` or ``(C, H, W)``.
        nodata: the nodata value, or None for none.

    Returns:
        Boolean ``(H, W)`` mask, or None when ``nodata`` is None.
    """
    if nodata is None:
        return None
    hit = np.isnan(image) if np.isnan(nodata) else image == np.asarray(nodata).astype(image.dtype)
    return hit if hit.ndim == 2 else hit.any(axis=tuple(range(hit.ndim - 2)))


def fill_nodata(image: np.ndarray, mask: np.ndarray | None, value: float) -> np.ndarray:
    """A copy of ``image`` ``(..., H, W)`` with masked pixels set to ``value`` (unchanged when ``mask`` is
    None)."""
    if mask is None or not mask.any():
        return image
    out = image.copy()
    out[..., mask] = value
    return out


def apply_nodata(fused: np.ndarray, mask: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """Set ``fused[..., mask] = nodata`` in place and return ``fused`` (no-op when either is None)."""
    if mask is not None and nodata is not None:
        fused[..., mask] = nodata
    return fused


FuseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def fuse_tiled(
    fuse_fn: FuseFn,
    image_a: np.ndarray,
    image_b: np.ndarray,
    tile_size: int,
    halo: int,
    ratio: int = 1,
    *,
    nodata_a: float | None = None,
    nodata_b: float | None = None,
    nodata_out: float | None = None,
    fill_value: float = 0.0,
) -> np.ndarray:
    """Fuse two images tile by tile and stitch the result (reference implementation of the tiled path).

    ``fuse_fn`` must be local: its output at a pixel may depend only on inputs within ``halo`` of it.
    Per-image state (BatchNorm statistics, the spectral basis of a scene) must be computed once on the whole
    image and captured by ``fuse_fn``, never recomputed per tile.

    Args:
        fuse_fn: ``(tile_a, tile_b) -> fused_tile``; ``tile_b`` and ``fused_tile`` are ``(..., h, w)`` on the
            output grid, ``tile_a`` is ``(..., h / r, w / r)``.
        image_a: ``(H / r, W / r)`` or ``(C_a, H / r, W / r)``: the base / low-resolution spectral image.
        image_b: ``(H, W)`` or ``(C_b, H, W)``: the injected / high-resolution image defining the output grid.
        tile_size: core tile size on the output grid.
        halo: at least the receptive-field radius of ``fuse_fn``, on the output grid.
        ratio: resolution ratio ``r`` of B over A (1 for additive tasks).
        nodata_a: nodata value of A, or None.
        nodata_b: nodata value of B, or None.
        nodata_out: value written where either input is nodata; defaults to ``nodata_a``, then ``nodata_b``.
        fill_value: neutral value put into nodata pixels before fusion, so they cannot leak into valid ones.

    Returns:
        ``(..., H, W)`` fused image, with ``nodata_out`` wherever A or B is nodata.

    Raises:
        GridError: image sizes that do not match through ``ratio``.
    """
    height, width = image_b.shape[-2:]
    if image_a.shape[-2:] != (height // ratio, width // ratio) or height % ratio or width % ratio:
        raise GridError(
            f"image_a {image_a.shape[-2:]} is not image_b {image_b.shape[-2:]} divided by the ratio {ratio}"
        )
    mask_a = nodata_mask(image_a, nodata_a)
    mask_b = nodata_mask(image_b, nodata_b)
    image_a = fill_nodata(image_a, mask_a, fill_value)
    image_b = fill_nodata(image_b, mask_b, fill_value)
    mask = None
    if mask_a is not None:
        mask = np.repeat(np.repeat(mask_a, ratio, axis=0), ratio, axis=1) if ratio > 1 else mask_a
    if mask_b is not None:
        mask = mask_b if mask is None else (mask | mask_b)
    specs = plan_tiles(height, width, tile_size, halo, ratio)
    fused = stitch_tiles(
        ((spec, fuse_fn(extract_tile(image_a, spec, downscale=ratio), extract_tile(image_b, spec))) for spec in specs),
        height,
        width,
    )
    out_nodata = nodata_out if nodata_out is not None else (nodata_a if nodata_a is not None else nodata_b)
    return apply_nodata(fused, mask, out_nodata)
