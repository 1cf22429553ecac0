"""One Cloud-Optimized GeoTIFF per scene (``output.layout="scene"``), built without holding the scene in memory.

The committed COG tiles of a raster are mosaicked by a VRT (absolute GDAL paths: local, or ``/vsis3/`` for an
``s3://`` output) with implicit overviews, and GDAL's COG driver copies that VRT block by block into a local
temporary file (its own block cache capped by ``output.scene_cog_cache_mb``; the overviews come from the tiles'
internal overviews through the VRT's ``OverviewList``). The file is then moved (local) or uploaded to a temporary
key and renamed (object storage) to ``<output>/<pair_id>.tif``: a reader never sees a partial scene, and a
rerun rewrites it whole.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from typing import Any

import fsspec

from pipeline.config.output_config import OutputConfig
from pipeline.errors import RasterWriteError
from pipeline.io.cog import RasterMeta, TileRef, build_vrt_xml
from pipeline.io.fsutil import TEMP_MARKER, filesystem_for, is_local, join_key
from pipeline.io.storage import call_with_retries, gdal_path, rasterio_env

__all__ = ["overview_factors", "scene_cog_uri", "write_scene_cog"]

logger = logging.getLogger(__name__)


def overview_factors(height: int, width: int, blocksize: int) -> list[int]:
    """Power-of-two overview factors until the coarsest level fits in one ``blocksize`` block (GDAL COG's AUTO)."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > blocksize:
        factors.append(factor)
        factor *= 2
    return factors


def scene_cog_uri(output: str, pair_id: str) -> str:
    """``<output>/<pair_id>.tif``."""
    return join_key(output, f"{pair_id}.tif")


def write_scene_cog(
    output: str,
    pair_id: str,
    meta: RasterMeta,
    tiles: list[TileRef],
    *,
    dtype: str,
    band_count: int,
    config: OutputConfig,
    fs: fsspec.AbstractFileSystem | None = None,
) -> tuple[str, int]:
    """Write the scene COG of a raster from its committed tiles.

    Args:
        output: output location.
        pair_id: the raster (its tiles are under ``<output>/<pair_id>/``).
        meta: output grid and band metadata.
        tiles: the tiles, ``href`` relative to the tile folder (``"0_1.tif"``).
        dtype: output dtype name.
        band_count: bands of every tile.
        config: codec settings (``cog_*``, ``scene_cog_cache_mb``).
        fs: filesystem of ``output``.

    Returns:
        ``(uri, bytes_written)``.

    Raises:
        RasterWriteError: GDAL could not build the COG, or it could not be committed.
    """
    import rasterio
    import rasterio.shutil

    if fs is None:
        fs, _ = filesystem_for(output)
    uri = scene_cog_uri(output, pair_id)
    absolute = [
        TileRef(gdal_path(join_key(output, pair_id, ref.href)), ref.row_off, ref.col_off, ref.height, ref.width)
        for ref in tiles
    ]
    factors = overview_factors(meta.height, meta.width, config.cog_blocksize)
    xml = build_vrt_xml(meta, dtype, absolute, band_count, overviews=factors, relative=False)
    options: dict[str, Any] = {
        "COMPRESS": config.cog_compress,
        "BLOCKSIZE": config.cog_blocksize,
        "OVERVIEWS": "AUTO",  # the VRT's overviews, read from the tiles' own
        "OVERVIEW_RESAMPLING": config.cog_overview_resampling.upper(),
        "RESAMPLING": config.cog_overview_resampling.upper(),
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "1",
    }
    if config.cog_compress != "NONE":
        options["PREDICTOR"] = "YES" if config.cog_predictor else "NO"
    local = is_local(fs)
    final_path = os.path.abspath(fs._strip_protocol(uri)) if local else None
    folder = os.path.dirname(final_path) if local else None
    with tempfile.TemporaryDirectory(prefix=f".maugif-scene{TEMP_MARKER}", dir=folder) as scratch:
        vrt_path = os.path.join(scratch, "scene.vrt")
        with open(vrt_path, "w", encoding="utf-8") as handle:
            handle.write(xml)
        cog_path = os.path.join(scratch, "scene.tif")
        try:
            with rasterio_env(output, GDAL_CACHEMAX=int(config.scene_cog_cache_mb), CPL_TMPDIR=scratch):
                rasterio.shutil.copy(vrt_path, cog_path, driver="COG", **options)
        except Exception as e:
            raise RasterWriteError(f"building the scene COG {uri!r} from its tiles failed: {e}") from e
        size = os.path.getsize(cog_path)
        try:
            if local:
                os.replace(cog_path, final_path)
            else:
                temp = f"{fs._strip_protocol(uri)}{TEMP_MARKER}{uuid.uuid4().hex}"
                call_with_retries(lambda: fs.put_file(cog_path, temp), what=f"upload {uri}")
                try:
                    call_with_retries(lambda: fs.mv(temp, fs._strip_protocol(uri)), what=f"commit {uri}")
                finally:
                    if fs.exists(temp):
                        fs.rm_file(temp)
        except Exception as e:
            raise RasterWriteError(f"could not commit the scene COG {uri!r}: {e}") from e
    logger.info("scene COG %s: %dx%d, %d bytes, overviews %s", uri, meta.height, meta.width, size, factors)
    return uri, size
