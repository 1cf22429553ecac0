"""A compact set of done pair ids for resume: one sorted Arrow string array, not a Python ``set``.

A rerun of a job with a million finished pairs holds their ids for the whole run. As a Python ``set`` of ``str``
that is about 100 bytes per id (a string object plus its hash slot); as a sorted Arrow array it is the id's bytes
plus a 4-byte offset (14 MB for a million ids like ``pair000000``). Membership of one id is a binary search.

Membership of a whole batch is vectorised over an index built once: the done ids' 64-bit fingerprints, sorted
(12 more bytes per id). A batch's fingerprints are looked up with ``numpy.searchsorted`` and every hit is confirmed
by comparing the ids themselves, so the answer is exact; a fingerprint collision falls back to the binary search.
``pyarrow.compute.is_in`` would re-hash all the done ids on every call: 0.21 s per 16k-row batch against a million
done ids, which makes a resume quadratic in the job's size (benchmarks/RESULTS.md, issue 18).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DoneSet", "fingerprints"]

_ITER_CHUNK = 65_536
_INDEXED_MIN = 4_096
"""Below this many done ids ``pc.is_in`` (which hashes them per call) is as cheap as building the index."""


def fingerprints(ids: pa.Array) -> np.ndarray:
    """The 64-bit fingerprint (blake2b, little-endian) of each id's UTF-8 bytes, as ``uint64``; a null id gives 0."""
    return np.fromiter(
        (
            0 if i is None else int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids.to_pylist()
        ),
        dtype=np.uint64,
        count=len(ids),
    )


class DoneSet(Collection[str]):
    """Pair ids, sorted and unique, in one Arrow array.

    Args:
        ids: the ids; sorted and deduplicated here unless ``sorted_unique`` says they already are.
        sorted_unique: ``ids`` is already sorted ascending without duplicates (skips the sort).
    """

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: pa.Array | pa.ChunkedArray | Iterable[str] = (), *, sorted_unique: bool = False) -> None:
        if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = pa.array(list(ids), type=pa.string())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks() if ids.num_chunks else pa.array([], type=ids.type)
        if ids.type != pa.string():
            ids = ids.cast(pa.string())
        if ids.null_count:
            ids = ids.drop_null()
        if not sorted_unique and len(ids):
            ids = pc.unique(ids)
            ids = ids.take(pc.sort_indices(ids))
        self._ids: pa.StringArray = ids
        self._index: tuple[np.ndarray, np.ndarray] | None = None  # sorted fingerprints, position of each in _ids

    @property
    def ids(self) -> pa.StringArray:
        """The ids as a sorted Arrow string array."""
        return self._ids

    @property
    def nbytes(self) -> int:
        """Bytes held by the ids."""
        return self._ids.nbytes

    def __len__(self) -> int:
        return len(self._ids)

    def __bool__(self) -> bool:
        return len(self._ids) > 0

    def __contains__(self, pair_id: object) -> bool:
        if not isinstance(pair_id, str):
            return False
        lo, hi = 0, len(self._ids)
        while lo < hi:  # bisect_left over the sorted array, reading one id per step
            mid = (lo + hi) // 2
            if self._ids[mid].as_py() < pair_id:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(self._ids) and self._ids[lo].as_py() == pair_id

    def __iter__(self) -> Iterator[str]:
        for offset in range(0, len(self._ids), _ITER_CHUNK):
            yield from self._ids.slice(offset, _ITER_CHUNK).to_pylist()

    def __repr__(self) -> str:
        return f"DoneSet({len(self)} ids, {self.nbytes / 2**20:.1f} MiB)"

    def contains_each(self, ids: pa.Array | pa.ChunkedArray | list[str]) -> pa.BooleanArray:
        """Whether each of ``ids`` is in the set (False for a null id), in one vectorised call."""
        if isinstance(ids, list):
            ids = pa.array(ids, type=pa.string())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks() if ids.num_chunks else pa.array([], type=pa.string())
        if not len(self._ids) or not len(ids):
            return pa.array([False] * len(ids), type=pa.bool_())
        if len(self._ids) < _INDEXED_MIN:
            return pc.fill_null(pc.is_in(ids, value_set=self._ids), False)
        prints, where = self._fingerprint_index()
        probe = fingerprints(ids)
        pos = np.searchsorted(prints, probe).clip(max=len(prints) - 1)
        hit = (prints[pos] == probe) & np.asarray(ids.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        found = np.zeros(len(ids), dtype=bool)
        rows = np.flatnonzero(hit)
        if rows.size:
            candidates = self._ids.take(pa.array(where[pos[rows]]))
            same = np.asarray(pc.equal(candidates, ids.take(pa.array(rows))).to_numpy(zero_copy_only=False), bool)
            found[rows[same]] = True
            for row in rows[~same]:  # a fingerprint shared by two different ids: the exact binary search decides
                found[row] = ids[int(row)].as_py() in self
        return pa.array(found, type=pa.bool_())

    def _fingerprint_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The done ids' fingerprints sorted, and each one's position in the sorted ids (built on first use)."""
        if self._index is None:
            prints = np.concatenate(
                [fingerprints(self._ids.slice(o, _ITER_CHUNK)) for o in range(0, len(self._ids), _ITER_CHUNK)]
            )
            order = np.argsort(prints, kind="stable")
            where = order.astype(np.uint32) if len(order) < 2**32 else order
            self._index = (prints[order], where)
        return self._index

    def union(self, other: Iterable[str]) -> DoneSet:
        """A new set with the ids of both."""
        extra = other.ids if isinstance(other, DoneSet) else pa.array(list(other), type=pa.string())
        if not len(extra):
            return self
        return DoneSet(pa.concat_arrays([self._ids, extra]))
