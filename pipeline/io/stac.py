"""STAC items and the job's Collection, built with pystac (STAC 1.1, projection v2 and raster v1.1 extensions).

One item per raster, stored at ``<output>/<pair_id>/item.json`` next to its COG tiles, and one Collection at
``<output>/collection.json`` linking every item under the output location (:func:`write_collection`, refreshed at
the end of each job, so items of earlier runs stay linked). Asset and link hrefs are relative, so a copied or
moved output location stays valid; the source rasters are ``derived_from`` links (their URIs as given).

Items are deterministic: no write time is recorded. ``datetime`` is the acquisition time from the input metadata
(the TIFF ``DATETIME`` tag), else the configured one; when neither is known it is ``null`` with an open
``start_datetime``/``end_datetime`` interval, which STAC allows and which keeps rewrites byte-identical.

Offline validation: pystac ships the STAC core JSON schemas (:func:`validate_core` uses them); the extension
schemas are online only, so extension fields are written through pystac's extension classes, which check them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from typing import Any

import pystac
from affine import Affine
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom

from pipeline.io.cog import RasterMeta, TileRef

__all__ = [
    "COG_MEDIA_TYPE",
    "COLLECTION_NAME",
    "build_collection",
    "build_stac_item",
    "dumps_item",
    "parse_datetime",
    "raster_pair_ids",
    "validate_core",
    "write_collection",
]

logger = logging.getLogger(__name__)

COG_MEDIA_TYPE = str(pystac.MediaType.COG)
VRT_MEDIA_TYPE = "application/xml"
COLLECTION_NAME = "collection.json"
_OPEN_START = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)
_OPEN_END = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
_DIGITS = 9


def parse_datetime(value: str | None) -> dt.datetime | None:
    """An ISO-8601 string or a TIFF ``DATETIME`` tag (``YYYY:MM:DD HH:MM:SS``) as an aware UTC datetime."""
    if not value:
        return None
    text = str(value).strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        logger.warning("unreadable acquisition time %r: expected ISO-8601 or a TIFF DATETIME tag", value)
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


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


def _band_entries(meta: RasterMeta, dtype: str, band_count: int) -> list[dict[str, Any]]:
    """STAC 1.1 core ``bands`` of an asset: name, description, data type, nodata."""
    bands = []
    for band in range(band_count):
        entry: dict[str, Any] = {"data_type": dtype}
        if meta.descriptions and band < len(meta.descriptions) and meta.descriptions[band]:
            entry["name"] = str(meta.descriptions[band])
            entry["description"] = str(meta.descriptions[band])
        else:
            entry["name"] = f"b{band + 1}"
        if meta.nodata is not None:
            entry["nodata"] = "nan" if math.isnan(meta.nodata) else meta.nodata
        bands.append(entry)
    return bands


def _raster_bands(meta: RasterMeta, dtype: str, band_count: int) -> list[RasterBand]:
    nodata: Any = None
    if meta.nodata is not None:
        nodata = "nan" if math.isnan(meta.nodata) else meta.nodata
    return [RasterBand.create(nodata=nodata, data_type=DataType(dtype)) for _ in range(band_count)]


def _add_asset(
    item: pystac.Item,
    key: str,
    href: str,
    media_type: str,
    title: str,
    meta: RasterMeta,
    dtype: str,
    band_count: int,
    *,
    shape: tuple[int, int] | None = None,
    transform: Affine | None = None,
) -> None:
    asset = pystac.Asset(href=href, media_type=media_type, roles=["data"], title=title)
    asset.extra_fields["bands"] = _band_entries(meta, dtype, band_count)
    item.add_asset(key, asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = _raster_bands(meta, dtype, band_count)
    if shape is not None:
        proj = ProjectionExtension.ext(asset, add_if_missing=True)
        proj.shape = list(shape)
        if meta.transform and transform is not None:
            proj.transform = list(tuple(transform)[:6])


def build_stac_item(
    pair_id: str,
    meta: RasterMeta,
    *,
    dtype: str,
    band_count: int,
    tiles: list[tuple[int, int, TileRef]],
    vrt_href: str | None,
    datetime: str | None = None,
    scene_href: str | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the STAC item of one fused raster.

    Args:
        pair_id: item id.
        meta: output grid and band metadata (CRS, transform, size, nodata, descriptions, sources, datetime).
        dtype: output dtype name.
        band_count: number of bands.
        tiles: ``(row, col, ref)`` of every COG tile, ``ref.href`` relative to the item.
        vrt_href: the mosaic's href relative to the item, or None when no VRT is written.
        datetime: fallback acquisition time (ISO-8601) when ``meta.datetime`` is None.
        scene_href: the scene COG's href relative to the item (``output.layout="scene"``), or None.
        properties: extra item properties (e.g. what a per-scene fit estimated).

    Returns:
        The item as a GeoJSON Feature dict (geometry and bbox in WGS84 when the grid has a CRS; null geometry
        otherwise), with the projection and raster extensions.
    """
    when = parse_datetime(meta.datetime) or parse_datetime(datetime)
    geometry: dict[str, Any] | None = None
    bbox: list[float] | None = None
    crs = CRS.from_user_input(meta.crs) if meta.crs else None
    if crs is not None:
        native = _bounds(meta)
        west, south, east, north = native
        footprint = {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        }
        geometry = dict(transform_geom(crs, "EPSG:4326", footprint))
        geometry = {"type": geometry["type"], "coordinates": _rounded(json.loads(json.dumps(geometry["coordinates"])))}
        bbox = [float(v) for v in transform_bounds(crs, "EPSG:4326", *native, densify_pts=21)]
    item = pystac.Item(
        id=pair_id,
        geometry=geometry,
        bbox=bbox,
        datetime=when,
        properties=dict(properties or {}),
        start_datetime=None if when else _OPEN_START,
        end_datetime=None if when else _OPEN_END,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if crs is not None:
        epsg = crs.to_epsg()
        proj.code = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            proj.wkt2 = crs.to_wkt()
        proj.bbox = list(_bounds(meta))
    if meta.transform:
        proj.transform = list(meta.transform)
    proj.shape = [meta.height, meta.width]
    for uri in meta.sources or ():
        item.add_link(pystac.Link(rel=pystac.RelType.DERIVED_FROM, target=uri, media_type=None))
    if scene_href:
        _add_asset(item, "data", scene_href, COG_MEDIA_TYPE, "Scene COG", meta, dtype, band_count)
    if vrt_href:
        _add_asset(item, "mosaic", vrt_href, VRT_MEDIA_TYPE, "VRT mosaic", meta, dtype, band_count)
    for row, col, ref in tiles:
        _add_asset(
            item,
            f"tile_{row}_{col}",
            ref.href,
            COG_MEDIA_TYPE,
            f"COG tile ({row}, {col})",
            meta,
            dtype,
            band_count,
            shape=(ref.height, ref.width),
            transform=meta.affine @ Affine.translation(ref.col_off, ref.row_off),
        )
    return _rounded(item.to_dict(include_self_link=False, transform_hrefs=False))


def dumps_item(item: dict[str, Any]) -> bytes:
    """Serialise a STAC object deterministically (sorted keys, fixed indentation, UTF-8)."""
    return (json.dumps(item, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def validate_core(stac: dict[str, Any]) -> None:
    """Validate an item or collection dict against the STAC core schemas shipped with pystac (offline).

    Raises:
        jsonschema.ValidationError: the first violation.
    """
    from pystac.validation.local_validator import LocalValidator

    validator = LocalValidator()
    if stac.get("type") == "Feature":
        validator.item_validator(stac["stac_version"]).validate(stac)
    else:
        validator.collection_validator(stac["stac_version"]).validate(stac)


def build_collection(
    items: list[dict[str, Any]], *, collection_id: str, description: str, folders: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Collection linking ``items`` (``<pair_id>/item.json`` relative hrefs, or ``<folders[id]>/item.json``, e.g.
    under a key shard), extent from their bboxes and times.

    Items without a footprint (plain, not georeferenced rasters) are linked but add nothing to the spatial extent,
    which is the whole globe when no item has one.
    """
    boxes = [i["bbox"] for i in items if i.get("bbox")]
    if boxes:
        spatial = [
            [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
        ]
    else:
        spatial = [[-180.0, -90.0, 180.0, 90.0]]
    times = [parse_datetime(i["properties"].get("datetime")) for i in items]
    known = sorted(t for t in times if t is not None)
    interval = [[known[0], known[-1]]] if known and len(known) == len(times) else [[None, None]]
    collection = pystac.Collection(
        id=collection_id,
        description=description,
        extent=pystac.Extent(pystac.SpatialExtent(spatial), pystac.TemporalExtent(interval)),
        license="other",
    )
    for item in sorted(items, key=lambda i: i["id"]):
        collection.add_link(
            pystac.Link(
                rel=pystac.RelType.ITEM,
                target=f"./{(folders or {}).get(item['id'], item['id'])}/item.json",
                media_type=pystac.MediaType.JSON,
            )
        )
    return _rounded(collection.to_dict(include_self_link=False, transform_hrefs=False))


def raster_pair_ids(output: str) -> list[str]:
    """Pair ids whose latest manifest status at ``output`` is ``ok`` with a raster output (VRT, scene COG or tile
    folder: anything but a PNG), from the manifest streamed part group by group (:func:`~pipeline.io.manifest.
    latest_ids`), without listing the output location: a million PNG outputs cost the ids' columns, not the rows."""
    import pyarrow.compute as pc

    from pipeline.io.manifest import latest_ids
    from pipeline.schema import OUTPUT_URI, STATUS, STATUS_OK

    def raster_ok(table: Any) -> Any:
        uri = table.column(OUTPUT_URI)
        not_raster = pc.fill_null(pc.or_(pc.equal(uri, ""), pc.ends_with(pc.utf8_lower(uri), ".png")), True)
        return pc.and_(pc.equal(table.column(STATUS), STATUS_OK), pc.invert(not_raster))

    return latest_ids(output, raster_ok, columns=[OUTPUT_URI]).to_pylist()


def write_collection(
    output: str, *, collection_id: str = "maugif-fused", fs: Any = None, key_shards: int = 0
) -> str | None:
    """Write ``<output>/collection.json`` linking the STAC item of every raster committed at ``output`` (this run
    and earlier ones, from the manifest); returns its URI (None: no raster items). ``key_shards``: the output's
    key layout (items under ``<output>/<shard>/<pair_id>/``, :mod:`pipeline.io.key_shards`).
    """
    from pipeline.io.fsutil import atomic_write_bytes, filesystem_for, join_key
    from pipeline.io.key_shards import shard_name

    if fs is None:
        fs, _ = filesystem_for(output)
    items = []
    folders: dict[str, str] = {}
    for pair_id in raster_pair_ids(output):
        shard = shard_name(pair_id, key_shards)
        folder = pair_id if shard is None else f"{shard}/{pair_id}"
        path = filesystem_for(join_key(output, folder, "item.json"))[1]
        try:
            with fs.open(path, "rb") as handle:
                item = json.loads(handle.read())
        except FileNotFoundError:
            continue  # written with output.write_stac=false
        items.append(item)
        folders[item["id"]] = folder
    if not items:
        return None
    collection = build_collection(
        items,
        collection_id=collection_id,
        description=f"Fused rasters written by maugif-ray to {output}",
        folders=folders,
    )
    uri = join_key(output, COLLECTION_NAME)
    payload = dumps_item(collection)
    try:  # a rerun that committed nothing new leaves the collection as it was (not rewritten)
        with fs.open(filesystem_for(uri)[1], "rb") as handle:
            unchanged = handle.read() == payload
    except FileNotFoundError:
        unchanged = False
    if not unchanged:
        atomic_write_bytes(uri, payload, fs)
    logger.info("STAC collection %s links %d items%s", uri, len(items), " (unchanged)" if unchanged else "")
    return uri
