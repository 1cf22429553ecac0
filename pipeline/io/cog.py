"""Cloud-Optimized GeoTIFF tiles and VRT mosaics, encoded in memory with GDAL (through rasterio).

Each COG tile is produced by GDAL's COG driver from an in-memory dataset, into a ``MemoryFile``, then uploaded
atomically (:mod:`pipeline.io.fsutil`). Encodings are deterministic (GDAL writes no timestamp), so a rewrite is
byte-identical. The VRT mosaic references its tiles by paths relative to the VRT, so the output location can
be moved or read through ``/vsis3/`` unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from pipeline.config.output_config import OutputConfig
from pipeline.errors import RasterWriteError

__all__ = [
    "RasterMeta",
    "TileRef",
    "build_vrt_xml",
    "cast_to_dtype",
    "encode_cog",
    "validate_cog",
]

logger = logging.getLogger(__name__)

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class RasterMeta:
    """Raster metadata as carried in the ``META_A`` / ``META_B`` JSON columns.

    Attributes:
        dtype: numpy dtype name, e.g. ``"uint16"``.
        count: number of bands.
        height: rows of the image.
        width: columns of the image.
        nodata: nodata value or None.
        crs: CRS as WKT / ``"EPSG:n"`` / PROJ string, or None when not georeferenced.
        transform: affine ``(a, b, c, d, e, f)`` (rasterio order), or None.
        descriptions: one description per band (None entries allowed), or None.
        datetime: ISO-8601 acquisition time if the source had one.
        sources: URIs of the source rasters (STAC ``derived_from`` links).
    """

    dtype: str
    count: int
    height: int
    width: int
    nodata: float | None = None
    crs: str | None = None
    transform: tuple[float, ...] | None = None
    descriptions: tuple[str | None, ...] | None = None
    datetime: str | None = None
    sources: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, meta: str | dict[str, Any]) -> RasterMeta:
        """Parse a meta JSON string or dict (``count`` or ``bands`` for the band count)."""
        data = json.loads(meta) if isinstance(meta, (str, bytes)) else dict(meta)
        count = data.get("count", data.get("bands"))
        transform = data.get("transform")
        descriptions = data.get("descriptions")
        nodata = data.get("nodata")
        return cls(
            dtype=str(np.dtype(data["dtype"])),
            count=int(count) if count is not None else 1,
            height=int(data["height"]),
            width=int(data["width"]),
            nodata=None if nodata is None else float(nodata),
            crs=data.get("crs") or None,
            transform=tuple(float(v) for v in transform[:6]) if transform else None,
            descriptions=tuple(descriptions) if descriptions else None,
            datetime=data.get("datetime"),
            sources=tuple(data["sources"]) if data.get("sources") else ((data["uri"],) if data.get("uri") else None),
        )

    @property
    def affine(self) -> Affine:
        """The grid's affine transform (identity when not georeferenced)."""
        return Affine(*self.transform) if self.transform else Affine.identity()

    @property
    def is_georeferenced(self) -> bool:
        return bool(self.crs) or (self.transform is not None and Affine(*self.transform) != Affine.identity())


@dataclass(frozen=True)
class TileRef:
    """A written COG tile as the VRT sees it: relative path and destination window on the mosaic."""

    href: str
    row_off: int
    col_off: int
    height: int
    width: int


def cast_to_dtype(array: np.ndarray, dtype: str | np.dtype, nodata: float | None = None) -> np.ndarray:
    """Cast fused values to an output dtype: round and clip floats into an integer type's range.

    Args:
        array: any numeric array, values in the output's units.
        dtype: target dtype.
        nodata: value for NaNs when casting to an integer type (0 when None).

    Returns:
        The array in ``dtype`` (the input itself when it already has it).
    """
    target = np.dtype(dtype)
    if array.dtype == target:
        return array
    if np.issubdtype(target, np.integer) and np.issubdtype(array.dtype, np.floating):
        info = np.iinfo(target)
        filled = np.nan_to_num(array, nan=0.0 if nodata is None else nodata)
        return np.clip(np.rint(filled), info.min, info.max).astype(target)
    return array.astype(target)


