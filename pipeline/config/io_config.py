"""Configs of the ingest half of the pipeline: storage access, pair discovery and reading.

Configs are plain, frozen data validated on the driver; filesystems, GDAL environments and readers are built
from them inside the workers (:mod:`pipeline.io.storage`). Credentials are never part of a config: they come from
the standard AWS environment (variables, profiles, instance roles).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

__all__ = [
    "DEFAULT_EXTENSIONS",
    "FrozenConfig",
    "IngestConfig",
    "PairsConfig",
    "ReadConfig",
    "StorageConfig",
]

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32")


class FrozenConfig(BaseModel):
    """Base of every pipeline config: unknown keys are rejected, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(FrozenConfig):
    """How to reach object storage (``s3://``); local paths and ``file://`` ignore it.

    Every field defaults to "whatever the standard AWS environment says", so a job pointed at another
    S3-compatible store (MinIO, Ceph, a local test server) only needs ``AWS_ENDPOINT_URL`` in its environment.
    """

    endpoint_url: str | None = Field(
        None,
        description=(
            "S3 endpoint, e.g. 'http://127.0.0.1:9000'. None: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL "
            "from the environment, else AWS itself."
        ),
    )
    profile: str | None = Field(
        None, description="AWS profile name (credentials file). None: AWS_PROFILE or the default chain."
    )
    anonymous: bool = Field(False, description="Unsigned requests, for public buckets.")
    region: str | None = Field(None, description="AWS region. None: AWS_REGION / AWS_DEFAULT_REGION / profile.")
    max_attempts: PositiveInt = Field(
        10, description="botocore attempts per request (throttling such as 503 SlowDown included)."
    )
    retry_mode: Literal["standard", "adaptive"] = Field(
        "adaptive",
        description="botocore retry mode; 'adaptive' adds client-side rate limiting on throttling responses.",
    )
    operation_retries: NonNegativeInt = Field(
        3,
        description=(
            "Extra retries of a whole operation (one file read, one listing page) after botocore gave up on "
            "a throttling or transient error; jittered exponential backoff."
        ),
    )
    backoff_base_s: PositiveFloat = Field(0.2, description="First backoff of operation retries, seconds.")
    backoff_max_s: PositiveFloat = Field(20.0, description="Cap of one operation-retry backoff, seconds.")
    connect_timeout_s: PositiveFloat = Field(10.0, description="TCP connect timeout per request, seconds.")
    read_timeout_s: PositiveFloat = Field(60.0, description="Socket read timeout per request, seconds.")
    max_pool_connections: PositiveInt = Field(
        32, description="HTTP connections per filesystem instance (one instance per worker process)."
    )
    allowed_schemes: tuple[str, ...] = Field(
        ("file", "s3"),
        description=(
            "URI schemes the job may read: 'file' (local paths and file://), 's3' (also s3a://). A manifest is "
            "data, so a URI it names with another scheme fails that pair; an input (manifest or folder) with "
            "another scheme is a config error. Add e.g. 'https' or 'gs' only when the job should reach them."
        ),
    )

    @model_validator(mode="after")
    def _check_schemes(self) -> StorageConfig:
        for scheme in self.allowed_schemes:
            if not scheme or scheme != scheme.lower() or "://" in scheme or ":" in scheme:
                raise ValueError(
                    f"allowed_schemes entry {scheme!r}: expected a lower-case scheme name such as 'file', 's3' "
                    "or 'https'"
                )
        return self


