"""The compact done set of resume: sorted unique Arrow ids, batch and single membership, union; built from the
manifest in groups of parts with the latest row per pair winning across groups and runs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import manifest as manifest_module
from pipeline.io.done_set import DoneSet
from pipeline.io.manifest import MANIFEST_SCHEMA, done_ids, latest_status, run_failures
from pipeline.io.stac import raster_pair_ids
from pipeline.schema import (
    ERROR,
    ERROR_STAGE,
    MANIFEST_DIR,
    OUTPUT_URI,
    PAIR_ID,
    RUN_ID,
    STATUS,
    STATUS_FAILED,
    STATUS_OK,
    WRITTEN_AT,
)


def test_ids_are_sorted_unique_and_membership_agrees_with_a_python_set() -> None:
    ids = ["p10", "p2", "é-1", "p2", "a", "p10", "zz"]
    done = DoneSet(ids)
    assert done.ids.to_pylist() == sorted(set(ids)) and len(done) == 5 and list(done) == sorted(set(ids))
    probes = ["a", "p1", "p10", "p2", "p3", "é-1", "é", "", "zzz", "zz"]
    assert [p in done for p in probes] == [p in set(ids) for p in probes]
    members = set(ids)
    assert done.contains_each(probes).to_pylist() == [p in members for p in probes]
    assert done.contains_each(pa.array(["a", None])).to_pylist() == [True, False]
    assert 3 not in done and None not in done


def test_empty_and_union() -> None:
    empty = DoneSet()
    assert not empty and len(empty) == 0 and "x" not in empty and list(empty) == []
    assert empty.contains_each(["x", "y"]).to_pylist() == [False, False]
    both = DoneSet(["b", "a"]).union({"c", "a"})
    assert list(both) == ["a", "b", "c"] and both.union(()) is both
    assert list(empty.union(DoneSet(["q"]))) == ["q"]


def test_a_million_ids_take_a_fraction_of_a_python_set() -> None:
    import sys

    ids = [f"pair{i:06d}" for i in range(200_000)]
    done = DoneSet(pa.array(ids), sorted_unique=True)
    as_set = set(ids)
    python_bytes = sys.getsizeof(as_set) + sum(sys.getsizeof(s) for s in ids)
    assert done.nbytes * 5 < python_bytes, (done.nbytes, python_bytes)
    assert done.contains_each(["pair199999", "pair200000"]).to_pylist() == [True, False]


def _part(root: Path, name: str, rows: list[tuple]) -> None:
    """A manifest part of (pair_id, status, written_at µs, run_id[, output_uri[, error]]) rows."""
    table = pa.Table.from_pylist(
        [
            {
                PAIR_ID: p,
                STATUS: s,
                WRITTEN_AT: pa.scalar(t, pa.timestamp("us", tz="UTC")),
                RUN_ID: r,
                OUTPUT_URI: rest[0] if rest else None,
                ERROR: rest[1] if len(rest) > 1 else None,
                ERROR_STAGE: "fuse" if len(rest) > 1 else None,
            }
            for p, s, t, r, *rest in rows
        ],
        schema=MANIFEST_SCHEMA,
    )
    (root / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / MANIFEST_DIR / f"part-{name}.parquet")


@pytest.mark.parametrize("parts_per_read", [1, 2, 256])
def test_latest_row_wins_across_read_groups_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts_per_read: int
) -> None:
    monkeypatch.setattr(manifest_module, "_PARTS_PER_READ", parts_per_read)
    out = tmp_path / "out"
    # Part names sort so that run "b" comes before run "a": reading order must not decide, time then run id must.
    _part(out, "0-b", [("x", STATUS_FAILED, 10, "run-b"), ("y", STATUS_OK, 5, "run-b")])
    _part(out, "1-a", [("x", STATUS_OK, 5, "run-a"), ("y", STATUS_FAILED, 5, "run-a"), ("z", STATUS_OK, 1, "run-a")])
    _part(out, "2-c", [("w", STATUS_OK, 3, "run-c"), ("z", STATUS_FAILED, 1, "run-c")])
    _part(out, "3-a", [("v", STATUS_OK, 7, "run-a")])
    done = done_ids(str(out))
    # x: failed later (t=10). y: same time, run-b > run-a wins (ok). z: same time, run-c wins (failed). w, v: ok.
    assert list(done) == ["v", "w", "y"]
    latest = {r[PAIR_ID]: r[STATUS] for r in latest_status(str(out)).to_pylist()}
    assert {p for p, s in latest.items() if s == STATUS_OK} == set(done)


def test_no_manifest_and_an_empty_manifest_give_an_empty_set(tmp_path: Path) -> None:
    assert len(done_ids(str(tmp_path / "none"))) == 0
    (tmp_path / "empty" / MANIFEST_DIR).mkdir(parents=True)
    pq.write_table(MANIFEST_SCHEMA.empty_table(), tmp_path / "empty" / MANIFEST_DIR / "part-r-driver-00000.parquet")
    assert len(done_ids(str(tmp_path / "empty"))) == 0


@pytest.mark.parametrize("parts_per_read", [1, 2, 256])
def test_raster_ids_and_run_failures_stream_the_parts_with_the_latest_row_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts_per_read: int
) -> None:
    """What the job's end reads (the STAC collection's raster ids, the failure digest) streams the manifest in part
    groups like resume: the same answers whatever the group size."""
    monkeypatch.setattr(manifest_module, "_PARTS_PER_READ", parts_per_read)
    out = tmp_path / "out"
    _part(
        out,
        "0-a",
        [
            ("png", STATUS_OK, 1, "run-a", "/o/png.png"),
            ("tif-then-failed", STATUS_OK, 1, "run-a", "/o/t/fused.vrt"),
            ("upper", STATUS_OK, 1, "run-a", "/o/UPPER.PNG"),
        ],
    )
    _part(
        out,
        "1-b",
        [
            ("tif-then-failed", STATUS_FAILED, 5, "run-b", None, "decode: bad header"),
            ("png-then-cog", STATUS_OK, 5, "run-b", "/o/c/fused.tif"),
            ("empty", STATUS_OK, 5, "run-b", ""),
            ("nulluri", STATUS_OK, 5, "run-b"),
        ],
    )
    _part(
        out,
        "2-b",
        [("cog-failed", STATUS_FAILED, 6, "run-b", None, "fuse: nan"), ("vrt", STATUS_OK, 6, "run-b", "/o/v.vrt")],
    )
    _part(out, "3-a", [("png-then-cog", STATUS_OK, 2, "run-a", "/o/png-then-cog.png")])
    assert raster_pair_ids(str(out)) == ["png-then-cog", "vrt"]
    failures = run_failures(str(out), "run-b")
    assert [r["pair_id"] for r in failures["first"]] == ["cog-failed", "tif-then-failed"]
    assert sum(g["count"] for g in failures["by_stage_reason"]) == 2
    assert run_failures(str(out), "run-a")["first"] == []
    assert raster_pair_ids(str(tmp_path / "none")) == [] and run_failures(str(tmp_path / "none"), "x")["first"] == []


@pytest.mark.parametrize("n", [10, 5_000, 70_000])
def test_batch_membership_is_exact_below_and_above_the_index_threshold(n: int) -> None:
    ids = [f"pair{i:07d}" for i in range(0, 2 * n, 2)]  # even numbers only
    done = DoneSet(pa.array(ids), sorted_unique=True)
    probes = pa.array([f"pair{i:07d}" for i in range(0, min(2 * n, 20_000), 3)] + [None, "", "pair"])
    members = set(ids)
    expected = [p is not None and p in members for p in probes.to_pylist()]
    assert done.contains_each(probes).to_pylist() == expected
    assert done.contains_each(probes.slice(0, 0)).to_pylist() == []


def test_fingerprint_collisions_are_decided_by_the_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colliding fingerprints (forced: a 4-valued fingerprint) never make a pair done that is not, nor the reverse."""
    import numpy as np

    from pipeline.io import done_set as done_set_module

    real = done_set_module.fingerprints
    monkeypatch.setattr(done_set_module, "fingerprints", lambda ids: real(ids) % np.uint64(4))
    ids = [f"id{i}" for i in range(0, 10_000, 2)]
    done = DoneSet(ids)
    probes = [f"id{i}" for i in range(0, 10_000, 7)] + ["zz"]
    members = set(ids)
    assert done.contains_each(probes).to_pylist() == [p in members for p in probes]


def test_fingerprints_match_the_duplicate_check_of_discovery() -> None:
    import hashlib

    from pipeline.io.done_set import fingerprints

    prints = fingerprints(pa.array(["a", None, "é"]))
    want = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in ("a", "é")]
    assert prints.tolist() == [want[0], 0, want[1]]


def test_failure_reasons_group_without_uris_values_or_bytes() -> None:
    from pipeline.io.manifest import _reason

    bad = r"/in/zz_a.png: unrecognised format: expected PNG, JPEG, BMP or TIFF signature bytes, found b'\x8f\x12'"
    other = r"/data/in/q_a.png: unrecognised format: expected PNG, JPEG, BMP or TIFF signature bytes, found b'GIF89a'"
    assert _reason(bad) == _reason(other)
    assert _reason(bad) == "unrecognised format: expected PNG, JPEG, BMP or TIFF signature bytes, found '…'"
    assert _reason("s3://b/k.tif: size 12 x 40 differs from 'x' (band 3)") == "size N x N differs from '…'"
    assert _reason("unexpected ValueError: boom") == "ValueError" and _reason(None) == "unknown"
