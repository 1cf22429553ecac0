"""The compact done set of resume: sorted unique Arrow ids, batch and single membership, union; built from the
manifest in groups of parts with the latest row per pair winning across groups and runs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import manifest as manifest_module
from pipeline.io.done_set import DoneSet
from pipeline.io.manifest import MANIFEST_SCHEMA, done_ids, latest_status
from pipeline.schema import MANIFEST_DIR, PAIR_ID, RUN_ID, STATUS, STATUS_FAILED, STATUS_OK, WRITTEN_AT


def test_ids_are_sorted_unique_and_membership_agrees_with_a_python_set() -> None:
    ids = ["p10", "p2", "é-1", "p2", "a", "p10", "zz"]
    done = DoneSet(ids)
    assert done.ids.to_pylist() == sorted(set(ids)) and len(done) == 5 and list(done) == sorted(set(ids))
    probes = ["a", "p1", "p10", "p2", "p3", "é-1", "é", "", "zzz", "zz"]
    assert [p in done for p in probes] == [p in set(ids) for p in probes]
    assert done.contains_each(probes).to_pylist() == [p in set(ids) for p in probes]
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


def _part(root: Path, name: str, rows: list[tuple[str, str, int, str]]) -> None:
    """A manifest part of (pair_id, status, written_at µs, run_id) rows."""
    table = pa.Table.from_pylist(
        [
            {PAIR_ID: p, STATUS: s, WRITTEN_AT: pa.scalar(t, pa.timestamp("us", tz="UTC")), RUN_ID: r}
            for p, s, t, r in rows
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
