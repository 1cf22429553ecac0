"""Job manifest: atomic Parquet parts, reading back, latest-status-wins, resume across runs, scale."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import ConfigError
from pipeline.io.fsutil import TEMP_MARKER, filesystem_for
from pipeline.io.manifest import (
    MANIFEST_SCHEMA,
    ManifestWriter,
    done_pair_ids,
    latest_status,
    make_record,
    new_run_id,
    read_manifest,
)
from pipeline.schema import MANIFEST_COLUMNS, MANIFEST_DIR, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED


@pytest.fixture(params=["local", "s3"])
def output_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/job"


def _manifest_keys(output: str) -> list[str]:
    fs, root = filesystem_for(output)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    directory = f"{root}/{MANIFEST_DIR}"
    return sorted(p.rsplit("/", 1)[-1] for p in fs.find(directory)) if fs.exists(directory) else []


def test_empty_location_has_no_manifest(output_uri: str) -> None:
    table = read_manifest(output_uri)
    assert table.num_rows == 0 and table.schema == MANIFEST_SCHEMA
    assert done_pair_ids(output_uri) == set()


def test_write_and_read_back(output_uri: str) -> None:
    with ManifestWriter(output_uri, "run-a", flush_rows=2) as manifest:
        manifest.add(make_record("p1", STATUS_OK, output_uri=f"{output_uri}/p1.png", seconds=0.5))
        manifest.add(make_record("p2", STATUS_FAILED, error_stage="read", error="RasterReadError: truncated"))
        manifest.add(make_record("p3", STATUS_SKIPPED, output_uri=f"{output_uri}/p3.png"))
    assert manifest.rows_written == 3
    assert _manifest_keys(output_uri) == [
        "part-run-a-driver-00000.parquet",
        "part-run-a-driver-00001.parquet",
    ]
    table = read_manifest(output_uri)
    assert set(MANIFEST_COLUMNS) <= set(table.column_names)
    rows = {r["pair_id"]: r for r in table.to_pylist()}
    assert rows["p1"]["status"] == "ok" and rows["p1"]["seconds"] == 0.5
    assert rows["p1"]["output_uri"] == f"{output_uri}/p1.png"
    assert rows["p2"]["error_stage"] == "read" and "truncated" in rows["p2"]["error"]
    assert rows["p3"]["status"] == "skipped" and all(r["run_id"] == "run-a" for r in rows.values())
    assert read_manifest(output_uri, columns=["pair_id"]).column_names == ["pair_id"]


def test_rerun_resumes_from_the_latest_status(output_uri: str) -> None:
    run1, run2 = new_run_id(), new_run_id()
    with ManifestWriter(output_uri, run1) as manifest:
        manifest.add_many(
            [
                make_record("a", STATUS_OK),
                make_record("b", STATUS_FAILED, error_stage="fuse"),
                make_record("c", STATUS_OK),
            ]
        )
    assert done_pair_ids(output_uri) == {"a", "c"}
    time.sleep(0.01)
    with ManifestWriter(output_uri, run2) as manifest:  # the rerun: b succeeds now, c is redone and fails
        manifest.add_many(
            [
                make_record("b", STATUS_OK),
                make_record("c", STATUS_FAILED, error_stage="write"),
                make_record("d", STATUS_SKIPPED),
            ]
        )
    assert done_pair_ids(output_uri) == {"a", "b"}
    latest = {r["pair_id"]: (r["status"], r["run_id"]) for r in latest_status(output_uri).to_pylist()}
    assert latest == {"a": ("ok", run1), "b": ("ok", run2), "c": ("failed", run2), "d": ("skipped", run2)}
    assert read_manifest(output_uri).num_rows == 6
    assert len(_manifest_keys(output_uri)) == 2


def test_a_retried_writer_replaces_its_part_instead_of_duplicating(output_uri: str) -> None:
    for attempt in range(2):  # same run id and writer name: a retried Ray write task
        with ManifestWriter(output_uri, "run-x", writer="task000003") as manifest:
            manifest.add(make_record("p", STATUS_OK if attempt else STATUS_FAILED))
    assert _manifest_keys(output_uri) == ["part-run-x-task000003-00000.parquet"]
    assert read_manifest(output_uri).num_rows == 1 and done_pair_ids(output_uri) == {"p"}


def test_parts_are_written_atomically(output_uri: str) -> None:
    writer = ManifestWriter(output_uri, "run-y")
    writer.add(make_record("p", STATUS_OK))
    writer.flush()
    assert not any(TEMP_MARKER in key for key in _manifest_keys(output_uri))
    # An in-flight temporary object (a writer that crashed mid-upload) is not read as a part.
    fs, root = filesystem_for(output_uri)
    fs.pipe_file(f"{root}/{MANIFEST_DIR}/part-run-z-driver-00000.parquet{TEMP_MARKER}deadbeef", b"PAR1 partial")
    assert read_manifest(output_uri).num_rows == 1


def test_invalid_inputs_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        make_record("p", "done")
    with pytest.raises(ConfigError):
        ManifestWriter(str(tmp_path), "../run")
    with pytest.raises(ConfigError):
        ManifestWriter(str(tmp_path), "run", flush_rows=0)


def test_manifest_scales_to_many_rows(tmp_path: Path) -> None:
    output = str(tmp_path / "big")
    n = 400_000
    ids = pa.array([f"pair-{i:07d}" for i in range(n)])
    for run, status in (("r1", STATUS_FAILED), ("r2", STATUS_OK)):
        with ManifestWriter(output, run, flush_rows=100_000) as manifest:
            keep = range(0, n) if run == "r1" else range(0, n, 2)
            manifest.add_many(make_record(ids[i].as_py(), status) for i in keep)
        time.sleep(0.01)
    start = time.perf_counter()
    done = done_pair_ids(output)
    elapsed = time.perf_counter() - start
    assert len(done) == n // 2 and "pair-0000000" in done and "pair-0000001" not in done
    assert elapsed < 10, f"done_pair_ids over {int(1.5 * n)} rows took {elapsed:.1f}s"


def test_extras_are_json_text_and_old_parts_without_the_column_still_read(tmp_path: Path) -> None:
    import json

    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.schema import EXTRAS, PAIR_ID, RUN_ID, STATUS, WRITTEN_AT

    output = str(tmp_path / "out")
    # A part written before the extras column existed (the manifest's schema without it).
    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name != EXTRAS])
    old = pa.Table.from_pylist(
        [{PAIR_ID: "old", STATUS: STATUS_OK, RUN_ID: "r0", WRITTEN_AT: pa.scalar(0, pa.timestamp("us", tz="UTC"))}],
        schema=old_schema,
    )
    (tmp_path / "out" / MANIFEST_DIR).mkdir(parents=True)
    pq.write_table(old, tmp_path / "out" / MANIFEST_DIR / "part-r0-driver-00000.parquet")
    extras = {"sensor_shift_y": np.float32(0.5), "sensor_gain": 0.3, "sensor_source": "estimated"}
    with ManifestWriter(output, "r1") as manifest:
        manifest.add(make_record("new", STATUS_OK, extras={**extras, "sensor_residual": float("nan")}))
        manifest.add(make_record("plain", STATUS_OK))
    rows = {r[PAIR_ID]: r for r in latest_status(output).to_pylist()}
    assert rows["old"][EXTRAS] is None and rows["plain"][EXTRAS] is None
    assert json.loads(rows["new"][EXTRAS]) == {
        "sensor_shift_y": 0.5,
        "sensor_gain": 0.3,
        "sensor_source": "estimated",
        "sensor_residual": None,
    }
    assert done_pair_ids(output) == {"old", "new", "plain"}  # resume reads both kinds of part
