"""Workers give their freed heap back between tasks (pipeline.fuse.memory, issue 14)."""

from __future__ import annotations

import platform

import numpy as np
import psutil
import pytest

from pipeline.fuse.memory import release_heap

glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc's")
def test_release_heap_returns_freed_heap_pages_to_the_os():
    # 96 MiB in 16 KiB buffers (below glibc's mmap threshold: they come from the heap), the last one kept alive so
    # the heap's top cannot shrink on its own: the freed holes stay resident until the heap is trimmed.
    buffers = [np.ones(2048) for _ in range(6144)]
    keep = np.ones(2048)
    process = psutil.Process()
    del buffers
    before = process.memory_info().rss
    assert release_heap() is True
    after = process.memory_info().rss
    assert before - after > 48 * 2**20, (before, after)
    assert keep.sum() == 2048
