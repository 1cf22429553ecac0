"""Pair discovery: manifests, two sub-folders matched by stem, or one folder with suffix patterns.

Discovery streams. Manifests are read in record batches (pyarrow's CSV streaming reader, Parquet row groups,
JSONL lines); folder listings are paginated and, past ``PairsConfig.spill_threshold`` files, spilled to local
disk in hash partitions that are matched one at a time. The driver therefore holds one batch of keys, plus an
8-byte fingerprint per pair for duplicate detection, never the whole bucket.

Bad pairs do not raise: a missing partner, an ambiguous stem, a duplicate id, an unknown task, an id that
cannot become an output key, or a manifest row that cannot be parsed (wrong number of fields, invalid UTF-8,
malformed JSON) becomes a failure record (``status=failed``, ``error_stage=discover``, ``error``) that the batch
job writes to its failure manifest; a manifest row's reason starts with the manifest URI and its line (row for
Parquet) and the row's URIs. Only a source that cannot be read at all raises
:class:`~pipeline.errors.PairDiscoveryError`, or its subclass :class:`~pipeline.errors.ManifestError` for a
manifest unusable as a whole (not UTF-8 text, no header, missing or repeated columns, no data rows); those are
found on the driver while the header and the first batch are read (:func:`check_pair_source`).

Ids are text: every manifest cell is read as a string, so ``NA``, ``null``, ``nan``, ``None`` and ``007`` are
ids like any other; only an empty (or all-blank) id is missing.

Pair ids become output keys (``<output>/<pair_id>.png``), so they pass :func:`sanitize_pair_id`: safe ids are
kept verbatim; anything else is mapped deterministically to a readable slug plus an 8-hex digest of the
original.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from maugif_core.config import TASKS
from pipeline import schema as S
from pipeline.config.io_config import PairsConfig, StorageConfig
from pipeline.errors import ManifestError, OutputKeyError, PairDiscoveryError
from pipeline.io.storage import get_filesystem, iter_files, list_child_dirs, parent_uri, to_uri

__all__ = [
    "PAIR_SCHEMA",
    "PairBatch",
    "check_pair_source",
    "failure_record",
    "iter_pair_windows",
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
        prints = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
                for i in ids.take(pa.array(index)).to_pylist()
            ),
            dtype=np.uint64,
            count=index.size,
        )
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


# ------------------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------------------

TASK_FOLDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "vif": (("vi", "vis", "visible", "rgb"), ("ir", "infrared", "thermal", "lwir")),
    "medical": (("ct", "pet", "spect"), ("mri", "mr")),
    "mff": (("source1", "near", "focus1"), ("source2", "far", "focus2")),
    "mef": (("under", "underexposed", "low"), ("over", "overexposed", "high")),
    "general": (("a",), ("b",)),
    "pansharpen": (("ms", "mul", "multispectral"), ("pan", "panchromatic")),
    "hsi_msi": (("hs", "hsi", "hyperspectral"), ("msi", "ms", "multispectral")),
}
"""Default sub-folder names per task, (A candidates, B candidates), matched case-insensitively. A is the base
image (SPEC §1.1: visible, CT/PET/SPECT, ...) or, for pansharpen / hsi_msi, the low-resolution spectral
image."""

DEFAULT_PATTERNS = (("{stem}-A.*", "{stem}-B.*"), ("{stem}_A.*", "{stem}_B.*"))
"""Suffix patterns tried by the suffix layout (Lytro ``lytro-01-A.jpg``, MEFB ``Arno/Arno_A.png``)."""

MANIFEST_KINDS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_N_PARTITIONS = 64


def manifest_kind(source: str) -> str | None:
    """``"csv"``, ``"parquet"``, ``"jsonl"`` from the source's extension, else None (a folder)."""
    return MANIFEST_KINDS.get(os.path.splitext(source.rstrip("/"))[1].lower())


def _manifest_base(source: str) -> str:
    base = parent_uri(source)
    return os.path.abspath(base) if "://" not in source else base


def _resolve_column(base: str, uris: pa.Array) -> pa.Array:
    """Relative URIs joined to the manifest folder; ``s3://…``, ``file://…``, ``/abs``, blanks unchanged."""
    uris = pc.utf8_trim_whitespace(uris)
    relative = pc.invert(pc.fill_null(pc.match_substring_regex(uris, _ABSOLUTE_RX), True))
    relative = pc.and_(relative, pc.invert(_blank(uris)))
    joined = pc.binary_join_element_wise(base.rstrip("/"), pc.replace_substring_regex(uris, r"^\./", ""), "/")
    return pc.if_else(relative, joined, uris)


