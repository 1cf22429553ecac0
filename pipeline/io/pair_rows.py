"""Pair rows: the pair schema, pair ids made safe as output keys, and the validation that turns a bad row into a
failure record (missing partner, duplicate id, unknown task, unsafe id)."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from maugif_core.config import TASKS
from pipeline import schema as S
from pipeline.config.io_config import PairsConfig
from pipeline.errors import OutputKeyError
from pipeline.io.done_set import fingerprints

__all__ = [
    "MAX_ID_LENGTH",
    "PAIR_SCHEMA",
    "PairBatch",
    "failure_record",
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
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
)


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
    (``/``, ``\\``), ``.``/``..`` segments and other characters become ``_``, leading ``._-`` are dropped, the
    slug is cut to 200 characters and ``-`` plus 8 hex digits of the BLAKE2b hash of the original id is
    appended, so two different unsafe ids practically never map to one key and the mapping is idempotent. The
    result never contains ``/``, ``\\`` or ``..``, never starts with ``.``, ``_`` (reserved: ``_manifest``,
    ``_extras``) or ``-``.

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
    pair_id: Any,
    uri_a: str | None,
    uri_b: str | None,
    task: str | None,
    reason: str,
    stage: str = S.STAGE_DISCOVER,
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


RAW_SCHEMA = pa.schema([(c, pa.string()) for c in (*S.PAIR_COLUMNS, S.ERROR)] + [(S.SOURCE_LINE, pa.int64())])
"""Rows as sources yield them, before validation (``error`` set for rows the source already rejected;
``source_line`` the manifest line, or Parquet row, a row came from, null for folder listings)."""

_RESERVED_RX = r"(?i)^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\.|$)"
_ABSOLUTE_RX = r"^([A-Za-z][A-Za-z0-9+.-]*://|/|[A-Za-z]:)"


def _raw_table(rows: dict[str, list]) -> pa.Table:
    """Rows as column lists (a column left empty is null throughout) → a :data:`RAW_SCHEMA` table."""
    n = len(rows[S.PAIR_ID])
    return pa.table({f.name: pa.array(rows.get(f.name) or [None] * n, f.type) for f in RAW_SCHEMA})


def _blank(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), True)


class _FingerprintSet:
    """A set of 64-bit fingerprints kept as a few sorted runs (sizes roughly doubling, as in an LSM tree).

    8 bytes per member; adding a batch sorts only that batch and merges runs of similar size, so memory is not
    reallocated wholesale on every batch (which fragments the heap) and lookups cost O(log n) per run.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def contains(self, values: np.ndarray) -> np.ndarray:
        found = np.zeros(values.size, dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, values).clip(max=run.size - 1)
            found |= run[pos] == values
        return found

    def add(self, sorted_unique: np.ndarray) -> None:
        if not sorted_unique.size:
            return
        self._runs.append(sorted_unique)
        while len(self._runs) > 1 and self._runs[-2].size <= 2 * self._runs[-1].size:
            last = self._runs.pop()
            merged = np.concatenate((self._runs.pop(), last))
            merged.sort(kind="stable")
            self._runs.append(merged)


