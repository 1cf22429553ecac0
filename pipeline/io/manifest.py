"""The job manifest: one Parquet row per pair and run under ``<output>/_manifest/``, and resuming from it.

Every run appends its own part files, ``_manifest/part-<run_id>-<writer>-<seq>.parquet``: names are
deterministic per run and writer (a retried Ray task rewrites its own part instead of adding a duplicate), and
each part is written atomically. Besides the six columns of :data:`pipeline.schema.MANIFEST_COLUMNS`, rows
carry ``run_id`` and ``written_at`` (UTC) so that the latest status of a pair wins when several runs recorded
it, and ``extras``: JSON object text with what the pair's own fit estimated (a pansharpening or HS–MS scene's
sensor registration and MTF gain, see :attr:`maugif_core.multiplicative.MultiplicativeFusion.details`), null
for other pairs. Parts written before ``extras`` existed read with a null there.
A rerun asks :func:`done_ids` which pairs are already ``ok`` and processes only the rest.

Reading goes through ``pyarrow.dataset`` with column projection, so millions of rows cost a few columns of
Arrow memory, not Python objects per row; the done ids come back as a :class:`~pipeline.io.done_set.DoneSet`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from pipeline.errors import ConfigError, PipelineError
from pipeline.io.done_set import DoneSet
from pipeline.io.fsutil import atomic_write_bytes, filesystem_for, is_local, join_key
from pipeline.schema import (
    ERROR,
    ERROR_STAGE,
    EXTRAS,
    MANIFEST_DIR,
    OUTPUT_URI,
    PAIR_ID,
    SECONDS,
    STATUS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
)

__all__ = [
    "MANIFEST_SCHEMA",
    "RUN_ID",
    "WRITTEN_AT",
    "ManifestWriter",
    "done_ids",
    "done_pair_ids",
    "latest_ids",
    "latest_status",
    "make_record",
    "new_run_id",
    "read_manifest",
    "run_failures",
]

logger = logging.getLogger(__name__)

# Extra manifest columns (candidates for pipeline.schema).
from pipeline.schema import RUN_ID, WRITTEN_AT  # noqa: E402

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field(PAIR_ID, pa.string(), nullable=False),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(OUTPUT_URI, pa.string()),
        pa.field(ERROR_STAGE, pa.string()),
        pa.field(ERROR, pa.string()),
        pa.field(SECONDS, pa.float64()),
        pa.field(RUN_ID, pa.string(), nullable=False),
        pa.field(WRITTEN_AT, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(EXTRAS, pa.string()),
    ]
)
_STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)


def new_run_id() -> str:
    """A run id that sorts chronologically: ``YYYYmmddTHHMMSSZ-<8 hex>``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def make_record(
    pair_id: str,
    status: str,
    *,
    output_uri: str | None = None,
    error_stage: str | None = None,
    error: str | None = None,
    seconds: float | None = None,
    extras: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One manifest row (without ``run_id``/``written_at``, which the writer adds).

    Args:
        extras: plain values the pair's fit estimated (e.g. ``{"sensor_shift_y": 1.5, "sensor_gain": 0.3,
            ...}``), stored as JSON object text in the ``extras`` column (NaN becomes null); None or empty: null.

    Raises:
        ValueError: an unknown status.
    """
    if status not in _STATUSES:
        raise ValueError(f"manifest status must be one of {_STATUSES}; got {status!r} for pair {pair_id!r}")
    return {
        PAIR_ID: pair_id,
        STATUS: status,
        OUTPUT_URI: _text(output_uri),
        ERROR_STAGE: _text(error_stage),
        ERROR: _text(error),
        SECONDS: None if seconds is None or seconds != seconds else float(seconds),
        EXTRAS: _extras_text(extras),
    }


def _extras_text(extras: Mapping[str, Any] | None) -> str | None:
    """``extras`` as JSON object text (sorted keys; NaN and infinities as null), or None when there are none."""
    if not extras:
        return None

    def plain(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
            return plain(value.item())
        return value

    return json.dumps({str(k): plain(v) for k, v in extras.items()}, sort_keys=True, allow_nan=False)


def _text(value: Any) -> str | None:
    """A string field as text, or None for missing values (None, or NaN where a block went through pandas)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, str) else str(value)


