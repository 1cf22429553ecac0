"""Writing fused results without Ray: PNG, COG tiles, VRT mosaic, STAC item, extras (used by the sinks).

Output layout under ``<output>`` (every key checked to stay under the prefix, see
:func:`pipeline.io.fsutil.join_key`):

- plain images: ``<pair_id>.png`` (8- or 16-bit, grey / RGB / RGBA, the dtype of the fused array);
- rasters: COG tiles ``<pair_id>/<row>_<col>.tif`` (zero-based tile indices), the STAC item
  ``<pair_id>/item.json`` and the VRT mosaic ``<pair_id>.vrt``, written in that order: the VRT is the commit
  point of a raster, so a raster whose VRT exists is complete;
- detail maps / quicklooks: ``_extras/<column>/<pair_id>.png|.tif``;
- the manifest: ``_manifest/`` (see :mod:`pipeline.io.manifest`).

Arrays are channel-first, ``(C, H, W)`` or ``(H, W)``. A fused array is in the output's units: integer arrays
are written as they are; float arrays are rounded and clipped into the dtype of image A (see
:func:`pipeline.io.cog.cast_to_dtype`). Bands, dtype, nodata (A's; else B's when A's dtype holds it; else NaN for a
float A: :func:`pipeline.io.radiometry.output_nodata`) and band descriptions come from image A; the grid (CRS,
transform, size) from the grid-defining image: A for additive tasks, the high-resolution B for ``pansharpen`` and
``hsi_msi``.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import fsspec
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from pipeline.config.output_config import OutputConfig
from pipeline.errors import OutputKeyError, RasterWriteError
from pipeline.io.cog import RasterMeta, TileRef, build_vrt_xml, cast_to_dtype, encode_cog
from pipeline.io.fsutil import atomic_write_bytes, filesystem_for, join_key, strip_protocol
from pipeline.io.marks import add_png_mark, add_vrt_mark, make_mark
from pipeline.io.radiometry import output_nodata
from pipeline.io.scene_cog import overview_factors, write_scene_cog
from pipeline.io.stac import build_stac_item, dumps_item
from pipeline.io.tiling import plan_tiles
from pipeline.schema import EXTRAS_DIR, MANIFEST_DIR, SUMMARY_FILE

__all__ = [
    "GRID_FROM_B_TASKS",
    "choose_format",
    "commit_raster",
    "encode_png",
    "extras_uri",
    "output_meta",
    "png_uri",
    "stac_uri",
    "tile_uri",
    "vrt_uri",
    "write_cog_tile",
    "write_extra",
    "write_png",
    "write_raster",
    "write_stac_item",
    "write_vrt",
]

logger = logging.getLogger(__name__)

# Tasks whose grid is defined by image B (mirrors maugif_core.config.MULTIPLICATIVE_TASKS; a test checks it).
GRID_FROM_B_TASKS = ("hsi_msi", "pansharpen")
_RESERVED = {MANIFEST_DIR, EXTRAS_DIR, SUMMARY_FILE}
STAC_ITEM_NAME = "item.json"


# ------------------------------------------------------------------------------------------------ output keys
def _check_pair_id(pair_id: str) -> str:
    if not isinstance(pair_id, str) or not pair_id or "/" in pair_id or pair_id.startswith("."):
        raise OutputKeyError(
            f"pair_id {pair_id!r} cannot name an output: it must be non-empty, without '/' or a lead '.'"
        )
    if pair_id in _RESERVED or pair_id.startswith("_"):
        raise OutputKeyError(f"pair_id {pair_id!r} collides with the reserved '_' names of an output location")
    return pair_id


def png_uri(output: str, pair_id: str) -> str:
    """``<output>/<pair_id>.png``."""
    return join_key(output, _check_pair_id(pair_id) + ".png")


def tile_uri(output: str, pair_id: str, row: int, col: int) -> str:
    """``<output>/<pair_id>/<row>_<col>.tif`` (zero-based tile indices)."""
    return join_key(output, _check_pair_id(pair_id), f"{int(row)}_{int(col)}.tif")


def vrt_uri(output: str, pair_id: str) -> str:
    """``<output>/<pair_id>.vrt``."""
    return join_key(output, _check_pair_id(pair_id) + ".vrt")


def stac_uri(output: str, pair_id: str) -> str:
    """``<output>/<pair_id>/item.json``."""
    return join_key(output, _check_pair_id(pair_id), STAC_ITEM_NAME)


def extras_uri(output: str, pair_id: str, name: str, ext: str) -> str:
    """``<output>/_extras/<name>/<pair_id>.<ext>``."""
    return join_key(output, EXTRAS_DIR, name, f"{_check_pair_id(pair_id)}.{ext}")


# --------------------------------------------------------------------------------------------------- metadata
def output_meta(meta_a: RasterMeta, meta_b: RasterMeta | None, task: str | None) -> RasterMeta:
    """Metadata of the fused output: bands from A, grid from the grid-defining image."""
    grid = meta_b if (task in GRID_FROM_B_TASKS and meta_b is not None) else meta_a
    return RasterMeta(
        dtype=meta_a.dtype,
        count=meta_a.count,
        height=grid.height,
        width=grid.width,
        # Pixels invalid in either input (nodata, NaN, Inf) carry this value (pipeline.io.radiometry.output_nodata)
        nodata=output_nodata(meta_a.dtype, meta_a.nodata, meta_b.nodata if meta_b is not None else None),
        crs=grid.crs,
        transform=grid.transform,
        descriptions=meta_a.descriptions,
        datetime=meta_a.datetime or grid.datetime,
        sources=tuple(dict.fromkeys([*(meta_a.sources or ()), *((meta_b.sources or ()) if meta_b else ())])) or None,
    )


def choose_format(meta: RasterMeta, config: OutputConfig) -> str:
    """``"png"`` or ``"cog"`` for an output (see ``OutputConfig.format``)."""
    if config.format != "auto":
        return config.format
    png_ok = meta.dtype in ("uint8", "uint16") and meta.count in (1, 2, 3, 4) and not meta.is_georeferenced
    return "png" if png_ok else "cog"


# ------------------------------------------------------------------------------------------------------- PNG
# (dtype, bands) → Pillow mode for the fast path; 16-bit colour goes through GDAL (Pillow cannot write it).
_PIL_MODES = {("u1", 1): "L", ("u1", 2): "LA", ("u1", 3): "RGB", ("u1", 4): "RGBA", ("u2", 1): "I;16"}


def encode_png(array: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode ``(H, W)`` or ``(C, H, W)`` (C in 1..4), uint8 or uint16, as PNG (Pillow; GDAL for 16-bit colour).

    Raises:
        RasterWriteError: unsupported dtype / band count, or an encoding failure.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3 or array.shape[0] not in (1, 2, 3, 4) or array.dtype not in (np.uint8, np.uint16):
        raise RasterWriteError(
            f"PNG needs (C, H, W) with C in 1..4 and uint8/uint16; got shape {array.shape}, dtype {array.dtype}"
        )
    count, height, width = array.shape
    pil_mode = _PIL_MODES.get((array.dtype.str[1:], count))
    if pil_mode is not None:  # Pillow's encoder: same zlib stream, without GDAL's two in-memory datasets
        from PIL import Image

        try:
            plane = array[0] if count == 1 else np.moveaxis(array, 0, -1)
            buffer = io.BytesIO()
            image = Image.fromarray(np.ascontiguousarray(plane, dtype=array.dtype.newbyteorder("<")))
            if image.mode != pil_mode:
                raise RasterWriteError(f"Pillow chose mode {image.mode}, expected {pil_mode}")
            image.save(buffer, format="PNG", compress_level=compress_level)
            return buffer.getvalue()
        except Exception as e:
            raise RasterWriteError(f"PNG encoding of a {array.shape} {array.dtype} image failed: {e}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile() as staging, MemoryFile() as result:
                with staging.open(
                    driver="GTiff", width=width, height=height, count=count, dtype=str(array.dtype)
                ) as dataset:
                    dataset.write(array)
                with staging.open() as dataset:
                    rasterio.shutil.copy(dataset, result.name, driver="PNG", ZLEVEL=compress_level, WORLDFILE="NO")
                return bytes(result.getbuffer())
    except Exception as e:
        raise RasterWriteError(f"PNG encoding of a {array.shape} {array.dtype} image failed: {e}") from e


def write_png(
    array: np.ndarray,
    uri: str,
    *,
    compress_level: int = 6,
    fs: fsspec.AbstractFileSystem | None = None,
    mark: str | None = None,
) -> int:
    """Encode and write a PNG atomically; return the bytes written. See :func:`encode_png` for the inputs.

    ``mark``: this tool's mark (:func:`pipeline.io.marks.make_mark`), stored in a ``tEXt`` chunk.
    """
    data = encode_png(array, compress_level=compress_level)
    return atomic_write_bytes(uri, add_png_mark(data, mark) if mark else data, fs)


# ------------------------------------------------------------------------------------------- COG / VRT / STAC
def write_cog_tile(
    array: np.ndarray,
    uri: str,
    *,
    meta: RasterMeta,
    row_off: int = 0,
    col_off: int = 0,
    config: OutputConfig | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
) -> int:
    """Write one COG tile atomically; return the bytes written.

    Args:
        array: ``(C, h, w)`` tile pixels in the output dtype.
        uri: final key of the tile.
        meta: the output grid and band metadata (CRS, transform of the whole grid, nodata, descriptions).
        row_off: row of the tile's top-left pixel on the grid.
        col_off: column of the tile's top-left pixel on the grid.
        config: codec settings (defaults when None).
        fs: filesystem (built from ``uri`` when None).
    """
    data = encode_cog(
        array,
        crs=meta.crs,
        transform=meta.affine @ Affine.translation(col_off, row_off),
        nodata=meta.nodata,
        descriptions=meta.descriptions,
        config=config or OutputConfig(),
    )
    return atomic_write_bytes(uri, data, fs)


def write_vrt(
    uri: str,
    meta: RasterMeta,
    tiles: list[TileRef],
    *,
    dtype: str | None = None,
    band_count: int | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    mark: str | None = None,
    overviews: list[int] | tuple[int, ...] = (),
) -> int:
    """Write the VRT mosaic of ``tiles`` (hrefs relative to ``uri``) atomically; return the bytes written.

    ``mark``: this tool's mark (:func:`pipeline.io.marks.make_mark`), stored in the dataset metadata.
    ``overviews``: implicit overview factors, served from the tiles' internal overviews.
    """
    xml = build_vrt_xml(meta, dtype or meta.dtype, tiles, band_count or meta.count, overviews=overviews)
    if mark:
        xml = add_vrt_mark(xml, mark)
    return atomic_write_bytes(uri, xml.encode("utf-8"), fs)


def write_stac_item(uri: str, item: dict[str, Any], *, fs: fsspec.AbstractFileSystem | None = None) -> int:
    """Write a STAC item as deterministic JSON atomically; return the bytes written."""
    return atomic_write_bytes(uri, dumps_item(item), fs)


def commit_raster(
    output: str,
    pair_id: str,
    meta: RasterMeta,
    tiles: list[tuple[int, int, TileRef]],
    *,
    dtype: str,
    band_count: int,
    config: OutputConfig,
    fs: fsspec.AbstractFileSystem,
    properties: dict[str, Any] | None = None,
) -> tuple[str, int]:
    """Write a raster's scene COG (``layout="scene"``), STAC item and then its VRT (the commit point), given its
    written tiles.

    Args:
        tiles: ``(row, col, ref)`` per tile with ``ref.href`` relative to the *tile folder* (``"0_1.tif"``).
        properties: extra STAC item properties (what a per-scene fit estimated).

    Returns:
        ``(output_uri, bytes_written)``; the output URI is the VRT (or the tile folder when VRTs are off).
    """
    written = 0
    tiles = sorted(tiles, key=lambda t: (t[0], t[1]))
    folder = join_key(output, _check_pair_id(pair_id))
    scene_uri = None
    if config.layout == "scene":  # before the VRT (the commit point), so a committed raster has its scene COG
        scene_uri, size = write_scene_cog(
            output,
            pair_id,
            meta,
            [ref for _, _, ref in tiles],
            dtype=dtype,
            band_count=band_count,
            config=config,
            fs=fs,
        )
        written += size
    if config.write_stac:
        vrt_href = f"../{pair_id}.vrt" if config.write_vrt else None
        item = build_stac_item(
            pair_id,
            meta,
            dtype=dtype,
            band_count=band_count,
            tiles=tiles,
            vrt_href=vrt_href,
            datetime=config.stac_datetime,
            scene_href=f"../{pair_id}.tif" if scene_uri else None,
            properties=properties,
        )
        written += write_stac_item(stac_uri(output, pair_id), item, fs=fs)
    if not config.write_vrt:
        return scene_uri or folder, written
    refs = [TileRef(f"{pair_id}/{ref.href}", ref.row_off, ref.col_off, ref.height, ref.width) for _, _, ref in tiles]
    uri = vrt_uri(output, pair_id)
    factors = overview_factors(meta.height, meta.width, config.cog_blocksize)
    written += write_vrt(
        uri, meta, refs, dtype=dtype, band_count=band_count, fs=fs, mark=make_mark(pair_id), overviews=factors
    )
    return scene_uri or uri, written


def _remove_partial(fs: fsspec.AbstractFileSystem, output: str, pair_id: str, uris: list[str]) -> None:
    """After a failed raster write, remove this attempt's tiles unless a complete earlier output exists."""
    if fs.exists(strip_protocol(vrt_uri(output, pair_id))):
        return  # a committed earlier output: its tiles are byte-identical to ours, keep them
    for uri in uris:
        try:
            fs.rm_file(strip_protocol(uri))
        except FileNotFoundError:
            pass
        except Exception:
            logger.warning("could not remove partial tile %s", uri, exc_info=True)


