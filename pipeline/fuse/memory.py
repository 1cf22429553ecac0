"""Memory of the job's processes: freed heap given back between tasks and batches (:func:`release_heap`), write
bundles sized in bytes (:func:`rows_per_write`) and Ray Data's object-store budget (:func:`object_store_limit`).

A Ray worker process outlives its task: the pooled workers that ran a scene's planning (a decimated read, a model,
BatchNorm statistics) or a write task (COG encoding), and the fusion actors between batches, keep the pages glibc's
allocator has freed but not returned, so the job's resident memory grew with the number of tiles a process had
handled rather than with what it holds (issue 14). :func:`release_heap` asks glibc to return them
(``malloc_trim(0)``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config.fuse_config import FuseJobConfig

__all__ = ["object_store_limit", "release_heap", "rows_per_write"]

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_heap() -> bool:
    """Return the freed pages of this process's heap to the OS; True when the C library could (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except Exception:  # never let a memory hint fail a task
        logger.debug("malloc_trim failed", exc_info=True)
        return False


def rows_per_write(config: FuseJobConfig) -> int:
    """Rows bundled into one write task: ``resources.rows_per_write``, lowered when scenes become tile rows so that
    a bundle of ``tiling.tile_size``² tiles (3 one-byte bands) fits ``resources.write_max_mb``."""
    rows = config.resources.rows_per_write
    if config.tiling.window_min_pixels is None or config.method != "maugif":
        return rows
    tile_bytes = config.tiling.tile_size**2 * 3
    return max(1, min(rows, config.resources.write_max_mb * 2**20 // tile_bytes))


@contextlib.contextmanager
def object_store_limit(megabytes: int | None) -> Iterator[None]:
    """Ray Data's object-store budget for this job's Datasets (``resources.object_store_mb``), restored after."""
    if megabytes is None:
        yield
        return
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    previous = options.resource_limits
    options.resource_limits = previous.copy(object_store_memory=megabytes * 2**20)
    try:
        yield
    finally:
        options.resource_limits = previous
