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

__all__ = [
    "head_headers",
    "object_store_limit",
    "release_heap",
    "rows_per_write",
    "window_has_scenes",
    "window_tile_bytes",
]

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


def _tiled(config: FuseJobConfig) -> bool:
    return config.tiling.window_min_pixels is not None and config.method == "maugif"


def head_headers(config: FuseJobConfig, head: pa.Table | None) -> list[tuple[dict, dict]]:
    """``(meta_a, meta_b)`` of the GeoTIFF pairs among a window's first rows (``head``), read as planning reads
    them: headers only, names of plain images skipped without a read (:data:`~pipeline.io.readers.PLAIN_SUFFIXES`).
    A pair whose headers cannot be read is passed over here: it fails in its own task, with its reason. Empty
    when scenes are not tiled."""
    if head is None or not _tiled(config):
        return []
    from pipeline.io.readers import PLAIN_SUFFIXES, read_meta
    from pipeline.schema import STATUS, STATUS_OK, URI_A, URI_B

    headers = []
    for row in head.select([URI_A, URI_B, STATUS]).to_pylist():
        uri_a, uri_b = row[URI_A], row[URI_B]
        if row[STATUS] != STATUS_OK or not uri_a or not uri_b or uri_b.lower().endswith(PLAIN_SUFFIXES):
            continue
        try:
            metas = (read_meta(uri_a, config=config.read, storage=config.storage),
                     read_meta(uri_b, config=config.read, storage=config.storage))  # fmt: skip
        except Exception as error:  # noqa: BLE001 - the pair's own task reports it
            logger.debug("window headers: %s / %s not read: %s", uri_a, uri_b, error)
            continue
        if all(m.get("format") == "TIFF" for m in metas):
            headers.append(metas)
    return headers


def window_tile_bytes(
    config: FuseJobConfig, head: pa.Table | None, headers: list[tuple[dict, dict]] | None = None
) -> int | None:
    """Bytes of one fused tile row for a window whose first rows are ``head``, from their GeoTIFF headers
    (:func:`head_headers`, or ``headers`` already read): ``tiling.tile_size``² pixels × the most bands × the widest
    sample of either image (the fused image has A's dtype and at most the larger band count), plus the two float32
    detail maps when ``fusion.details`` is on. At least the 3 one-byte bands of an RGB tile; None when scenes are
    not tiled or there is no head."""
    if not _tiled(config) or (head is None and headers is None):
        return None
    import numpy as np

    per_pixel = 3
    for metas in head_headers(config, head) if headers is None else headers:
        bands = max(int(m["count"]) for m in metas)
        width = max(np.dtype(m["dtype"]).itemsize for m in metas)
        per_pixel = max(per_pixel, bands * width)
    details = 2 * 4 if config.fusion.details else 0
    return config.tiling.tile_size**2 * (per_pixel + details)


def window_has_scenes(
    config: FuseJobConfig, head: pa.Table | None, headers: list[tuple[dict, dict]] | None = None
) -> bool:
    """Whether any of a window's first rows (``head``) is a scene that planning turns into tile rows: a GeoTIFF
    pair whose B image has more than ``tiling.window_min_pixels`` (:func:`head_headers`, or ``headers``)."""
    if not _tiled(config):
        return False
    limit = config.tiling.window_min_pixels
    return any(
        b["height"] * b["width"] > limit for _, b in (head_headers(config, head) if headers is None else headers)
    )


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