class ManifestWriter:
    """Buffers manifest rows and flushes them as atomic Parquet parts.

    Args:
        output_uri: the job's output location; parts go to ``<output_uri>/_manifest/``.
        run_id: identifier of this run (see :func:`new_run_id`).
        writer: identifier of this writer within the run (``"driver"``, ``"task000003"``); with ``run_id``
            and a sequence number it makes the part names deterministic.
        flush_rows: rows buffered before a part is written.

    Example:
        >>> with ManifestWriter("outputs", run_id) as manifest:  # doctest: +SKIP
        ...     manifest.add(make_record("scene-1", "ok", output_uri="outputs/scene-1.png", seconds=0.4))
    """

    def __init__(self, output_uri: str, run_id: str, *, writer: str = "driver", flush_rows: int = 50_000) -> None:
        for name, value in (("run_id", run_id), ("writer", writer)):
            if not value or "/" in value or value.startswith("."):
                raise ConfigError(f"manifest {name} must be a non-empty name without '/'; got {value!r}")
        if flush_rows <= 0:
            raise ConfigError(f"flush_rows must be positive; got {flush_rows}")
        self.output_uri = output_uri
        self.run_id = run_id
        self.writer = writer
        self.flush_rows = flush_rows
        self.parts: list[str] = []
        self.rows_written = 0
        self._buffer: list[dict[str, Any]] = []
        self._fs = None

    def add(self, record: Mapping[str, Any]) -> None:
        """Buffer one row (see :func:`make_record`); flushes a part when the buffer is full."""
        row = dict(record)
        row[RUN_ID] = self.run_id
        row[WRITTEN_AT] = dt.datetime.now(dt.timezone.utc)
        self._buffer.append(row)
        if len(self._buffer) >= self.flush_rows:
            self.flush()

    def add_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Buffer several rows."""
        for record in records:
            self.add(record)

    def flush(self) -> str | None:
        """Write the buffered rows as one part; return its URI (None when the buffer was empty)."""
        if not self._buffer:
            return None
        table = pa.Table.from_pylist(self._buffer, schema=MANIFEST_SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        name = f"part-{self.run_id}-{self.writer}-{len(self.parts):05d}.parquet"
        uri = join_key(self.output_uri, MANIFEST_DIR, name)
        if self._fs is None:
            self._fs, _ = filesystem_for(self.output_uri)
        atomic_write_bytes(uri, sink.getvalue(), self._fs)
        self.parts.append(uri)
        self.rows_written += table.num_rows
        self._buffer.clear()
        logger.debug("manifest part %s: %d rows", uri, table.num_rows)
        return uri

    def close(self) -> None:
        """Flush what is left."""
        self.flush()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _manifest_files(output_uri: str) -> tuple[Any, list[str]]:
    """The filesystem of ``output_uri`` and its committed manifest part files, sorted (no in-flight temp objects)."""
    fs, root = filesystem_for(output_uri)
    directory = posixpath.join(root, MANIFEST_DIR)
    if not is_local(fs):
        fs.invalidate_cache(directory)  # parts may have been written by other processes
    if not fs.exists(directory):
        return fs, []
    return fs, sorted(p for p in fs.find(directory) if p.endswith(".parquet"))


def _open_dataset(output_uri: str, fs: Any, files: list[str]) -> pds.Dataset:
    try:
        return pds.dataset(files, schema=MANIFEST_SCHEMA, format="parquet", filesystem=fs)
    except (OSError, pa.ArrowInvalid) as e:
        raise PipelineError(f"cannot open the manifest under {output_uri}/{MANIFEST_DIR}: {e}") from e


def _manifest_dataset(output_uri: str) -> pds.Dataset | None:
    fs, files = _manifest_files(output_uri)
    return _open_dataset(output_uri, fs, files) if files else None


_PARTS_PER_READ = 256
"""Manifest parts read per dataset scan by :func:`done_ids`: a scan over thousands of small parts at once holds
per-fragment buffers that cost several times the rows read (15,629 parts of a 1M-pair job: +600 MB for 54 MB of
columns); groups of 256 parts keep that near the rows' own size (benchmarks/RESULTS.md, issue 18)."""


