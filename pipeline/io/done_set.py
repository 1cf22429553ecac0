"""A compact set of done pair ids for resume: one sorted Arrow string array, not a Python ``set``.

A rerun of a job with a million finished pairs holds their ids for the whole run. As a Python ``set`` of ``str``
that is about 100 bytes per id (a string object plus its hash slot); as a sorted Arrow array it is the id's bytes
plus a 4-byte offset (14 MB for a million ids like ``pair000000``). Membership of a whole batch of ids is one
``pyarrow.compute.is_in`` call (it hashes the done ids once per call: call it per discovery batch, not per row);
membership of one id is a binary search.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DoneSet"]

_ITER_CHUNK = 65_536


class DoneSet(Collection[str]):
    """Pair ids, sorted and unique, in one Arrow array.

    Args:
        ids: the ids; sorted and deduplicated here unless ``sorted_unique`` says they already are.
        sorted_unique: ``ids`` is already sorted ascending without duplicates (skips the sort).
    """

    __slots__ = ("_ids",)

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
        return pc.fill_null(pc.is_in(ids, value_set=self._ids), False)

    def union(self, other: Iterable[str]) -> DoneSet:
        """A new set with the ids of both."""
        extra = other.ids if isinstance(other, DoneSet) else pa.array(list(other), type=pa.string())
        if not len(extra):
            return self
        return DoneSet(pa.concat_arrays([self._ids, extra]))