def iter_manifest_tables(source: str, fs: Any, path: str, kind: str, config: PairsConfig) -> Iterator[pa.Table]:
    """Raw tables (:data:`RAW_SCHEMA`) of a manifest, streamed batch by batch, URIs resolved.

    Raises:
        ManifestError: the manifest is unusable as a whole (encoding, header, columns, no data rows); raised
            before the first table is yielded.
        PairDiscoveryError: it cannot be opened or read.
    """
    base = _manifest_base(source)
    try:
        handle = fs.open(path, "rb")
    except (OSError, ValueError) as e:
        raise PairDiscoveryError(f"cannot open manifest {source!r}: {e}") from e
    rows = 0
    with handle:
        if kind == "jsonl":
            batches = _jsonl_batches(handle, source, config.batch_size)
        elif kind == "csv":
            batches = _csv_batches(handle, source, config.batch_size)
        else:
            batches = _parquet_batches(handle, source, config.batch_size)
        for table in batches:
            rows += table.num_rows
            for column in (S.URI_A, S.URI_B):
                table = table.set_column(
                    table.schema.get_field_index(column), column, _resolve_column(base, table[column])
                )
            yield table
    if not rows:
        raise ManifestError(
            f"manifest {source!r} has no data rows: expected one row per pair after the header "
            f"({', '.join(S.PAIR_COLUMNS)})"
        )