def encode_cog(
    array: np.ndarray,
    *,
    crs: str | None,
    transform: Affine,
    nodata: float | None,
    descriptions: tuple[str | None, ...] | None,
    config: OutputConfig,
) -> bytes:
    """Encode one tile as a Cloud-Optimized GeoTIFF in memory.

    Args:
        array: ``(C, H, W)`` or ``(H, W)`` pixels in the output dtype.
        crs: CRS of the tile (any rasterio user input) or None.
        transform: affine transform of the tile's top-left pixel.
        nodata: nodata value or None.
        descriptions: per-band descriptions or None.
        config: codec, block size and overview settings.

    Returns:
        The COG file's bytes (tiled, compressed, with overviews when larger than one block).

    Raises:
        RasterWriteError: GDAL failed to encode (unsupported dtype, invalid CRS, ...).
    """
    if array.ndim == 2:
        array = array[np.newaxis]
    count, height, width = array.shape
    dtype = str(array.dtype)
    if dtype not in _GDAL_TYPES:
        raise RasterWriteError(f"cannot write dtype {dtype} to a COG; supported: {sorted(_GDAL_TYPES)}")
    options: dict[str, Any] = {
        "COMPRESS": config.cog_compress,
        "BLOCKSIZE": config.cog_blocksize,
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": config.cog_overview_resampling.upper(),
        "RESAMPLING": config.cog_overview_resampling.upper(),
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "1",  # Ray already runs one write task per CPU
    }
    if config.cog_compress != "NONE":
        options["PREDICTOR"] = "YES" if config.cog_predictor else "NO"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile() as staging, MemoryFile() as result:
                with staging.open(
                    driver="GTiff",
                    width=width,
                    height=height,
                    count=count,
                    dtype=dtype,
                    crs=CRS.from_user_input(crs) if crs else None,
                    transform=transform,
                    nodata=nodata,
                ) as dataset:
                    dataset.write(array)
                    if descriptions:
                        for band, text in enumerate(descriptions[:count], start=1):
                            if text:
                                dataset.set_band_description(band, str(text))
                with staging.open() as dataset:
                    rasterio.shutil.copy(dataset, result.name, driver="COG", **options)
                with result.open() as check:
                    check.profile  # noqa: B018 - forces GDAL to confirm the file is readable
                return bytes(result.getbuffer())
    except RasterWriteError:
        raise
    except Exception as e:
        raise RasterWriteError(f"GDAL COG encoding failed for a {count}x{height}x{width} {dtype} tile: {e}") from e


def validate_cog(source: bytes | str) -> list[str]:
    """Check that a file is a valid Cloud-Optimized GeoTIFF; return the problems found (empty when valid).

    Checks: GeoTIFF, tiled, ``LAYOUT=COG`` in the IMAGE_STRUCTURE metadata (written by the COG driver together
    with its ghost header), overviews present when the image is larger than one block, and the data of each
    overview level stored before the next finer level (the COG ordering that lets readers fetch a coarse level
    with one range request).

    Args:
        source: COG bytes, or a path / GDAL URI.
    """
    problems: list[str] = []
    with MemoryFile(source) if isinstance(source, bytes) else _NullContext(source) as handle:
        path = handle.name if isinstance(handle, MemoryFile) else handle
        with rasterio.open(path) as dataset:
            if dataset.driver != "GTiff":
                problems.append(f"driver is {dataset.driver}, not GTiff")
            if not dataset.profile.get("tiled", False):
                problems.append("not tiled")
            if dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
                problems.append("no LAYOUT=COG in the IMAGE_STRUCTURE metadata (not written by the COG driver)")
            block_h, block_w = dataset.block_shapes[0]
            factors = dataset.overviews(1)
            if max(dataset.height, dataset.width) > max(block_h, block_w) and not factors:
                problems.append(f"no overviews on a {dataset.height}x{dataset.width} image with {block_h} blocks")
        # Offsets of the first block of every level, coarsest first, must increase.
        offsets = []
        for level in range(len(factors) - 1, -2, -1):
            kwargs = {} if level < 0 else {"overview_level": level}
            with rasterio.open(path, **kwargs) as dataset:
                item = dataset.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1)
                offsets.append(int(item) if item else -1)
        if any(b <= a for a, b in zip(offsets[:-1], offsets[1:], strict=True)):
            problems.append(f"image data not ordered coarsest overview first: first-block offsets {offsets}")
    return problems


