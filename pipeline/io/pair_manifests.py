"""Input manifests (CSV, Parquet, JSONL) read in record batches; a row that cannot be parsed becomes one failure
record naming the manifest and its line, a manifest unusable as a whole raises ManifestError."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema as S
from pipeline.config.io_config import PairsConfig
from pipeline.errors import ManifestError, PairDiscoveryError
from pipeline.io.pair_rows import _ABSOLUTE_RX, RAW_SCHEMA, _blank, _raw_table
from pipeline.io.storage import parent_uri

__all__ = [
    "MANIFEST_KINDS",
    "iter_manifest_tables",
    "manifest_kind",
]

logger = logging.getLogger(__name__)


MANIFEST_KINDS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


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
