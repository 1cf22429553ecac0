"""Memory of the job's processes: freed heap given back between tasks and batches (:func:`release_heap`), write
bundles sized in bytes (:func:`rows_per_write`, from the window's headers by :func:`window_tile_bytes`) and Ray
Data's object-store budget (:func:`object_store_limit`).

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
    import pyarrow as pa

    from pipeline.config.fuse_config import FuseJobConfig

__all__ = ["object_store_limit", "release_heap", "rows_per_write", "window_has_scenes", "window_tile_bytes"]

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


def rows_per_write(config: FuseJobConfig, tile_bytes: int | None = None) -> int:
    """Rows bundled into one write task: ``resources.rows_per_write``, lowered when scenes become tile rows so that
    a bundle of tiles fits ``resources.write_max_mb``.

    Args:
        config: the job config.
        tile_bytes: bytes of one fused tile row (:func:`window_tile_bytes`); None: ``tiling.tile_size``² pixels of 3
            one-byte bands.
    """
    rows = config.resources.rows_per_write
    if config.tiling.window_min_pixels is None or config.method != "maugif":
        return rows
    tile_bytes = tile_bytes or config.tiling.tile_size**2 * 3
    return max(1, min(rows, config.resources.write_max_mb * 2**20 // tile_bytes))


def window_tile_bytes(config: FuseJobConfig, head: pa.Table | None) -> int | None:
    """Bytes of one fused tile row for a window whose first rows are ``head``, from the GeoTIFF headers of those
    pairs (no pixels are read): ``tiling.tile_size``² pixels × the most bands × the widest sample of either image
    (the fused image has A's dtype and at most the larger band count), plus the two float32 detail maps when
    ``fusion.details`` is on. At least the 3 one-byte bands of an RGB tile; None when scenes are not tiled.

    A header that cannot be read is passed over here: that pair fails in its own task, with its reason.
    """
    if head is None or config.tiling.window_min_pixels is None or config.method != "maugif":
        return None
    import numpy as np

    from pipeline.io.readers import PLAIN_SUFFIXES, read_meta
    from pipeline.schema import STATUS, STATUS_OK, URI_A, URI_B

    per_pixel = 3
    for row in head.select([URI_A, URI_B, STATUS]).to_pylist():
        uris = [row[URI_A], row[URI_B]]
        # As planning does: a pair named as plain images is never a scene, and costs no header read here.
        if row[STATUS] != STATUS_OK or not all(uris) or any(u.lower().endswith(PLAIN_SUFFIXES) for u in uris):
            continue
        try:
            metas = [read_meta(u, config=config.read, storage=config.storage) for u in uris]
        except Exception as error:  # noqa: BLE001 - the pair's own task reports it
            logger.debug("write budget: header of %s not read: %s", uris, error)
            continue
        if any(m.get("format") != "TIFF" for m in metas):
            continue
        bands = max(int(m["count"]) for m in metas)
        width = max(np.dtype(m["dtype"]).itemsize for m in metas)
        per_pixel = max(per_pixel, bands * width)
    details = 2 * 4 if config.fusion.details else 0
    return config.tiling.tile_size**2 * (per_pixel + details)


def window_has_scenes(config: FuseJobConfig, head: pa.Table | None) -> bool:
    """Whether any of a window's first rows (``head``) is a scene that planning turns into tile rows: a GeoTIFF B
    image above ``tiling.window_min_pixels`` (headers only, as planning reads them; plain-image names are never
    scenes and cost no read). A header that cannot be read counts as no scene: that pair fails in its own task."""
    if head is None or config.tiling.window_min_pixels is None or config.method != "maugif":
        return False
    from pipeline.io.readers import PLAIN_SUFFIXES, read_meta
    from pipeline.schema import STATUS, STATUS_OK, URI_B

    for row in head.select([URI_B, STATUS]).to_pylist():
        uri = row[URI_B]
        if row[STATUS] != STATUS_OK or not uri or uri.lower().endswith(PLAIN_SUFFIXES):
            continue
        try:
            meta = read_meta(uri, config=config.read, storage=config.storage)
        except Exception as error:  # noqa: BLE001 - the pair's own task reports it
            logger.debug("scene check: header of %s not read: %s", uri, error)
            continue
        if meta.get("format") == "TIFF" and meta["height"] * meta["width"] > config.tiling.window_min_pixels:
            return True
    return False


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