def read_manifest(output_uri: str, columns: list[str] | None = None) -> pa.Table:
    """Every manifest row of every run at ``output_uri`` (an empty table when there is none yet).

    Args:
        output_uri: the job's output location.
        columns: columns to read (all of :data:`MANIFEST_SCHEMA` when None).

    Returns:
        A ``pyarrow.Table`` with :data:`MANIFEST_SCHEMA` (or the requested columns).
    """
    dataset = _manifest_dataset(output_uri)
    schema = MANIFEST_SCHEMA if columns is None else pa.schema([MANIFEST_SCHEMA.field(c) for c in columns])
    if dataset is None:
        return schema.empty_table()
    return dataset.to_table(columns=columns)


def latest_status(output_uri: str) -> pa.Table:
    """The latest manifest row of every pair (by ``written_at``, then ``run_id``).

    Returns:
        One row per pair_id, sorted by pair_id, with all manifest columns.
    """
    return _latest_rows(read_manifest(output_uri))


def _latest_rows(table: pa.Table) -> pa.Table:
    """The latest row of every pair in ``table`` (which has at least pair_id, written_at and run_id)."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([(PAIR_ID, "ascending"), (WRITTEN_AT, "ascending"), (RUN_ID, "ascending")])
    ids = table.column(PAIR_ID)
    # The last row of each run of equal pair_ids is the latest.
    is_last = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1))
    keep = pa.concat_arrays([is_last.combine_chunks(), pa.array([True])])
    return table.filter(keep)


def _scan_groups(output_uri: str, columns: list[str], filter: Any = None) -> Iterator[pa.Table]:
    """The manifest's rows (``columns``, rows matching ``filter``), one table per :data:`_PARTS_PER_READ` parts."""
    fs, files = _manifest_files(output_uri)
    for start in range(0, len(files), _PARTS_PER_READ):
        yield _open_dataset(output_uri, fs, files[start : start + _PARTS_PER_READ]).to_table(
            columns=columns, filter=filter
        )


def latest_ids(
    output_uri: str, flag: Callable[[pa.Table], pa.Array] | None = None, columns: Sequence[str] = ()
) -> pa.Array:
    """Sorted pair ids whose latest manifest row (by ``written_at``, then ``run_id``) satisfies ``flag``.

    Streams the parts in groups of :data:`_PARTS_PER_READ`, keeping per row only the pair id, the flag, its time
    and its run's rank (never the URIs and error texts), then keeps each pair's latest row: a million rows cost
    ~30 MB of columns, whatever the manifest holds besides.

    Args:
        output_uri: the job's output location.
        flag: from a group's table (``pair_id``, ``status`` and ``columns``), a boolean array: whether the row
            counts (null counts as false); default: the row's status is ``ok``.
        columns: manifest columns ``flag`` needs besides ``pair_id`` and ``status``.
    """
    flag = flag or (lambda t: pc.equal(t.column(STATUS), STATUS_OK))
    groups = []
    for part in _scan_groups(output_uri, list(dict.fromkeys([PAIR_ID, STATUS, WRITTEN_AT, RUN_ID, *columns]))):
        groups.append(
            pa.table(
                {
                    PAIR_ID: part.column(PAIR_ID),
                    "flag": pc.fill_null(flag(part), False),
                    WRITTEN_AT: part.column(WRITTEN_AT),
                    RUN_ID: pc.dictionary_encode(part.column(RUN_ID)),
                }
            ).combine_chunks()
        )
        del part
    table = pa.concat_tables(groups).combine_chunks() if groups else None
    del groups
    if table is None or table.num_rows == 0:
        return pa.array([], type=pa.string())
    runs = table.column(RUN_ID).chunk(0)  # one chunk, its dictionaries unified by combine_chunks
    # Sorting needs a plain column: each row's run as its rank among the run ids (run ids sort by their start time).
    order = pc.sort_indices(runs.dictionary)
    rank = pc.sort_indices(order)  # the inverse permutation: rank[i] = position of dictionary entry i
    table = table.set_column(3, RUN_ID, pc.take(rank, runs.indices))
    latest = _latest_rows(table)
    del table
    return latest.filter(latest.column("flag")).column(PAIR_ID).combine_chunks()