def _check_columns(names: list[str], source: str) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(
            f"manifest {source!r} repeats column(s) {repeated} in its header: expected each of pair_id, uri_a, "
            f"uri_b (task optional) once; found {names}"
        )
    missing = [c for c in (S.PAIR_ID, S.URI_A, S.URI_B) if c not in names]
    if missing:
        raise ManifestError(
            f"manifest {source!r} lacks column(s) {missing}: expected pair_id, uri_a, uri_b (task optional); "
            f"found {names}"
        )
    return [c for c in S.PAIR_COLUMNS if c in names]


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _text_lines(handle: Any, source: str) -> io.TextIOWrapper:
    """The manifest as UTF-8 text (a UTF-8 BOM is dropped); bytes that are not UTF-8 come through as lone
    surrogates, so one bad row can be reported alone. Another encoding's BOM, or NUL bytes in the first line (UTF-16
    without a BOM), make the manifest unusable."""
    buffered = handle if hasattr(handle, "peek") else io.BufferedReader(handle)
    head = buffered.peek(4)[:4]
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise ManifestError(f"manifest {source!r} is {name} text: expected UTF-8 (save it as UTF-8)")
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _check_text(value: str) -> str | None:
    """None when ``value`` is valid text, else the reason."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 text"
    return None


def _clip(text: str, limit: int = 120) -> str:
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # bad bytes as \xNN
    return text if len(text) <= limit else text[:limit] + "..."


def _csv_batches(handle: Any, source: str, batch_size: int) -> Iterator[pa.Table]:
    """CSV rows with their line numbers; every cell is text (no null literals: ``NA`` is an id).

    A row with the wrong number of fields, invalid UTF-8 or a CSV syntax error becomes a row with ``error`` set
    (id ``line-N``); the header decides the columns.
    """
    text = _text_lines(handle, source)
    reader = csv.reader(text, strict=False)
    header: list[str] | None = None
    try:
        while header is None:
            fields = next(reader)
            header = [f.strip() for f in fields] if any(f.strip() for f in fields) else None
    except StopIteration:
        raise ManifestError(
            f"manifest {source!r} is empty: expected a header line pair_id,uri_a,uri_b[,task] and one row per pair"
        ) from None
    except csv.Error as e:
        raise ManifestError(f"manifest {source!r}: cannot parse its header as CSV ({e})") from e
    if "\x00" in "".join(header) or _check_text("".join(header)):
        raise ManifestError(
            f"manifest {source!r}: its header is not UTF-8 text ({_clip(','.join(header), 60)!r}): expected a "
            "UTF-8 CSV with the header pair_id,uri_a,uri_b[,task]"
        )
    columns = _check_columns(header, source)
    index = {c: header.index(c) for c in columns}
    width = len(header)
    rows: dict[str, list] = {c: [] for c in RAW_SCHEMA.names}
    last = reader.line_num
    while True:
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error as e:
            fields, error = [], f"cannot parse the row as CSV: {e}"
        line, last = last + 1, reader.line_num
        if error is None:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != width:
                error = f"expected {width} fields ({','.join(header)}), got {len(fields)}: {_clip(','.join(fields))!r}"
            else:
                bad = _check_text("".join(fields))
                error = f"{bad}: {_clip(','.join(fields))!r}" if bad else None
        for column in (S.PAIR_ID, S.URI_A, S.URI_B, S.TASK):
            value = None
            if error is None and column in index:
                value = fields[index[column]]
            elif error is not None and column == S.PAIR_ID:
                value = f"line-{line}"
            rows[column].append(value)
        rows[S.ERROR].append(error)
        rows[S.SOURCE_LINE].append(line)
        if len(rows[S.PAIR_ID]) >= batch_size:
            yield _raw_table(rows)
            rows = {c: [] for c in RAW_SCHEMA.names}
    if rows[S.PAIR_ID]:
        yield _raw_table(rows)


def _parquet_batches(handle: Any, source: str, batch_size: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ManifestError(f"manifest {source!r} is not a readable Parquet file: {e}") from e
    columns = _check_columns(parquet.schema_arrow.names, source)
    first = 1
    try:
        for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            n = batch.num_rows
            table = {
                c: batch.column(c).cast(pa.string()) if c in columns else pa.nulls(n, pa.string())
                for c in RAW_SCHEMA.names
                if c != S.SOURCE_LINE
            }
            table[S.SOURCE_LINE] = pa.array(np.arange(first, first + n, dtype=np.int64))
            first += n
            yield pa.table(table, schema=RAW_SCHEMA)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise PairDiscoveryError(f"cannot read parquet manifest {source!r} past row {first - 1}: {e}") from e


def _jsonl_batches(handle: Any, source: str, batch_size: int) -> Iterator[pa.Table]:
    text = _text_lines(handle, source)
    rows: dict[str, list] = {c: [] for c in RAW_SCHEMA.names}
    checked = False
    for number, line in enumerate(text, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            bad = _check_text(line)
            if bad:
                raise ValueError(bad)
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as e:
            record = {S.PAIR_ID: f"line-{number}", S.ERROR: f"{e}: {_clip(line)!r}"}
        else:
            if not checked:
                _check_columns(list(record), source)
                checked = True
            record.pop(S.ERROR, None)
        for column in (*S.PAIR_COLUMNS, S.ERROR):
            value = record.get(column)
            rows[column].append(None if value is None else str(value))
        rows[S.SOURCE_LINE].append(number)
        if len(rows[S.PAIR_ID]) >= batch_size:
            yield _raw_table(rows)
            rows = {c: [] for c in RAW_SCHEMA.names}
    if rows[S.PAIR_ID]:
        yield _raw_table(rows)


def detect_folders(fs: Any, path: str, config: PairsConfig, task: str | None) -> tuple[str, str, str | None] | None:
    """The (folder A, folder B, detected task) of a two-folder layout, or None when there is none."""
    children = list_child_dirs(fs, path)
    by_lower = {name.lower(): name for name in children}
    if config.folder_a is not None:
        a, b = by_lower.get(config.folder_a.lower()), by_lower.get(config.folder_b.lower())
        if a is None or b is None:
            raise PairDiscoveryError(
                f"sub-folders {config.folder_a!r}/{config.folder_b!r} not found in {path!r}; found {sorted(children)}"
            )
        return a, b, None
    for name in [task] if task else list(TASKS):
        names_a, names_b = TASK_FOLDERS[name]
        a = next((by_lower[n] for n in names_a if n in by_lower), None)
        b = next((by_lower[n] for n in names_b if n in by_lower and by_lower[n] != a), None)
        if a is not None and b is not None:
            return a, b, name
    return None


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    before, after = pattern.split("{stem}")
    after_rx = re.escape(after).replace(r"\*", r"[^/]*")
    return re.compile("^" + re.escape(before).replace(r"\*", r"[^/]*") + r"(?P<stem>.+?)" + after_rx + "$", re.I)


class _Matcher:
    """Groups (key, side, name, uri) by key; spills hash partitions to local Parquet past a threshold."""

    def __init__(self, config: PairsConfig) -> None:
        self._threshold = config.spill_threshold
        self._spill_root = config.spill_dir
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._spill: str | None = None
        self._chunks = 0

    def add(self, keys: list[str], sides: list[int], names: list[str], uris: list[str]) -> None:
        if not keys:
            return
        self._buffer.append(pa.table({"key": keys, "side": pa.array(sides, pa.int8()), "name": names, "uri": uris}))
        self._buffered += len(keys)
        if self._buffered > self._threshold:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if self._spill is None:
            self._spill = tempfile.mkdtemp(prefix="maugif-pairs-", dir=self._spill_root)
            logger.info("listing exceeds %d files: spilling partitions to %s", self._threshold, self._spill)
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        parts = np.fromiter((zlib.crc32(k.encode()) % _N_PARTITIONS for k in table["key"].to_pylist()), np.int16)
        for part in np.unique(parts):
            folder = os.path.join(self._spill, f"p{part:02d}")
            os.makedirs(folder, exist_ok=True)
            pq.write_table(table.filter(pa.array(parts == part)), os.path.join(folder, f"{self._chunks}.parquet"))
        self._chunks += 1

    def groups(self) -> Iterator[tuple[str, list[str], list[str]]]:
        """(name, A uris, B uris) per key, sorted by key within each partition."""
        import pyarrow.parquet as pq

        try:
            if self._spill is None:
                tables = [pa.concat_tables(self._buffer)] if self._buffer else []
                self._buffer = []
            else:
                self._flush() if self._buffer else None
                tables = (
                    pa.concat_tables(
                        [
                            pq.read_table(os.path.join(self._spill, d, f))
                            for f in sorted(os.listdir(os.path.join(self._spill, d)))
                        ]
                    )
                    for d in sorted(os.listdir(self._spill))
                )
            for table in tables:
                yield from self._group(table)
        finally:
            if self._spill is not None:
                shutil.rmtree(self._spill, ignore_errors=True)

    @staticmethod
    def _group(table: pa.Table) -> Iterator[tuple[str, list[str], list[str]]]:
        table = table.sort_by([("key", "ascending"), ("side", "ascending"), ("uri", "ascending")])
        current, name, uris = None, "", ([], [])
        columns = (table[c].to_pylist() for c in ("key", "side", "name", "uri"))
        for key, side, row_name, uri in zip(*columns, strict=True):
            if key != current:
                if current is not None:
                    yield name, uris[0], uris[1]
                current, name, uris = key, row_name, ([], [])
            if side == 0 and not uris[0]:
                name = row_name
            uris[side].append(uri)
        if current is not None:
            yield name, uris[0], uris[1]


def _name_parts(root: str, file_path: str) -> tuple[list[str], str, str]:
    """(relative folders, stem, lower-case extension) of a listed file below ``root``."""
    rel = file_path[len(root.rstrip("/")) :].lstrip("/").replace("\\", "/")
    *folders, base = rel.split("/")
    stem, ext = os.path.splitext(base)
    return folders, stem, ext.lower()


def _pair_name(folders: list[str], stem: str) -> str:
    """Pair id from a nested file: ``scene/scene_A.png`` → ``scene``; ``x/y/01.png`` → ``x__y__01``."""
    if folders and folders[-1].lower() == stem.lower():
        folders = folders[:-1]
    return "__".join([*folders, stem])


def iter_folder_groups(
    source: str, fs: Any, path: str, folder_a: str, folder_b: str, config: PairsConfig
) -> Iterator[tuple[str, list[str], list[str]]]:
    """Stem groups of a two-folder layout (stems and nested sub-paths matched case-insensitively)."""
    matcher = _Matcher(config)
    for side, folder in ((0, folder_a), (1, folder_b)):
        root = path.rstrip("/") + "/" + folder
        for page in iter_files(fs, root, recursive=config.recursive):
            keys, names, uris = [], [], []
            for file_path in page:
                folders, stem, ext = _name_parts(root, file_path)
                if ext not in config.extensions or stem.startswith("."):
                    continue
                name = _pair_name(folders, stem)
                keys.append(name.lower())
                names.append(name)
                uris.append(to_uri(file_path, source))
            matcher.add(keys, [side] * len(keys), names, uris)
    yield from matcher.groups()


def iter_suffix_groups(
    source: str, fs: Any, path: str, config: PairsConfig
) -> Iterator[tuple[str, list[str], list[str]]]:
    """Stem groups of a one-folder layout whose file names carry the A/B suffix patterns."""
    patterns = [(config.pattern_a, config.pattern_b)] if config.pattern_a else list(DEFAULT_PATTERNS)
    compiled = [(_pattern_regex(a), _pattern_regex(b)) for a, b in patterns]
    matcher = _Matcher(config)
    ignored = 0
    for page in iter_files(fs, path, recursive=config.recursive):
        keys, sides, names, uris = [], [], [], []
        for file_path in page:
            folders, stem, ext = _name_parts(path, file_path)
            if ext not in config.extensions:
                continue
            base = stem + ext
            for rx_a, rx_b in compiled:
                hit = [(side, m) for side, m in ((0, rx_a.match(base)), (1, rx_b.match(base))) if m]
                if hit:
                    side, match = hit[0]
                    name = _pair_name(folders, match.group("stem"))
                    keys.append(name.lower())
                    sides.append(side)
                    names.append(name)
                    uris.append(to_uri(file_path, source))
                    break
            else:
                ignored += 1
        matcher.add(keys, sides, names, uris)
    if ignored:
        logger.info("%d files in %s match no A/B pattern and were ignored", ignored, source)
    yield from matcher.groups()


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
        task: Task of every pair whose source names none; for folders also selects the default
            sub-folder names.
        config: Discovery settings.
        storage: Object-storage settings for ``s3://`` sources.

    Yields:
        :class:`PairBatch` es of at most ``config.batch_size`` rows each (pairs plus failures).

    Raises:
        PairDiscoveryError: the source itself cannot be read (missing file, no such folder); its subclass
            ManifestError for a manifest unusable as a whole (raised before the first batch is yielded).
    """
    config = config or PairsConfig()
    if task is not None and task not in TASKS:
        raise PairDiscoveryError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    fs, path = get_filesystem(source, storage)
    layout, detail = _detect_layout(source, fs, path, config, task)
    validator = _Validator(config, task)
    if layout == "manifest":
        validator.where = (source, "row" if detail == "parquet" else "line")
        tables = iter_manifest_tables(source, fs, path, detail, config)
    else:
        if layout == "folders":
            folder_a, folder_b, detected_task = detail
            validator.task = task or detected_task
            groups = iter_folder_groups(source, fs, path, folder_a, folder_b, config)
        else:
            groups = iter_suffix_groups(source, fs, path, config)
        tables = _tables_from_groups(groups, config.batch_size)
    logger.info("discovering pairs from %s (layout %s)", source, layout)
    for table in tables:
        for offset in range(0, table.num_rows, config.batch_size):
            batch = validator.process(table.slice(offset, config.batch_size))
            logger.info("discovered %d pairs, %d failures so far", validator.n_ok, validator.n_failed)
            yield batch
    logger.info("discovery of %s done: %d pairs, %d failures", source, validator.n_ok, validator.n_failed)


