"""Configuration of tiling and of everything written under an output location (SPEC §2: Tiling, Writing).

Plain, frozen data validated on the driver; the sink builds filesystems and writers from it inside Ray
workers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from pipeline.config.io_config import FrozenConfig

__all__ = ["OutputConfig", "TilingConfig"]


class TilingConfig(FrozenConfig):
    """How large images are cut into tiles for fusion (and for the COG tiles they are written as).

    The halo must be at least the model's receptive-field radius so that tiled output equals whole-image
    output; :func:`pipeline.io.tiling.plan_tiles` rounds it up to a multiple of the resolution ratio.
    """

    tile_size: PositiveInt = Field(
        1024,
        description="Core tile size in pixels of the output (high-resolution) grid; a multiple of the ratio.",
    )
    halo: int = Field(
        16,
        ge=0,
        description="Context added on every side of a tile, in output-grid pixels (>= receptive radius).",
    )
    max_untiled_pixels: PositiveInt = Field(
        4096 * 4096,
        description="Images with more pixels than this are fused tile by tile, smaller ones whole.",
    )
    window_min_pixels: PositiveInt | None = Field(
        4096 * 4096,
        description=(
            "TIFF rasters whose output grid has more pixels than this are fused as tile rows: windows planned "
            "from the headers alone, each tile row reading only its window plus halo from the source, so no "
            "process ever holds the scene. None: always read rasters whole."
        ),
    )
    read_tiles_in_actor: bool = Field(
        True,
        description=(
            "Tile rows of a scene are read by the fusion actor that fuses them (memory: batch x tile per actor, "
            "whatever the scene's size) instead of by the decode tasks (which overlap reading with fusion but "
            "can queue many of a scene's decoded tiles in the object store)."
        ),
    )
    state_max_pixels: PositiveInt = Field(
        2048 * 2048,
        description=(
            "Scene-level state of a tile-row scene (per-image BatchNorm statistics, the value stretch of "
            "non-8/16-bit data, the multiplicative spectral basis, injection gains and sensor) is computed once "
            "from a read decimated to at most this many pixels of the output grid (served from overviews when "
            "the file has them); scenes at or under it are read at full resolution for it."
        ),
    )


class OutputConfig(FrozenConfig):
    """Where and how fused results, their metadata and the job manifest are written."""

    uri: str = Field("outputs", description="Output location: local path, file:// or s3:// URI (a prefix).")
    format: Literal["auto", "png", "cog"] = Field(
        "auto",
        description=(
            "'png' for plain images, 'cog' for rasters, 'auto' picks COG when the grid-defining image is "
            "georeferenced or its dtype/band count cannot be stored as PNG (anything but 1 to 4 bands of "
            "uint8/uint16)."
        ),
    )
    cog_tile_size: PositiveInt = Field(
        1024,
        description="Side of the COG tiles cut from whole-image raster rows (tile rows keep their windows).",
    )
    cog_blocksize: int = Field(
        512, ge=16, description="Internal block size of each COG tile (GDAL COG BLOCKSIZE, multiple of 16)."
    )
    cog_compress: Literal["DEFLATE", "ZSTD", "LZW", "NONE"] = Field(
        "DEFLATE", description="Lossless codec of the COG tiles."
    )
    cog_predictor: bool = Field(
        True, description="Use the horizontal (integers) or floating-point predictor before compression."
    )
    cog_overview_resampling: Literal["nearest", "average", "bilinear", "cubic", "mode"] = Field(
        "average", description="Resampling used to build the COG overviews."
    )
    png_compress_level: int = Field(6, ge=0, le=9, description="zlib level of PNG output (0 = store, 9 = smallest).")
    layout: Literal["tiles", "scene"] = Field(
        "tiles",
        description=(
            "'tiles': each raster as COG tiles <output>/<pair_id>/<row>_<col>.tif plus the VRT mosaic (with "
            "overviews); 'scene': also one tiled COG with internal overviews per raster, <output>/<pair_id>.tif, "
            "built by GDAL's COG driver from the committed tiles without holding the scene in memory (it becomes "
            "the manifest's output_uri)."
        ),
    )
    scene_cog_cache_mb: PositiveInt = Field(
        256, description="GDAL block cache (MiB) while a scene COG is built (layout='scene'): bounds its memory."
    )
    write_vrt: bool = Field(True, description="Write a VRT mosaic <output>/<pair_id>.vrt over each raster's tiles.")
    write_stac: bool = Field(True, description="Write a STAC item <output>/<pair_id>/item.json for each raster.")
    stac_datetime: str | None = Field(
        None,
        description=(
            "ISO-8601 acquisition time for STAC items when the input metadata has none; if neither is "
            "known the item carries datetime=null with an open start/end interval (deterministic: never "
            "the write time)."
        ),
    )
    extra_columns: tuple[str, ...] = Field(
        (),
        description="Row columns (detail maps, quicklooks) written to _extras/<column>/<pair_id>.png|.tif.",
    )
    manifest_flush_rows: PositiveInt = Field(
        50_000, description="Manifest rows buffered per writer before a Parquet part file is flushed."
    )
    key_shards: int = Field(
        0,
        ge=0,
        le=65_536,
        description=(
            "Spread outputs over N key prefixes for S3's per-prefix request limit (about 3,500 PUT/s): N > 1 puts "
            "each pair's outputs under <output>/<shard>/, where <shard> is a stable hash of the pair id modulo N as "
            "zero-padded hex (16 → 0..f, 256 → 00..ff); 0 or 1: flat, <output>/<pair_id>.png. The manifest and "
            "summary stay at <output>/. Fixed per output: a run with another value than the one recorded there "
            "is refused (pipeline.io.key_shards)."
        ),
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Identifier of this run in manifest part names; a sortable UTC timestamp when None.",
    )

    @model_validator(mode="after")
    def _check_blocksize(self) -> OutputConfig:
        if self.cog_blocksize % 16:
            raise ValueError(f"cog_blocksize must be a multiple of 16 (GDAL COG driver); got {self.cog_blocksize}")
        return self