class _NullContext:
    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def build_vrt_xml(
    meta: RasterMeta,
    dtype: str,
    tiles: list[TileRef],
    band_count: int,
    *,
    overviews: list[int] | tuple[int, ...] = (),
    relative: bool = True,
    overview_resampling: str = "average",
) -> str:
    """A VRT mosaic of non-overlapping tiles.

    Args:
        meta: the output grid and band metadata (height, width, crs, transform, nodata, descriptions).
        dtype: output dtype name.
        tiles: the tiles, with ``href`` relative to the VRT file (or absolute GDAL paths when ``relative`` is
            False); listed in the order given.
        band_count: number of bands of every tile.
        overviews: implicit overview factors (GDAL ``OverviewList``): a reader asking for a coarse level gets it
            from the tiles' internal overviews instead of every full-resolution pixel.
        relative: hrefs are relative to the VRT.
        overview_resampling: resampling of the implicit overviews.

    Returns:
        The VRT XML document (deterministic for equal inputs).

    Why not ``gdalbuildvrt`` / ``gdal.BuildVRT``: rasterio's wheels ship no ``osgeo`` bindings, and BuildVRT opens
    every source to learn its geometry (one ranged GET per tile on ``s3://``, thousands per scene) although the sink
    already knows each tile's window exactly; the VRT format is a small documented XML schema, so it is written
    here from that geometry, with every text value escaped (``xml.sax.saxutils.escape``) and read back by GDAL in
    the tests.
    """
    gdal_type = _GDAL_TYPES[str(np.dtype(dtype))]
    lines = [f'<VRTDataset rasterXSize="{meta.width}" rasterYSize="{meta.height}">']
    if meta.crs:
        wkt = CRS.from_user_input(meta.crs).to_wkt()
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(wkt)}</SRS>')
    if meta.transform:
        a, b, c, d, e, f = meta.transform
        lines.append("  <GeoTransform>" + ", ".join(repr(float(v)) for v in (c, a, b, f, d, e)) + "</GeoTransform>")
    for band in range(1, band_count + 1):
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{band}">')
        if meta.nodata is not None:
            lines.append(f"    <NoDataValue>{_format_number(meta.nodata)}</NoDataValue>")
        if meta.descriptions and band <= len(meta.descriptions) and meta.descriptions[band - 1]:
            lines.append(f"    <Description>{escape(str(meta.descriptions[band - 1]))}</Description>")
        for tile in tiles:
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="{int(relative)}">{escape(tile.href)}</SourceFilename>',
                f"      <SourceBand>{band}</SourceBand>",
                f"      <SourceProperties RasterXSize={quoteattr(str(tile.width))} "
                f'RasterYSize="{tile.height}" DataType="{gdal_type}"/>',
                f'      <SrcRect xOff="0" yOff="0" xSize="{tile.width}" ySize="{tile.height}"/>',
                f'      <DstRect xOff="{tile.col_off}" yOff="{tile.row_off}" '
                f'xSize="{tile.width}" ySize="{tile.height}"/>',
                "    </SimpleSource>",
            ]
        lines.append("  </VRTRasterBand>")
    if overviews:
        factors = " ".join(str(int(f)) for f in overviews)
        lines.append(f'  <OverviewList resampling="{escape(overview_resampling)}">{factors}</OverviewList>')
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"
