"""What a batch job trusts and reports (issue 13): resume trusts only this tool's outputs, the exit code describes
the input's cumulative state, failures are digested, a dry run goes through the real output storage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_batch import _config, _write_manifest, _write_pairs

import maugif_core
from pipeline import schema as S
from pipeline.fuse.batch import exit_code, format_summary, run_batch_fuse
from pipeline.io.manifest import read_manifest
from pipeline.io.marks import read_mark

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mff.safetensors"
    maugif_core.save_checkpoint(maugif_core.build_model("mff"), path)
    return str(path)


def _with_bad(data: Path, n_good: int, n_bad: int, seed: int) -> list[dict]:
    rows = _write_pairs(data, n_good, seed=seed)
    good = (data / "p000_a.png").read_bytes()
    (data / "trunc.png").write_bytes(good[: len(good) // 3])  # permanently unreadable
    bad = [{"pair_id": f"bad{i}", "uri_a": "trunc.png", "uri_b": "p000_b.png", "task": "mff"} for i in range(n_bad)]
    _write_manifest(data / "pairs.csv", rows + bad)
    return rows


def test_rerun_of_an_unchanged_input_keeps_exit_code_and_history(ray_session, tmp_path, checkpoint):
    """Case 5: 3 of 7 pairs permanently unreadable, budget 0.5. Every run exits 0 (3/7 = 43% of the input), the
    no-op rerun keeps the cumulative counts, and both runs' summaries stay available."""
    data = tmp_path / "in"
    _with_bad(data, 4, 3, seed=11)
    out = tmp_path / "out"
    config = _config(str(data / "pairs.csv"), str(out), checkpoint, failures={"max_fraction": 0.5})
    first = run_batch_fuse(config)
    assert (first["pairs_ok"], first["pairs_failed"]) == (4, 3) and exit_code(first) == 0
    second = run_batch_fuse(config)
    assert (second["pairs_ok"], second["pairs_skipped"], second["pairs_failed"]) == (0, 4, 3)
    assert exit_code(second) == exit_code(first) == 0  # before: 3/3 = 100% of this run, OVER BUDGET, exit 1
    assert second["failure_fraction"] == pytest.approx(3 / 7)
    saved = json.loads((out / S.SUMMARY_FILE).read_text())
    assert saved["cumulative"]["pairs_ok"] == 4 and saved["cumulative"]["pairs_failed"] == 3  # not pairs_ok: 0
    assert saved["this_run"]["pairs_ok"] == 0 and saved["exit_code"] == 0
    assert [r["run_id"] for r in saved["runs"]] == sorted([first["run_id"], second["run_id"]])
    earlier = json.loads((out / saved["runs"][0]["summary"]).read_text())
    assert earlier["this_run"]["pairs_ok"] == 4  # the first run's summary is not lost
    # The same input over a tighter budget exits 1 on every run.
    tight = _config(str(data / "pairs.csv"), str(out), checkpoint, failures={"max_fraction": 0.3})
    assert exit_code(run_batch_fuse(tight)) == 1


def test_failures_are_digested_by_stage_and_reason(ray_session, tmp_path, checkpoint):
    """Case 2: the console names why pairs failed, not only OVER BUDGET."""
    data = tmp_path / "in"
    _with_bad(data, 2, 2, seed=12)
    out = tmp_path / "out"
    summary = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint, failures={"max_fraction": 0.1}))
    digest = summary["failures"]
    (group,) = digest["by_stage_reason"]  # both pairs fail for one reason, grouped without their URIs
    assert group["stage"] == S.STAGE_READ and group["count"] == 2 and str(data) not in group["reason"]
    assert [f["pair_id"] for f in digest["first"]] == ["bad0", "bad1"] and "trunc.png" in digest["first"][0]["error"]
    text = format_summary(summary)
    assert "failures by stage and reason (2 pairs):" in text and f"read      {group['reason']}" in text
    assert "bad0  [read]" in text and f"{out}/_manifest" in text and "OVER BUDGET" in text