class PairsConfig(FrozenConfig):
    """How pairs are discovered: a manifest file, two sub-folders, or one folder with suffixes."""

    layout: Literal["auto", "manifest", "folders", "suffix"] = Field(
        "auto",
        description=(
            "'manifest': CSV/Parquet/JSONL file; 'folders': two sub-folders matched by stem; 'suffix': one "
            "folder with e.g. {stem}_A.* / {stem}_B.*; 'auto': a manifest by extension, else sub-folders if "
            "found, else suffixes."
        ),
    )
    folder_a: str | None = Field(
        None, description="Sub-folder holding the A (base) images. None: the task preset's names (e.g. 'vi')."
    )
    folder_b: str | None = Field(
        None,
        description="Sub-folder holding the B (injected) images. None: the task preset's names (e.g. 'ir').",
    )
    pattern_a: str | None = Field(
        None,
        description="File-name pattern of A images (suffix layout), e.g. '{stem}_A.*' or '{stem}-A.jpg'.",
    )
    pattern_b: str | None = Field(
        None,
        description="File-name pattern of B images (suffix layout), e.g. '{stem}_B.*' or '{stem}-B.jpg'.",
    )
    extensions: tuple[str, ...] = Field(
        DEFAULT_EXTENSIONS,
        description="Image file extensions considered by folder/suffix discovery (lower case).",
    )
    recursive: bool = Field(
        True, description="Descend into nested folders (the relative sub-path becomes part of the pair id)."
    )
    default_task: str = Field(
        "general",
        description="Task of pairs whose source names none (manifest without task, no task argument).",
    )
    batch_size: PositiveInt = Field(
        16_384, description="Rows per streamed batch of discovered pairs (bounds the driver's working set)."
    )
    check_duplicates: bool = Field(
        True,
        description=(
            "Report repeated (sanitised) pair ids as failures. Costs 8 bytes of driver memory per pair "
            "(a 64-bit fingerprint, not the key)."
        ),
    )
    spill_threshold: PositiveInt = Field(
        200_000,
        description=(
            "Folder listings larger than this many files are spilled to local disk, hash-partitioned, and "
            "matched partition by partition, so the driver never holds the whole listing."
        ),
    )
    spill_dir: str | None = Field(None, description="Local folder for listing spills. None: the system temp dir.")

    @model_validator(mode="after")
    def _check_patterns(self) -> PairsConfig:
        if (self.pattern_a is None) != (self.pattern_b is None):
            raise ValueError("pattern_a and pattern_b must be given together")
        for pattern in (self.pattern_a, self.pattern_b):
            if pattern is not None and pattern.count("{stem}") != 1:
                raise ValueError(f"pattern {pattern!r} must contain '{{stem}}' exactly once")
        if (self.folder_a is None) != (self.folder_b is None):
            raise ValueError("folder_a and folder_b must be given together")
        return self

    @model_validator(mode="after")
    def _check_task(self) -> PairsConfig:
        from maugif_core.config import TASKS

        if self.default_task not in TASKS:
            raise ValueError(f"default_task {self.default_task!r} is not one of {', '.join(TASKS)}")
        return self


class ReadConfig(FrozenConfig):
    """How images are fetched and decoded."""

    s3_access: Literal["fsspec", "gdal"] = Field(
        "fsspec",
        description=(
            "How GDAL reaches s3:// rasters: 'fsspec' (s3fs file objects handed to rasterio, with the "
            "storage retry settings) or 'gdal' (/vsis3/ with an AWSSession). Plain images always use fsspec."
        ),
    )
    allowed_dtypes: tuple[Literal["uint8", "uint16", "int16", "float32"], ...] = Field(
        SUPPORTED_DTYPES, description="Pixel types accepted; anything else is a read failure."
    )
    max_object_bytes: PositiveInt = Field(
        2 * 1024**3,
        description=(
            "Largest stored object read for one image, in bytes (checked from its size before the read; an "
            "object of unknown size is read up to this limit). Larger objects fail their pair."
        ),
    )
    read_timeout_s: PositiveFloat = Field(
        600.0,
        description=(
            "Wall-clock limit for reading one image (open, fetch, decode), seconds. A read past it fails its "
            "pair and is abandoned; only regular files and stored objects are read at all (FIFOs and devices "
            "fail at once)."
        ),
    )
    max_pixels: PositiveInt = Field(
        256 * 1024 * 1024,
        description="Largest height x width read whole; larger images must be read by window (read_window).",
    )
    reproject: bool = Field(
        False,
        description=(
            "Remote-sensing pairs in different CRSs: warp the low-res image onto the high-res CRS (else reject)."
        ),
    )
    resample_offgrid: bool = Field(
        False,
        description=(
            "Remote-sensing pairs whose grids do not nest (non-integer ratio, unaligned origins, rotation): "
            "warp the low-res image onto an aligned integer-ratio grid (else reject)."
        ),
    )
    resampling: Literal["nearest", "bilinear", "cubic", "average", "lanczos"] = Field(
        "average", description="Resampling kernel of those warps."
    )
    grid_tolerance: PositiveFloat = Field(
        1e-6,
        description="Tolerance when testing integer ratios and aligned origins (fraction of a pixel).",
    )


class IngestConfig(FrozenConfig):
    """Storage, pair discovery and reading together, as they appear in a job config."""

    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-storage access.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="Pair discovery.")
    read: ReadConfig = Field(default_factory=ReadConfig, description="Decoding.")