def write_raster(
    fused: np.ndarray,
    output: str,
    pair_id: str,
    meta: RasterMeta,
    *,
    config: OutputConfig,
    fs: fsspec.AbstractFileSystem | None = None,
) -> tuple[str, int]:
    """Write a whole fused raster as COG tiles of ``config.cog_tile_size``, its STAC item and its VRT.

    Args:
        fused: ``(C, H, W)`` fused raster on the grid of ``meta``.
        output: output location.
        pair_id: the pair (names the tile folder, VRT and item).
        meta: output metadata (see :func:`output_meta`).
        config: output settings.
        fs: filesystem for ``output`` (built when None).

    Returns:
        ``(output_uri, bytes_written)``.

    Raises:
        RasterWriteError: a size mismatch with the grid or a failed write; tiles written by this attempt are
            removed unless an earlier complete output of the same pair exists.
    """
    if fs is None:
        fs, _ = filesystem_for(output)
    if fused.ndim == 2:
        fused = fused[np.newaxis]
    if fused.shape[-2:] != (meta.height, meta.width):
        raise RasterWriteError(
            f"fused raster of pair {pair_id!r} is {fused.shape[-2:]}; its grid is {(meta.height, meta.width)}"
        )
    dtype = str(fused.dtype) if np.issubdtype(fused.dtype, np.integer) else meta.dtype
    written_uris: list[str] = []
    tiles: list[tuple[int, int, TileRef]] = []
    total = 0
    try:
        for spec in plan_tiles(meta.height, meta.width, config.cog_tile_size, 0):
            core = spec.core
            block = fused[:, core.row_off : core.row_end, core.col_off : core.col_end]
            uri = tile_uri(output, pair_id, spec.row, spec.col)
            total += write_cog_tile(
                cast_to_dtype(block, dtype, meta.nodata),
                uri,
                meta=meta,
                row_off=core.row_off,
                col_off=core.col_off,
                config=config,
                fs=fs,
            )
            written_uris.append(uri)
            tiles.append(
                (
                    spec.row,
                    spec.col,
                    TileRef(f"{spec.row}_{spec.col}.tif", core.row_off, core.col_off, core.height, core.width),
                )
            )
        uri, extra = commit_raster(
            output, pair_id, meta, tiles, dtype=dtype, band_count=fused.shape[0], config=config, fs=fs
        )
    except Exception as e:
        _remove_partial(fs, output, pair_id, written_uris)
        if isinstance(e, (RasterWriteError, OutputKeyError)):
            raise
        raise RasterWriteError(f"writing raster {pair_id!r} under {output!r} failed: {e}") from e
    return uri, total + extra


def write_extra(
    array: np.ndarray,
    output: str,
    pair_id: str,
    name: str,
    *,
    config: OutputConfig,
    meta: RasterMeta | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
) -> tuple[str, int]:
    """Write a detail map / quicklook under ``_extras/<name>/``: PNG for 8/16-bit, else a single COG.

    Returns:
        ``(uri, bytes_written)``.
    """
    array = np.asarray(array)
    if array.dtype in (np.uint8, np.uint16) and (array.ndim == 2 or array.shape[0] in (1, 2, 3, 4)):
        uri = extras_uri(output, pair_id, name, "png")
        return uri, write_png(array, uri, compress_level=config.png_compress_level, fs=fs)
    uri = extras_uri(output, pair_id, name, "tif")
    grid = meta or RasterMeta(dtype=str(array.dtype), count=1, height=array.shape[-2], width=array.shape[-1])
    plain = RasterMeta(
        dtype=str(array.dtype),
        count=1,
        height=grid.height,
        width=grid.width,
        crs=grid.crs,
        transform=grid.transform,
    )
    return uri, write_cog_tile(array, uri, meta=plain, config=config, fs=fs)