def test_resume_trusts_only_outputs_with_this_tools_mark(ray_session, tmp_path, checkpoint):
    """Case 1: a file that merely has an output's name (here a copy of an input) is never taken for a result."""
    data = tmp_path / "in"
    rows = _write_pairs(data, 3, seed=13)
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    out.mkdir()
    impostor = out / "p001.png"
    shutil.copy(data / "p001_a.png", impostor)
    summary = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint))
    assert (summary["pairs_ok"], summary["pairs_skipped"]) == (3, 0)  # p001 fused, not skipped
    assert impostor.read_bytes() != (data / "p001_a.png").read_bytes()
    mark = read_mark(impostor.read_bytes()[:4096])
    assert mark == {"tool": "maugif-ray", "pair_id": "p001"}

    # A crash after the commit of an output but before its manifest part: the marked output is trusted...
    for part in (out / S.MANIFEST_DIR).glob("part-*.parquet"):
        part.unlink()
    again = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint))
    assert (again["pairs_ok"], again["pairs_skipped"]) == (0, 3)
    # ... but not where this tool recorded no run (outputs copied to a fresh location are fused again).
    for part in (out / S.MANIFEST_DIR).glob("*"):
        part.unlink()
    third = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint))
    assert (third["pairs_ok"], third["pairs_skipped"]) == (3, 0)
    assert {r[S.PAIR_ID] for r in read_manifest(str(out)).to_pylist() if r[S.STATUS] == S.STATUS_OK} == {
        "p000",
        "p001",
        "p002",
    }


@pytest.mark.slow
def test_dry_run_writes_through_s3_and_separates_startup(ray_session, s3_server, s3_bucket, tmp_path, checkpoint):
    """Case 7: a dry run to s3:// writes to a scratch prefix of the real output (removed afterwards) and projects
    from the steady-state rate, reported apart from the start-up."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    data = tmp_path / "in"
    rows = _write_pairs(data, 12, seed=14)
    _write_manifest(data / "pairs.csv", rows)
    out = f"s3://{s3_bucket}/fused"
    seen: set[str] = set()

    def watch(state: dict) -> None:  # what the scratch prefix holds while the dry run writes
        fs.invalidate_cache()
        seen.update(p.rsplit("/", 1)[-1] for p in fs.find(f"{s3_bucket}/fused"))

    config = _config(
        str(data / "pairs.csv"), out, checkpoint, dry_run=10, resources={"rows_per_write": 2, "rows_per_decode": 2}
    )
    summary = run_batch_fuse(config, on_progress=watch)
    assert summary["pairs_ok"] == 10 and summary["pairs_total"] == 12
    assert summary["scratch"].startswith(f"{out}/_dry-run-")
    assert any(name.endswith(".png") for name in seen), seen  # fused PNGs went to S3
    fs.invalidate_cache()
    assert not fs.exists(f"{s3_bucket}/fused")  # scratch removed, nothing else written
    assert summary["startup_s"] is not None and summary["startup_s"] > 0
    assert summary["steady_pairs_per_s"] is not None and summary["pairs_per_s"] == summary["steady_pairs_per_s"]
    overall = summary["this_run"]["pairs_per_s"]
    assert summary["steady_pairs_per_s"] > overall  # the start-up (actor, model load) no longer dilutes the rate
    expected = 12 / summary["steady_pairs_per_s"] / 3600 * summary["nodes"]
    assert summary["projected_node_hours_total"] == pytest.approx(expected)
    assert "start-up" in format_summary(summary) and "steady state" in format_summary(summary)
    assert np.isfinite(summary["projected_node_hours_total"])


def test_per_scene_fits_report_their_progress(ray_session, tmp_path, checkpoint):
    """Case 6: a multiplicative pair's per-scene fit (minutes at full settings) is visible while it runs."""
    import csv

    samples = Path(__file__).resolve().parents[3] / "samples"
    with open(samples / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "pansharpen"][:1]
    for r in rows:
        r["uri_a"], r["uri_b"] = str(samples / r["uri_a"]), str(samples / r["uri_b"])
    _write_manifest(tmp_path / "pairs.csv", rows)
    states: list[dict] = []
    summary = run_batch_fuse(_config(str(tmp_path / "pairs.csv"), str(tmp_path / "out"), checkpoint),
                             on_progress=states.append)  # fmt: skip
    assert summary["pairs_ok"] == 1
    assert states[-1]["fitted"] == 1 and states[-1]["fitting"] == []
    assert states[-1]["ok"] == 1 and states[-1]["total"] == 1 and not states[-1]["discovering"]