def check_pair_source(
    source: str,
    *,
    task: str | None = None,
    config: PairsConfig | None = None,
    storage: StorageConfig | None = None,
) -> str:
    """Cheap driver-side check that ``source`` can be discovered, for a pre-flight before Ray starts.

    A manifest is opened and its header and first batch are read (encoding, columns, at least one data row); a
    folder is checked for its layout (sub-folders found, or a folder that exists) without listing every file.

    Returns:
        The layout: ``"manifest"``, ``"folders"`` or ``"suffix"``.

    Raises:
        ManifestError: the manifest is unusable as a whole.
        PairDiscoveryError: the source cannot be read, or the task is unknown.
    """
    config = config or PairsConfig()
    if task is not None and task not in TASKS:
        raise PairDiscoveryError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    fs, path = get_filesystem(source, storage)
    layout, detail = _detect_layout(source, fs, path, config, task)
    if layout == "manifest":
        tables = iter_manifest_tables(source, fs, path, detail, config.model_copy(update={"batch_size": 1024}))
        next(tables, None)
        tables.close()
    return layout


def _tables_from_groups(groups: Iterator[tuple[str, list[str], list[str]]], batch_size: int) -> Iterator[pa.Table]:
    """Matched stem groups → raw tables; missing partners and ambiguous stems carry their error."""
    rows: dict[str, list] = {c: [] for c in RAW_SCHEMA.names}
    for name, uris_a, uris_b in groups:
        error = None
        if len(uris_a) > 1 or len(uris_b) > 1:
            error = f"ambiguous stem {name!r}: {len(uris_a)} A images {uris_a}, {len(uris_b)} B images {uris_b}"
        elif not uris_a or not uris_b:
            have, lack = ("A", "B") if uris_a else ("B", "A")
            uri = (uris_a or uris_b)[0]
            error = f"missing partner: {have} image {uri} has no {lack} image with the same stem"
        for column, value in (
            (S.PAIR_ID, name),
            (S.URI_A, uris_a[0] if len(uris_a) == 1 else None),
            (S.URI_B, uris_b[0] if len(uris_b) == 1 else None),
            (S.TASK, None),
            (S.ERROR, error),
        ):
            rows[column].append(value)
        if len(rows[S.PAIR_ID]) >= batch_size:
            yield _raw_table(rows)
            rows = {c: [] for c in RAW_SCHEMA.names}
    if rows[S.PAIR_ID]:
        yield _raw_table(rows)