def done_ids(output_uri: str) -> DoneSet:
    """Pair ids whose latest status at ``output_uri`` is ``ok`` (what a rerun skips), as a compact :class:`DoneSet`
    (streamed by :func:`latest_ids`; the result holds each done id's bytes once)."""
    return DoneSet(latest_ids(output_uri), sorted_unique=True)


def done_pair_ids(output_uri: str) -> set[str]:
    """Pair ids whose latest status at ``output_uri`` is ``ok``, as a Python ``set`` (:func:`done_ids` is the
    compact form a rerun uses)."""
    return set(done_ids(output_uri))


def _reason(error: str | None) -> str:
    """The kind of a failure, for grouping: its error type when the text names one, else the text with URIs,
    quoted values and numbers blanked, up to the first ``;`` or ``(``, at most 80 characters."""
    text = " ".join((error or "unknown").split())
    named = re.match(r"(?:unexpected )?([A-Z][A-Za-z]*(?:Error|Exception))\b", text)
    if named:
        return named.group(1)
    # Quoted values first (a bytes repr such as b'\x8fPNG' holds backslashes that would read as a URI), then URIs.
    text = re.sub(r"(?:\bb)?'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\S*[/\\]\S*", "<uri>", text)
    text = re.sub(r"\d+", "N", text)
    text = re.split(r"[;(]", text, maxsplit=1)[0].strip().removeprefix("<uri>").lstrip(": ").strip()
    return text[:80] or "unknown"


def run_failures(output_uri: str, run_id: str, *, first: int = 10) -> dict[str, Any]:
    """The failures one run recorded: counts by (stage, reason) and the first ``first`` pair ids with reasons.

    Returns:
        ``{"by_stage_reason": [{"stage", "reason", "count"}, ...] (largest first), "first": [{"pair_id",
        "stage", "error"}, ...], "manifest": "<output>/_manifest"}``.
    """
    empty = {"by_stage_reason": [], "first": [], "manifest": join_key(output_uri, MANIFEST_DIR)}
    # Grouped scans (as in latest_ids): one scan over thousands of parts holds per-part buffers well above the rows.
    wanted = (pc.field(RUN_ID) == run_id) & (pc.field(STATUS) == STATUS_FAILED)
    groups = list(_scan_groups(output_uri, [PAIR_ID, ERROR_STAGE, ERROR], wanted))
    table = pa.concat_tables(groups) if groups else None
    if table is None or table.num_rows == 0:
        return empty
    table = table.sort_by([(PAIR_ID, "ascending")])
    counts: dict[tuple[str, str], int] = {}
    for stage, error in zip(table.column(ERROR_STAGE).to_pylist(), table.column(ERROR).to_pylist(), strict=True):
        key = (stage or "unknown", _reason(error))
        counts[key] = counts.get(key, 0) + 1
    rows = table.slice(0, first).to_pylist()
    return {
        "by_stage_reason": [
            {"stage": stage, "reason": reason, "count": n}
            for (stage, reason), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "first": [{"pair_id": r[PAIR_ID], "stage": r[ERROR_STAGE], "error": r[ERROR]} for r in rows],
        "manifest": empty["manifest"],
    }
