"""Pair discovery: manifests, two sub-folders matched by stem, or one folder with suffix patterns.

Discovery streams. Manifests are read in record batches (pyarrow's CSV streaming reader, Parquet row groups, JSONL
lines); folder listings are paginated and, past ``PairsConfig.spill_threshold`` files, spilled to local disk in hash
partitions that are matched one at a time. The driver therefore holds one batch of keys, plus an 8-byte fingerprint
per pair for duplicate detection, never the whole bucket.

Bad pairs do not raise: a missing partner, an ambiguous stem, a duplicate id, an unknown task or an id that cannot
become an output key becomes a failure record (``status=failed``, ``error_stage=discover``, ``error``) that the
batch job writes to its failure manifest. Only a source that cannot be read at all raises
:class:`~pipeline.errors.PairDiscoveryError`.

Pair ids become output keys (``<output>/<pair_id>.png``), so they pass :func:`sanitize_pair_id`: safe ids are kept
verbatim; anything else is mapped deterministically to a readable slug plus an 8-hex digest of the original.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from maugif_core.config import TASKS
from pipeline import schema as S
from pipeline._discovery import (
    detect_folders,
    iter_folder_groups,
    iter_manifest_rows,
    iter_suffix_groups,
    manifest_kind,
)
from pipeline.errors import OutputKeyError, PairDiscoveryError
from pipeline.io_config import PairsConfig, StorageConfig
from pipeline.storage import get_filesystem

__all__ = [
    "PAIR_SCHEMA",
    "PairBatch",
    "failure_record",
    "iter_pairs",
    "read_pairs",
    "sanitize_pair_id",
]

logger = logging.getLogger(__name__)

PAIR_SCHEMA = pa.schema(
    [
        (S.PAIR_ID, pa.string()),
        (S.URI_A, pa.string()),
        (S.URI_B, pa.string()),
        (S.TASK, pa.string()),
        (S.STATUS, pa.string()),
        (S.ERROR_STAGE, pa.string()),
        (S.ERROR, pa.string()),
    ]
)
"""Schema of discovered rows: ok pairs have ``status=ok`` and null error columns."""

MAX_ID_LENGTH = 200
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}")
_WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))})


def _is_safe(pair_id: str) -> bool:
    return (
        len(pair_id) <= MAX_ID_LENGTH + 9
        and _SAFE_ID.fullmatch(pair_id) is not None
        and ".." not in pair_id
        and not pair_id.endswith(".")
        and pair_id.split(".", 1)[0].upper() not in _WINDOWS_RESERVED
    )


def sanitize_pair_id(raw: Any) -> str:
    """Turn a pair id into one safe path segment for output keys.

    Rules: ids matching ``[A-Za-z0-9][A-Za-z0-9._-]*`` (no ``..``, no trailing dot, not a Windows device name,
    at most 200 characters) are returned unchanged. Any other id is mapped deterministically: path separators
    (``/``, ``\\``), ``.``/``..`` segments and other characters become ``_``, leading ``._-`` are dropped, the slug is
    cut to 200 characters and ``-`` plus 8 hex digits of the BLAKE2b hash of the original id is appended, so two
    different unsafe ids practically never map to one key and the mapping is idempotent. The result never contains
    ``/``, ``\\`` or ``..``, never starts with ``.``, ``_`` (reserved: ``_manifest``, ``_extras``) or ``-``.

    Raises:
        OutputKeyError: ``raw`` is None, empty or only whitespace (nothing to derive a name from).
    """
    if raw is None:
        raise OutputKeyError("pair_id is missing (None): expected a non-empty string")
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not text:
        raise OutputKeyError(f"pair_id {raw!r} is empty: expected a non-empty string")
    if _is_safe(text):
        return text
    segments = [seg for seg in re.split(r"[/\\]+", text) if seg not in ("", ".", "..")]
    slug = _UNSAFE_CHARS.sub("_", "_".join(segments)).lstrip("._-")[:MAX_ID_LENGTH].rstrip(".") or "id"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{slug}-{digest}"


def failure_record(
    pair_id: Any, uri_a: str | None, uri_b: str | None, task: str | None, reason: str, stage: str = S.STAGE_DISCOVER
) -> dict[str, Any]:
    """A failure row with the pair schema (status failed, the stage and the reason)."""
    return {
        S.PAIR_ID: "" if pair_id is None else str(pair_id),
        S.URI_A: uri_a,
        S.URI_B: uri_b,
        S.TASK: task,
        S.STATUS: S.STATUS_FAILED,
        S.ERROR_STAGE: stage,
        S.ERROR: reason,
    }


@dataclass(frozen=True)
class PairBatch:
    """One streamed batch of discovery: good pairs and failure records, both with :data:`PAIR_SCHEMA`."""

    pairs: pa.Table
    failures: pa.Table


class _Batcher:
    """Collects rows, validates ids/tasks, drops duplicates (by fingerprint) and emits :class:`PairBatch` es."""

    def __init__(self, config: PairsConfig, task: str | None) -> None:
        self._config = config
        self._task = task
        self._ok: list[tuple[str, str, str, str]] = []
        self._failed: list[dict[str, Any]] = []
        self._seen = np.empty(0, dtype=np.uint64)  # sorted fingerprints of ids already emitted
        self.n_ok = 0
        self.n_failed = 0

    def fail(self, pair_id: Any, uri_a: str | None, uri_b: str | None, task: str | None, reason: str) -> None:
        self._failed.append(failure_record(pair_id, uri_a, uri_b, task or self._task, reason))

    def add(self, raw_id: Any, uri_a: str | None, uri_b: str | None, row_task: str | None) -> None:
        task = row_task or self._task or self._config.default_task
        if not uri_a or not uri_b:
            side = "uri_a (image A)" if not uri_a else "uri_b (image B)"
            self.fail(raw_id, uri_a, uri_b, task, f"missing partner: {side} is empty")
            return
        if task not in TASKS:
            self.fail(raw_id, uri_a, uri_b, task, f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
            return
        try:
            pair_id = sanitize_pair_id(raw_id)
        except OutputKeyError as e:
            self.fail(raw_id, uri_a, uri_b, task, f"bad pair_id: {e}")
            return
        self._ok.append((pair_id, uri_a, uri_b, task))

    def ready(self) -> bool:
        return len(self._ok) + len(self._failed) >= self._config.batch_size

    def flush(self) -> PairBatch | None:
        ok, failed = self._ok, self._failed
        self._ok, self._failed = [], []
        if self._config.check_duplicates and ok:
            ok = self._drop_duplicates(ok, failed)
        if not ok and not failed:
            return None
        self.n_ok += len(ok)
        self.n_failed += len(failed)
        columns = list(zip(*ok)) if ok else [(), (), (), ()]
        pairs = pa.table(
            {
                S.PAIR_ID: pa.array(columns[0], pa.string()),
                S.URI_A: pa.array(columns[1], pa.string()),
                S.URI_B: pa.array(columns[2], pa.string()),
                S.TASK: pa.array(columns[3], pa.string()),
                S.STATUS: pa.array([S.STATUS_OK] * len(ok), pa.string()),
                S.ERROR_STAGE: pa.nulls(len(ok), pa.string()),
                S.ERROR: pa.nulls(len(ok), pa.string()),
            },
            schema=PAIR_SCHEMA,
        )
        return PairBatch(pairs, pa.Table.from_pylist(failed, schema=PAIR_SCHEMA))

    def _drop_duplicates(self, ok: list[tuple[str, str, str, str]], failed: list[dict[str, Any]]) -> list:
        prints = np.fromiter(
            (int.from_bytes(hashlib.blake2b(row[0].encode(), digest_size=8).digest(), "little") for row in ok),
            dtype=np.uint64,
            count=len(ok),
        )
        _, first = np.unique(prints, return_index=True)
        keep = np.zeros(len(ok), dtype=bool)
        keep[first] = True
        if self._seen.size:
            pos = np.searchsorted(self._seen, prints).clip(max=self._seen.size - 1)
            keep &= self._seen[pos] != prints
        for i in np.flatnonzero(~keep):
            pair_id, uri_a, uri_b, task = ok[i]
            failed.append(
                failure_record(pair_id, uri_a, uri_b, task, f"duplicate pair_id {pair_id!r}: first occurrence kept")
            )
        self._seen = np.union1d(self._seen, prints)
        return [row for row, k in zip(ok, keep) if k]


def _detect_layout(source: str, fs: Any, path: str, config: PairsConfig, task: str | None) -> tuple[str, Any]:
    kind = manifest_kind(source)
    if config.layout == "manifest" or (config.layout == "auto" and kind is not None):
        if kind is None:
            raise PairDiscoveryError(f"manifest {source!r}: expected a .csv, .parquet or .jsonl file")
        return "manifest", kind
    if not fs.isdir(path):
        raise PairDiscoveryError(f"pair source {source!r} is neither a manifest file nor an existing folder")
    if config.layout in ("auto", "folders"):
        found = detect_folders(fs, path, config, task)
        if found is not None:
            return "folders", found
        if config.layout == "folders":
            raise PairDiscoveryError(
                f"no A/B sub-folders in {source!r} for task {task or 'any'}; set pairs.folder_a / pairs.folder_b"
            )
    return "suffix", None


def iter_pairs(
    source: str,
    *,
    task: str | None = None,
    config: PairsConfig | None = None,
    storage: StorageConfig | None = None,
) -> Iterator[PairBatch]:
    """Discover pairs from ``source`` in streamed batches (no Ray needed; used by the driver and benchmarks).

    Args:
        source: A manifest (``.csv``, ``.parquet``, ``.jsonl``) or a folder, as a local path, ``file://`` or
            ``s3://`` URI. Relative URIs inside a manifest are resolved against the manifest's folder.
        task: Task of every pair whose source names none; for folders also selects the default sub-folder names.
        config: Discovery settings.
        storage: Object-storage settings for ``s3://`` sources.

    Yields:
        :class:`PairBatch` es of at most ``config.batch_size`` rows each (pairs plus failures).

    Raises:
        PairDiscoveryError: the source itself cannot be read (missing file, missing columns, no such folder).
    """
    config = config or PairsConfig()
    if task is not None and task not in TASKS:
        raise PairDiscoveryError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    fs, path = get_filesystem(source, storage)
    layout, detail = _detect_layout(source, fs, path, config, task)
    batcher = _Batcher(config, task)
    if layout == "manifest":
        rows = iter_manifest_rows(source, fs, path, detail, config, storage)
    else:
        if layout == "folders":
            folder_a, folder_b, detected_task = detail
            batcher._task = task or detected_task
            groups = iter_folder_groups(source, fs, path, folder_a, folder_b, config, storage)
        else:
            groups = iter_suffix_groups(source, fs, path, config, storage)
        rows = _rows_from_groups(groups)
    logger.info("discovering pairs from %s (layout %s)", source, layout)
    for row in rows:
        if isinstance(row, dict):  # a failure already classified by the source reader
            batcher.fail(row[S.PAIR_ID], row.get(S.URI_A), row.get(S.URI_B), row.get(S.TASK), row[S.ERROR])
        else:
            batcher.add(*row)
        if batcher.ready():
            batch = batcher.flush()
            if batch is not None:
                logger.info("discovered %d pairs, %d failures so far", batcher.n_ok, batcher.n_failed)
                yield batch
    batch = batcher.flush()
    if batch is not None:
        yield batch
    logger.info("discovery of %s done: %d pairs, %d failures", source, batcher.n_ok, batcher.n_failed)


def _rows_from_groups(groups: Iterator[tuple[str, list[str], list[str]]]) -> Iterator[Any]:
    """Matched stem groups → pair rows or failure dicts (missing partner, ambiguous stem)."""
    for name, uris_a, uris_b in groups:
        if len(uris_a) == 1 and len(uris_b) == 1:
            yield (name, uris_a[0], uris_b[0], None)
        elif not uris_a or not uris_b:
            have, lack = ("A", "B") if uris_a else ("B", "A")
            uri = (uris_a or uris_b)[0]
            yield failure_record(
                name,
                uris_a[0] if uris_a else None,
                uris_b[0] if uris_b else None,
                None,
                f"missing partner: {have} image {uri} has no {lack} image with the same stem",
            )
        else:
            yield failure_record(
                name,
                None,
                None,
                None,
                f"ambiguous stem {name!r}: {len(uris_a)} A images {uris_a} and {len(uris_b)} B images {uris_b}",
            )


def read_pairs(
    source: str,
    *,
    task: str | None = None,
    config: PairsConfig | None = None,
    storage: StorageConfig | None = None,
    include_failures: bool = True,
):
    """Discover pairs as a Ray Dataset with :data:`PAIR_SCHEMA` rows.

    Batches are put into the object store as they are discovered, so the driver's heap holds one batch at a time.
    Failure rows (``status=failed``) are included by default so they flow to the failure manifest;
    :func:`pipeline.readers.decode_pair` passes them through untouched.

    Args:
        source, task, config, storage: As for :func:`iter_pairs`.
        include_failures: Keep discovery failures as rows (else they are only logged).

    Returns:
        ``ray.data.Dataset`` with columns ``pair_id, uri_a, uri_b, task, status, error_stage, error``.
    """
    import ray

    refs = []
    for batch in iter_pairs(source, task=task, config=config, storage=storage):
        table = pa.concat_tables([batch.pairs, batch.failures]) if include_failures else batch.pairs
        for row in batch.failures.to_pylist() if not include_failures else ():
            logger.warning("discovery failure %s: %s", row[S.PAIR_ID], row[S.ERROR])
        if table.num_rows:
            refs.append(ray.put(table))
    if not refs:
        return ray.data.from_arrow(PAIR_SCHEMA.empty_table())
    return ray.data.from_arrow_refs(refs)