def read_pairs(
    source: str,
    *,
    task: str | None = None,
    config: PairsConfig | None = None,
    storage: StorageConfig | None = None,
    include_failures: bool = True,
    block_rows: int = 128,
):
    """Discover pairs as a Ray Dataset with :data:`PAIR_SCHEMA` rows.

    Batches are put into the object store as they are discovered, so the driver's heap holds one batch at a
    time. Failure rows (``status=failed``) are included by default so they flow to the failure manifest;
    :func:`pipeline.io.readers.decode_pair` passes them through untouched.

    Args:
        source, task, config, storage: As for :func:`iter_pairs`.
        include_failures: Keep discovery failures as rows (else they are only logged).
        block_rows: Rows per dataset block. Each block is decoded by one task, so small blocks spread decoding
            over the cluster and keep the stream flowing; pair rows are ~100 bytes, so even 1M pairs at 128 rows
            per block are only ~8k object refs.

    Returns:
        ``ray.data.Dataset`` with columns ``pair_id, uri_a, uri_b, task, status, error_stage, error``.
    """
    windows = iter_pair_windows(
        source,
        task=task,
        config=config,
        storage=storage,
        include_failures=include_failures,
        block_rows=block_rows,
        window_pairs=None,
    )
    return next(iter(windows))[0]


