"""The pure helpers of benchmarks/bench_million.py: per-window figures, log parsing, the output listing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_million.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_million", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tag: str, start: float, first: float, before: int, points: list[tuple[float, int, float]]) -> dict:
    samples = [{"t": t, "count": c, "rss_mb": rss} for t, c, rss in points]
    return {"tag": tag, "start_s": start, "first_new_output_s": first, "outputs_before": before, "samples": samples}


def test_windows_interpolate_counts_and_split_at_the_kill(bench):
    # run 1: first output at t=10, 100 pairs/s until 1500 outputs at t=25; run 2 resumes at 1500, 200 pairs/s.
    run1 = _run("1", 0.0, 10.0, 0, [(15.0, 500, 300.0), (20.0, 1000, 320.0), (25.0, 1500, 350.0)])
    run2 = _run("2", 30.0, 5.0, 1500, [(36.0, 1700, 310.0), (40.0, 2500, 330.0), (42.5, 3000, 340.0)])
    rows = bench.windows([run1, run2], 1000)
    assert [(r["run"], r["window"], r["pairs"]) for r in rows] == [
        ("1", 0, 1000),
        ("1", 1, 500),
        ("2", 1, 500),
        ("2", 2, 1000),
    ]
    assert rows[0]["pairs_per_s"] == pytest.approx(100.0)
    assert rows[0]["driver_peak_rss_mb"] == 320.0  # samples at t 15 and 20 fall in [10, 20]
    assert rows[2]["seconds"] == pytest.approx(2.5)  # 1500 → 2000 from t=35 to t=37.5 (interpolated)
    assert rows[3]["pairs_per_s"] == pytest.approx(200.0)


def test_log_figures_times_the_resume_diff_and_keeps_window_lines(bench):
    text = (
        "2026-12-05 20:34:04,564 INFO pipeline.cli.fuse: pre-flight passed in 0.2 s\n"
        "ray ready in 0.0 s (attached to 127.0.0.1:51543)\n"
        "2026-12-05 20:34:05,426 INFO pipeline.fuse.batch: resume: 1664 pairs already done at /tmp/out\n"
        "2026-12-05 20:35:05,000 INFO pipeline.fuse.batch: window 0: 50000 pairs in 200.0 s, 250.0 pairs/s\n"
    )
    figures = bench.log_figures(text)
    assert figures["resume_diff_log_s"] == pytest.approx(0.862, abs=1e-3)
    assert len(figures["window_log_lines"]) == 1
    assert bench.log_figures("no log lines")["resume_diff_log_s"] is None


def test_outputs_listing_skips_temp_and_job_files(bench, tmp_path):
    for name in ("a.png", "b.png.tmp-0123abcd", "_summary.json", ".hidden.png", "shard/c.png", "_manifest/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert sorted(bench.list_outputs(tmp_path)) == ["a", "c"]
    assert bench.list_outputs(tmp_path)["c"][0][0] == "shard/c.png"
    assert bench.count_outputs(tmp_path)[0] == 2