class _Validator:
    """Vectorised checks of raw rows: partners, task, id sanitising, duplicates (by 64-bit fingerprint).

    Arrow compute does the per-row work, so a batch costs a few Arrow buffers rather than Python objects per
    row; only unsafe ids (rare) and the fingerprints touch Python.
    """

    def __init__(self, config: PairsConfig, task: str | None) -> None:
        self.config = config
        self.task = task
        self._seen = _FingerprintSet()
        self.where: tuple[str, str] | None = None  # (manifest URI, "line" or "row") once the source is a manifest
        self.n_ok = 0
        self.n_failed = 0

    def process(self, raw: pa.Table) -> PairBatch:
        """Validate one raw table (:data:`RAW_SCHEMA`) into pairs and failure records."""
        raw = raw.select(RAW_SCHEMA.names).cast(RAW_SCHEMA).combine_chunks()
        task = pc.if_else(
            _blank(raw[S.TASK]), self.task or self.config.default_task, pc.utf8_trim_whitespace(raw[S.TASK])
        )
        error = raw[S.ERROR]
        for column, text in ((S.URI_A, "uri_a (image A)"), (S.URI_B, "uri_b (image B)")):
            missing = pc.and_(pc.is_null(error), _blank(raw[column]))
            error = pc.if_else(missing, f"missing partner: {text} is empty", error)
        unknown = pc.and_(pc.is_null(error), pc.invert(pc.is_in(task, value_set=pa.array(TASKS))))
        reason = pc.binary_join_element_wise("unknown task '", task, f"': expected one of {', '.join(TASKS)}", "")
        error = pc.if_else(unknown, reason, error)
        ids, id_error = _sanitize_column(raw[S.PAIR_ID])
        error = pc.coalesce(error, id_error)
        if self.config.check_duplicates:
            error = self._duplicates(ids, error)
        failed = pc.is_valid(error)
        given_ids = pc.fill_null(raw[S.PAIR_ID], "")  # failure records keep the id the source gave
        table = pa.table(
            {
                S.PAIR_ID: pc.if_else(failed, given_ids, ids),
                S.URI_A: raw[S.URI_A],
                S.URI_B: raw[S.URI_B],
                S.TASK: task,
                S.STATUS: pc.if_else(failed, S.STATUS_FAILED, S.STATUS_OK),
                S.ERROR_STAGE: pc.if_else(failed, S.STAGE_DISCOVER, pa.scalar(None, pa.string())),
                S.ERROR: error,
            },
            schema=PAIR_SCHEMA,
        )
        pairs, failures = table.filter(pc.invert(failed)), table.filter(failed)
        if self.where is not None and failures.num_rows:
            failures = self._locate(failures, raw[S.SOURCE_LINE].filter(failed))
        self.n_ok += pairs.num_rows
        self.n_failed += failures.num_rows
        return PairBatch(pairs, failures)

    def _locate(self, failures: pa.Table, lines: pa.ChunkedArray) -> pa.Table:
        """Prefix each manifest row's reason with the manifest, its line and its URIs (failures are few)."""
        source, unit = self.where or ("", "line")
        errors = []
        for line, uri_a, uri_b, error in zip(
            lines.to_pylist(),
            failures[S.URI_A].to_pylist(),
            failures[S.URI_B].to_pylist(),
            failures[S.ERROR].to_pylist(),
            strict=True,
        ):
            if line is None:
                errors.append(error)
                continue
            uris = ", ".join(f"{name} {uri}" for name, uri in (("uri_a", uri_a), ("uri_b", uri_b)) if uri)
            errors.append(f"manifest {source} {unit} {line}{f' ({uris})' if uris else ''}: {error}")
        return failures.set_column(failures.schema.get_field_index(S.ERROR), S.ERROR, pa.array(errors, pa.string()))

    def _duplicates(self, ids: pa.Array, error: pa.Array) -> pa.Array:
        """``error`` plus "duplicate" for ids seen before (this batch or earlier); the first is kept."""
        index = np.flatnonzero(np.asarray(pc.is_null(error).to_numpy(zero_copy_only=False), dtype=bool))
        if not index.size:
            return error
        prints = fingerprints(ids.take(pa.array(index)))
        unique, first, inverse = np.unique(prints, return_index=True, return_inverse=True)
        seen_before = self._seen.contains(unique)
        keep = np.zeros(index.size, dtype=bool)
        keep[first] = True
        keep &= ~seen_before[inverse.reshape(-1)]
        self._seen.add(unique[~seen_before])
        if keep.all():
            return error
        dup = np.zeros(len(ids), dtype=bool)
        dup[index[~keep]] = True
        message = pc.binary_join_element_wise("duplicate pair_id '", ids, "': first occurrence kept", "")
        return pc.if_else(pa.array(dup), message, error)


def _sanitize_column(raw_ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Vectorised :func:`sanitize_pair_id` → (ids, errors); only unsafe ids go through Python."""
    trimmed = pc.utf8_trim_whitespace(raw_ids)
    unsafe = pc.or_(
        pc.or_(
            pc.invert(pc.match_substring_regex(trimmed, r"^[A-Za-z0-9][A-Za-z0-9._-]*$")),
            pc.match_substring(trimmed, ".."),
        ),
        pc.or_(
            pc.or_(pc.ends_with(trimmed, "."), pc.match_substring_regex(trimmed, _RESERVED_RX)),
            pc.greater(pc.utf8_length(trimmed), MAX_ID_LENGTH + 9),
        ),
    )
    unsafe = np.asarray(pc.fill_null(unsafe, True).to_numpy(zero_copy_only=False), dtype=bool)
    errors = pa.nulls(len(raw_ids), pa.string())
    if not unsafe.any():
        return trimmed, errors
    ids, messages = trimmed.to_pylist(), [None] * len(raw_ids)
    for i in np.flatnonzero(unsafe):
        try:
            ids[i] = sanitize_pair_id(raw_ids[int(i)].as_py())
        except OutputKeyError as e:
            ids[i], messages[i] = None, f"bad pair_id: {e}"
    return pa.array(ids, pa.string()), pa.array(messages, pa.string())
