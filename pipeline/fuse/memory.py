"""Giving a worker's freed heap back to the operating system between tasks and batches.

A Ray worker process outlives its task: the pooled workers that ran a scene's planning (a decimated read, a model,
BatchNorm statistics) or a write task (COG encoding), and the fusion actors between batches, keep the pages glibc's
allocator has freed but not returned, so the job's resident memory grew with the number of tiles a process had
handled rather than with what it holds (issue 14). :func:`release_heap` asks glibc to return them
(``malloc_trim(0)``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

__all__ = ["release_heap"]

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
