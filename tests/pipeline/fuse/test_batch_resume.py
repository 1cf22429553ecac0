"""Resume at scale (issue 18): done pairs are left out on the driver and never enter Ray Data, so a rerun of a
half-done job starts on new pairs at once; the summary still counts them as skipped."""

from __future__ import annotations

import logging

import pytest
from test_batch import _config, _write_manifest, _write_pairs
from test_batch_state import checkpoint  # noqa: F401  (module fixture)

from pipeline import schema as S
from pipeline.config.io_config import PairsConfig
from pipeline.fuse.batch import exit_code, run_batch_fuse
from pipeline.io.manifest import latest_status, read_manifest
from pipeline.io.pairs import iter_pair_windows

pytestmark = pytest.mark.timeout(600)


def _ids(dataset) -> list[str]:
    return sorted(dataset.to_pandas()[S.PAIR_ID].tolist())


def test_pair_windows_leave_done_ids_out_and_count_them(ray_session, tmp_path):
    """Batches of only done pairs add nothing to a window; each window counts what was left out before it."""
    rows = [{"pair_id": f"p{i:03d}", "uri_a": f"a{i}.png", "uri_b": f"b{i}.png", "task": "mff"} for i in range(10)]
    _write_manifest(tmp_path / "pairs.csv", rows)
    source = str(tmp_path / "pairs.csv")
    done = {f"p{i:03d}" for i in (0, 1, 2, 3, 7)}
    windows = list(iter_pair_windows(source, config=PairsConfig(batch_size=2), window_pairs=2, done=done, block_rows=1))
    assert [_ids(w.dataset) for w in windows] == [["p004", "p005"], ["p006", "p008", "p009"]]
    assert [(w.rows, w.skipped) for w in windows] == [(2, 4), (3, 1)]  # windows end at batch boundaries
    assert [w.head[S.PAIR_ID].to_pylist() for w in windows] == [["p004", "p005"], ["p006", "p008", "p009"]]
    # Everything done: one empty window carrying the count, so the caller runs nothing but can still count.
    everything = {r["pair_id"] for r in rows}
    (only,) = iter_pair_windows(source, config=PairsConfig(batch_size=3), window_pairs=2, done=everything)
    assert (only.rows, only.skipped, only.dataset.count()) == (0, 10, 0)


def test_rerun_of_a_half_done_job_never_reads_the_done_pairs(ray_session, tmp_path, checkpoint, caplog):  # noqa: F811
    data = tmp_path / "in"
    rows = _write_pairs(data, 8, size=(24, 32), seed=21)
    _write_manifest(data / "half.csv", rows[:4])
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    first = run_batch_fuse(_config(str(data / "half.csv"), str(out), checkpoint))
    assert (first["pairs_ok"], first["pairs_failed"]) == (4, 0)
    before = {r[S.PAIR_ID]: (r[S.STATUS], r[S.RUN_ID]) for r in latest_status(str(out)).to_pylist()}
    for row in rows[:4]:  # the done pairs' inputs are gone: reading any of them would fail its pair
        (data / row["uri_a"]).unlink()
        (data / row["uri_b"]).unlink()

    seen: list[dict] = []
    config = _config(
        str(data / "pairs.csv"),
        str(out),
        checkpoint,
        pairs={"batch_size": 2},
        resources={"window_pairs": 2},
    )
    with caplog.at_level(logging.INFO, logger="pipeline.fuse.batch"):
        again = run_batch_fuse(config, on_progress=seen.append)
    assert (again["pairs_ok"], again["pairs_failed"], again["pairs_skipped"], again["pairs_total"]) == (4, 0, 4, 8)
    assert exit_code(again) == exit_code(first) == 0
    assert again["cumulative"]["pairs_ok"] == 8
    assert all((out / f"{r['pair_id']}.png").exists() for r in rows)
    # Only the new pairs reached the sink: no manifest row of this run for a done pair, whose latest stays ok.
    this_run = [r for r in read_manifest(str(out)).to_pylist() if r[S.RUN_ID] == again["run_id"]]
    assert sorted(r[S.PAIR_ID] for r in this_run) == [r["pair_id"] for r in rows[4:]]
    assert all(r[S.STATUS] == S.STATUS_OK for r in this_run)
    latest = {r[S.PAIR_ID]: (r[S.STATUS], r[S.RUN_ID]) for r in latest_status(str(out)).to_pylist()}
    assert {k: latest[k] for k in before} == before
    # Progress counts the done pairs as skipped; the windows held only new pairs (two batches of done pairs
    # before the first window added nothing).
    assert seen[-1]["skipped"] == 4 and seen[-1]["total"] == 8 and seen[-1]["ok"] + seen[-1]["skipped"] == 8
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("window ")]
    assert [line.split(",")[:2] for line in lines] == [
        ["window 0: 2 new pairs", " 4 skipped as done"],
        ["window 1: 2 new pairs", " 0 skipped as done"],
    ]
    assert all("pairs/s, driver RSS" in line and "MiB (peak" in line for line in lines)

    # All done: a rerun runs no window, counts everything as skipped and keeps the exit code.
    third = run_batch_fuse(config)
    assert (third["pairs_ok"], third["pairs_failed"], third["pairs_skipped"]) == (0, 0, 8)
    assert exit_code(third) == 0
    assert not [r for r in read_manifest(str(out)).to_pylist() if r[S.RUN_ID] == third["run_id"]]
