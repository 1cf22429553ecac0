"""STAC items for fused rasters (STAC 1.1 with the projection extension v2).

One item per raster, stored at ``<output>/<pair_id>/item.json`` next to its COG tiles (the top level of an
output location holds only fused images, VRTs, tile folders, ``_manifest/`` and ``_summary.json``). Asset
hrefs are relative to the item, so a copied or moved output location stays valid.

Items are deterministic: no write time is recorded. ``datetime`` is the acquisition time from the input
metadata, else the configured one; when neither is known it is ``null`` with an open
``start_datetime``/``end_datetime`` interval, which STAC allows and which keeps rewrites byte-identical.
"""

from __future__ import annotations

import json
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom

from pipeline.io.cog import RasterMeta, TileRef

__all__ = ["COG_MEDIA_TYPE", "STAC_EXTENSIONS", "build_stac_item", "dumps_item"]

STAC_VERSION = "1.1.0"
STAC_EXTENSIONS = ["https://stac-extensions.github.io/projection/v2.0.0/schema.json"]
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
VRT_MEDIA_TYPE = "application/xml"
_OPEN_START = "0001-01-01T00:00:00Z"
_OPEN_END = "9999-12-31T23:59:59Z"
_DIGITS = 9


def _bounds(meta: RasterMeta) -> tuple[float, float, float, float]:
    a = meta.affine
    xs = [a.c, a.c + a.a * meta.width + a.b * meta.height, a.c + a.a * meta.width, a.c + a.b * meta.height]
    ys = [a.f, a.f + a.d * meta.width + a.e * meta.height, a.f + a.d * meta.width, a.f + a.e * meta.height]
    return min(xs), min(ys), max(xs), max(ys)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, _DIGITS)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def build_stac_item(
    pair_id: str,
    meta: RasterMeta,
    *,
    dtype: str,
    band_count: int,
    tiles: list[tuple[int, int, TileRef]],
    vrt_href: str | None,
    datetime: str | None = None,
) -> dict[str, Any]:
    """Build the STAC item of one fused raster.

    Args:
        pair_id: item id.
        meta: output grid and band metadata (CRS, transform, size, nodata, descriptions).
        dtype: output dtype name.
        band_count: number of bands.
        tiles: ``(row, col, ref)`` of every COG tile, ``ref.href`` relative to the item.
        vrt_href: the mosaic's href relative to the item, or None when no VRT is written.
        datetime: fallback acquisition time (ISO-8601) when ``meta.datetime`` is None.

    Returns:
        A GeoJSON Feature dict (geometry and bbox in WGS84 when the grid has a CRS; null geometry otherwise).
    """
    properties: dict[str, Any] = {}
    when = meta.datetime or datetime
    if when:
        properties["datetime"] = when
    else:
        properties.update({"datetime": None, "start_datetime": _OPEN_START, "end_datetime": _OPEN_END})
    geometry: dict[str, Any] | None = None
    bbox: list[float] | None = None
    if meta.crs:
        crs = CRS.from_user_input(meta.crs)
        native = _bounds(meta)
        west, south, east, north = native
        footprint = {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        }
        geometry = dict(transform_geom(crs, "EPSG:4326", footprint))
        geometry = {
            "type": geometry["type"],
            "coordinates": _rounded(json.loads(json.dumps(geometry["coordinates"]))),
        }
        bbox = [float(v) for v in transform_bounds(crs, "EPSG:4326", *native, densify_pts=21)]
        epsg = crs.to_epsg()
        properties["proj:code"] = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            properties["proj:wkt2"] = crs.to_wkt()
        properties["proj:bbox"] = list(native)
    if meta.transform:
        properties["proj:transform"] = list(meta.transform)
    properties["proj:shape"] = [meta.height, meta.width]
    bands = []
    for band in range(band_count):
        entry: dict[str, Any] = {"data_type": dtype}
        if meta.descriptions and band < len(meta.descriptions) and meta.descriptions[band]:
            entry["name"] = str(meta.descriptions[band])
            entry["description"] = str(meta.descriptions[band])
        else:
            entry["name"] = f"b{band + 1}"
        if meta.nodata is not None:
            entry["nodata"] = "nan" if meta.nodata != meta.nodata else meta.nodata
        bands.append(entry)
    assets: dict[str, Any] = {}
    if vrt_href:
        assets["mosaic"] = {
            "href": vrt_href,
            "type": VRT_MEDIA_TYPE,
            "roles": ["data"],
            "title": "VRT mosaic",
        }
    for row, col, ref in tiles:
        assets[f"tile_{row}_{col}"] = {
            "href": ref.href,
            "type": COG_MEDIA_TYPE,
            "roles": ["data"],
            "bands": bands,
            "proj:shape": [ref.height, ref.width],
            "proj:transform": list((meta.affine @ Affine.translation(ref.col_off, ref.row_off))[:6]),
        }
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": STAC_EXTENSIONS,
        "id": pair_id,
        "geometry": geometry,
        "properties": properties,
        "links": [],
        "assets": assets,
    }
    if bbox is not None:
        item["bbox"] = bbox
    return _rounded(item)


def dumps_item(item: dict[str, Any]) -> bytes:
    """Serialise an item deterministically (sorted keys, fixed indentation, UTF-8)."""
    return (json.dumps(item, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
