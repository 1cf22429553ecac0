"""Typed errors of ``pipeline``: one root, specific errors also inherit the matching builtin."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GridError",
    "ManifestError",
    "OutputKeyError",
    "PairDiscoveryError",
    "PipelineError",
    "RasterReadError",
    "RasterWriteError",
]


class PipelineError(Exception):
    """Root of every error raised by ``pipeline``."""


class ConfigError(PipelineError, ValueError):
    """A job or pipeline configuration that cannot work."""


class PairDiscoveryError(PipelineError, ValueError):
    """A pair source that cannot be read or matched (bad manifest, missing columns, empty folder)."""


class ManifestError(PairDiscoveryError):
    """A manifest unusable as a whole: not UTF-8 text, no header, missing or repeated columns, no data rows.

    Raised on the driver while discovery reads the header and the first batch, before any pair is processed; a
    single bad row is never this error (it becomes a failure record naming the manifest and its line).
    """


class RasterReadError(PipelineError, OSError):
    """An image that cannot be read or decoded (missing, truncated, corrupt, unsupported)."""


class RasterWriteError(PipelineError, OSError):
    """An output that cannot be written."""


class GridError(PipelineError, ValueError):
    """Two rasters whose grids cannot be aligned (CRS mismatch, no overlap, non-integer ratio, size mismatch)."""


class OutputKeyError(PipelineError, ValueError):
    """A pair id that cannot be turned into a safe output key."""