def iter_pair_windows(
    source: str,
    *,
    task: str | None = None,
    config: PairsConfig | None = None,
    storage: StorageConfig | None = None,
    include_failures: bool = True,
    block_rows: int = 128,
    window_pairs: int | None = 100_000,
) -> Iterator[tuple[Any, int]]:
    """Discover pairs as a sequence of Ray Datasets ("windows") of about ``window_pairs`` rows each.

    Ray Data keeps a little driver memory per input block for the life of an execution, so one Dataset over
    millions of pairs would make the driver grow with the input. Running the job window by window bounds the
    driver by the window size: only the current window's block references are held. A window ends at the
    first discovery batch boundary past ``window_pairs`` rows; ``None`` puts everything into one window.

    Yields:
        ``(dataset, rows)`` per window; a source with no pairs yields one empty dataset.
    """
    import ray

    refs: list[Any] = []
    rows = 0
    yielded = False
    for batch in iter_pairs(source, task=task, config=config, storage=storage):
        table = pa.concat_tables([batch.pairs, batch.failures]) if include_failures else batch.pairs
        for row in batch.failures.to_pylist() if not include_failures else ():
            logger.warning("discovery failure %s: %s", row[S.PAIR_ID], row[S.ERROR])
        for offset in range(0, table.num_rows, block_rows):
            refs.append(ray.put(table.slice(offset, block_rows)))
        rows += table.num_rows
        if window_pairs is not None and rows >= window_pairs:
            yield ray.data.from_arrow_refs(refs), rows
            yielded = True
            refs, rows = [], 0
    if refs:
        yield ray.data.from_arrow_refs(refs), rows
    elif not yielded:
        yield ray.data.from_arrow(PAIR_SCHEMA.empty_table()), 0
