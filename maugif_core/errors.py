"""Typed errors of ``maugif_core``.

Every error derives from :class:`MaugifError` and, where it fits, from the matching builtin, so callers can catch
either (``except ValueError`` keeps working), as rasterio does.
"""

from __future__ import annotations

__all__ = [
    "BandCountError",
    "CheckpointError",
    "DTypeError",
    "MaugifError",
    "NonFiniteError",
    "NotFittedError",
    "RatioError",
    "ShapeError",
    "UnknownMethodError",
    "UnknownTaskError",
]


class MaugifError(Exception):
    """Root of every error raised by ``maugif_core``."""


class ShapeError(MaugifError, ValueError):
    """An array has the wrong number of dimensions or a size that does not match its partner."""


class DTypeError(MaugifError, TypeError):
    """An array has a dtype the library does not accept."""


class NonFiniteError(MaugifError, ValueError):
    """An input holds NaN or Inf values."""


class RatioError(MaugifError, ValueError):
    """The resolution ratio between a low- and a high-resolution image is not an integer >= 2."""


class BandCountError(MaugifError, ValueError):
    """A band count does not match what the model or the partner image requires."""


class UnknownTaskError(MaugifError, KeyError):
    """A task name that has no preset."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class UnknownMethodError(MaugifError, KeyError):
    """A baseline or metric name that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointError(MaugifError, ValueError):
    """A checkpoint that is malformed, pickled, of an unknown format version, or does not match its config."""


class NotFittedError(MaugifError, RuntimeError):
    """A per-scene model was asked to fuse before being fitted."""
