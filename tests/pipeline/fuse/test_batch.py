"""Batch fusion end to end on a real local Ray, locally and over s3:// on the local S3 server."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

import maugif_core
from pipeline import schema as S
from pipeline.config.fuse_config import FuseJobConfig
from pipeline.fuse.batch import run_batch_fuse
from pipeline.io.manifest import read_manifest
from testsupport.local_ray import SMALL_STEPS

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "samples"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A deterministic (seeded, untrained) mff checkpoint; the pipeline's behaviour, not the model's quality, is
    under test here."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mff.safetensors"
    maugif_core.save_checkpoint(maugif_core.build_model("mff"), path)
    return str(path)


def _write_pairs(folder: Path, n: int, size: tuple[int, int] = (40, 48), seed: int = 0) -> list[dict]:
    """n PNG pairs: random crops of the bundled MFI-WHU sample pairs (real images), plus manifest rows."""
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in (SAMPLES / "mff" / "source1").glob("*.png"))
    source = [
        (
            np.asarray(Image.open(SAMPLES / "mff" / "source1" / n)),
            np.asarray(Image.open(SAMPLES / "mff" / "source2" / n)),
        )
        for n in names
    ]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img_a, img_b = source[i % len(source)]
        top, left = rng.integers(0, img_a.shape[0] - size[0]), rng.integers(0, img_a.shape[1] - size[1])
        a = img_a[top : top + size[0], left : left + size[1]]
        b = img_b[top : top + size[0], left : left + size[1]]
        Image.fromarray(a).save(folder / f"p{i:03d}_a.png")
        Image.fromarray(b).save(folder / f"p{i:03d}_b.png")
        rows.append({"pair_id": f"p{i:03d}", "uri_a": f"p{i:03d}_a.png", "uri_b": f"p{i:03d}_b.png", "task": "mff"})
    return rows


def _write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["pair_id", "uri_a", "uri_b", "task"])
        writer.writeheader()
        writer.writerows(rows)


def _config(input_uri: str, out: str, checkpoint: str, **extra) -> FuseJobConfig:
    fields = {
        "input": input_uri,
        "output": {"uri": out},
        "checkpoints": {"mff": checkpoint},
        "fusion": {"multiplicative": {"steps": 30}, "batch_size": 8},
        "failures": {"max_fraction": 1.0},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        else:
            fields[key] = value
    return FuseJobConfig(**fields)


def _latest(output: str) -> dict[str, dict]:
    table = read_manifest(output).to_pylist()
    latest: dict[str, dict] = {}
    for row in table:
        latest[row[S.PAIR_ID]] = row
    return latest


def _assert_same_up_to_rounding(actual: np.ndarray, expected: np.ndarray) -> None:
    """Batched and single-image forward passes differ only by float rounding: at most one level on a few pixels."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


# ------------------------------------------------------------------------------------------------- local


def test_end_to_end_local_with_bad_pairs_and_resume(ray_session, tmp_path, checkpoint):
    data = tmp_path / "in"
    rows = _write_pairs(data, 6)
    # Bad pairs mixed in: zero-byte file, truncated PNG, missing partner file, size mismatch.
    (data / "empty.png").write_bytes(b"")
    good = (data / "p000_a.png").read_bytes()
    (data / "trunc.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "small.png")
    bad = [
        {"pair_id": "bad_empty", "uri_a": "empty.png", "uri_b": "p000_b.png", "task": "mff"},
        {"pair_id": "bad_trunc", "uri_a": "trunc.png", "uri_b": "p000_b.png", "task": "mff"},
        {"pair_id": "bad_missing", "uri_a": "p000_a.png", "uri_b": "nope.png", "task": "mff"},
        {"pair_id": "bad_size", "uri_a": "p000_a.png", "uri_b": "small.png", "task": "mff"},
    ]
    _write_manifest(data / "pairs.csv", rows + bad)
    out = str(tmp_path / "out")
    summary = run_batch_fuse(_config(str(data / "pairs.csv"), out, checkpoint))
    assert (summary["pairs_ok"], summary["pairs_failed"], summary["pairs_skipped"]) == (6, 4, 0)
    for row in rows:
        fused = np.asarray(Image.open(Path(out) / f"{row['pair_id']}.png"))
        source = np.asarray(Image.open(data / row["uri_a"]))
        assert fused.shape == source.shape and fused.dtype == source.dtype
    latest = _latest(out)
    for row in bad:
        record = latest[row["pair_id"]]
        assert record[S.STATUS] == S.STATUS_FAILED and record[S.ERROR_STAGE] == S.STAGE_READ
        assert record[S.ERROR]
        assert not (Path(out) / f"{row['pair_id']}.png").exists()  # failures appear nowhere else
    assert "empty.png" in latest["bad_empty"][S.ERROR] and "nope.png" in latest["bad_missing"][S.ERROR]
    top_level = {p.name for p in Path(out).iterdir()}
    assert top_level == {f"{r['pair_id']}.png" for r in rows} | {S.MANIFEST_DIR, S.SUMMARY_FILE}
    saved = json.loads((Path(out) / S.SUMMARY_FILE).read_text())
    assert saved["pairs_ok"] == 6 and saved["bytes_out"] > 0 and saved["bytes_in"] > 0

    # A rerun fuses nothing and leaves every output byte-identical.
    before = {p.name: p.read_bytes() for p in Path(out).glob("*.png")}
    again = run_batch_fuse(_config(str(data / "pairs.csv"), out, checkpoint))
    assert (again["pairs_ok"], again["pairs_skipped"]) == (0, 6)
    assert again["pairs_failed"] == 4  # bad pairs are retried, and fail again with the same reasons
    assert {p.name: p.read_bytes() for p in Path(out).glob("*.png")} == before


def test_batch_output_matches_direct_fusion(ray_session, tmp_path, checkpoint):
    data = tmp_path / "in"
    rows = _write_pairs(data, 3, size=(33, 47), seed=1)
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint))
    # The job passes Ray only current parameters (Ray's own DataContext defaults warn about themselves; not ours).
    deprecated = [str(w.message) for w in caught if "ray_remote_args" in str(w.message)]
    assert not deprecated, deprecated
    model = maugif_core.load_checkpoint(checkpoint)
    for row in rows:
        a, b = np.asarray(Image.open(data / row["uri_a"])), np.asarray(Image.open(data / row["uri_b"]))
        _assert_same_up_to_rounding(np.asarray(Image.open(out / f"{row['pair_id']}.png")), model.fuse(a, b))


def _read_vrt(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {
            "crs": src.crs,
            "transform": src.transform,
            "dtype": src.dtypes[0],
            "count": src.count,
        }


def test_rasters_keep_georeferencing_and_tiling_is_invisible(ray_session, tmp_path, checkpoint):
    manifest = tmp_path / "pairs.csv"
    with open(SAMPLES / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "pansharpen"]
    for r in rows:
        r["uri_a"], r["uri_b"] = str(SAMPLES / r["uri_a"]), str(SAMPLES / r["uri_b"])
    # An additive raster pair too: the georeferenced MS as A, its synthetic-PAN-derived grey at MS size as B.
    with rasterio.open(SAMPLES / "pansharpen" / "landsat_rgb_ms.tif") as src:
        profile, ms = src.profile, src.read()
    grey = ms.mean(axis=0, keepdims=True).astype(np.uint8)
    profile.update(count=1)
    with rasterio.open(tmp_path / "grey.tif", "w", **profile) as dst:
        dst.write(grey)
    rows.append(
        {
            "pair_id": "additive_raster",
            "uri_a": str(SAMPLES / "pansharpen" / "landsat_rgb_ms.tif"),
            "uri_b": str(tmp_path / "grey.tif"),
            "task": "mff",
        }
    )
    _write_manifest(manifest, rows)
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    run_batch_fuse(_config(str(manifest), str(whole), checkpoint))
    run_batch_fuse(
        _config(
            str(manifest),
            str(tiled),
            checkpoint,
            tiling={"tile_size": 48, "max_untiled_pixels": 1000},
            output={"cog_tile_size": 64},
        )
    )
    for row in rows:
        pid = row["pair_id"]
        a, meta_a = _read_vrt(whole / f"{pid}.vrt")
        b, meta_b = _read_vrt(tiled / f"{pid}.vrt")
        assert meta_a == meta_b
        grid_src = row["uri_b"] if row["task"] == "pansharpen" else row["uri_a"]
        with rasterio.open(row["uri_a"]) as src_a, rasterio.open(grid_src) as grid:
            assert meta_a["count"] == src_a.count and meta_a["dtype"] == src_a.dtypes[0]
            assert a.shape[1:] == (grid.height, grid.width)
            assert meta_a["transform"].almost_equals(grid.transform)
            assert meta_a["crs"] == grid.crs
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, pid
        assert len(list((tiled / pid).glob("*.tif"))) > len(list((whole / pid).glob("*.tif")))
    # The additive raster has a nodata value, so both runs fuse it through the tiled path: its pixels must be the
    # model's fusion, not merely equal between the runs (a dtype bug once wrote every such uint8 raster as 0/1).
    fused, _ = _read_vrt(whole / "additive_raster.vrt")
    expected = np.moveaxis(maugif_core.load_checkpoint(checkpoint).fuse(np.moveaxis(ms, 0, -1), grey[0]), -1, 0)
    valid = ~(ms == 0).all(axis=0)
    assert np.median(np.abs(fused.astype(int) - expected.astype(int))[:, valid]) <= 1
    assert fused[:, valid].mean() == pytest.approx(expected[:, valid].mean(), abs=1.0)


# ------------------------------------------------------------------------------------------------- S3


def test_end_to_end_over_s3(ray_session, s3_server, s3_bucket, tmp_path, checkpoint):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    data = tmp_path / "in"
    rows = _write_pairs(data, 4, seed=2)
    for path in data.iterdir():
        fs.put(str(path), f"{s3_bucket}/in/{path.name}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["pair_id", "uri_a", "uri_b", "task"])
    writer.writeheader()
    writer.writerows(rows + [{"pair_id": "gone", "uri_a": "missing_a.png", "uri_b": "missing_b.png", "task": "mff"}])
    fs.pipe(f"{s3_bucket}/in/pairs.csv", buf.getvalue().encode())
    ck = f"s3://{s3_bucket}/models/mff.safetensors"
    fs.put(checkpoint, ck)
    out = f"s3://{s3_bucket}/out"
    summary = run_batch_fuse(_config(f"s3://{s3_bucket}/in/pairs.csv", out, ck))
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (4, 1)
    fs.invalidate_cache()
    model = maugif_core.load_checkpoint(checkpoint)
    for row in rows:
        fused = np.asarray(Image.open(io.BytesIO(fs.cat(f"{s3_bucket}/out/{row['pair_id']}.png"))))
        a, b = np.asarray(Image.open(data / row["uri_a"])), np.asarray(Image.open(data / row["uri_b"]))
        _assert_same_up_to_rounding(fused, model.fuse(a, b))
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/out")}
    assert not any(".tmp" in n for n in names)
    assert _latest(out)["gone"][S.STATUS] == S.STATUS_FAILED
    again = run_batch_fuse(_config(f"s3://{s3_bucket}/in/pairs.csv", out, ck))
    assert (again["pairs_ok"], again["pairs_skipped"]) == (0, 4)


# ------------------------------------------------------------------------------------------------- kill + resume


@pytest.mark.slow
def test_killed_job_resumes_exactly_the_missing_pairs(tmp_path, checkpoint):
    data = tmp_path / "in"
    rows = _write_pairs(data, 60, size=(64, 64), seed=3)
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    args = [
        sys.executable,
        str(REPO / "jobs" / "batch_fuse.py"),
        "--input",
        str(data / "pairs.csv"),
        "--output",
        str(out),
        "--task",
        "mff",
        "--checkpoint",
        checkpoint,
        *SMALL_STEPS,
    ]
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.png"))) < 10:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", f"--output {out}"], check=False)
    first = {p.stem for p in out.glob("*.png")}
    assert 10 <= len(first) < 60, "the job should have been killed mid-run"
    assert not list(out.glob("*.tmp*"))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.stem for p in out.glob("*.png")} == {r["pair_id"] for r in rows}
    manifest = read_manifest(str(out)).to_pylist()
    run_ids = sorted({m["run_id"] for m in manifest})
    second = {m[S.PAIR_ID] for m in manifest if m["run_id"] == run_ids[-1] and m[S.STATUS] == S.STATUS_OK}
    assert second == {r["pair_id"] for r in rows} - first  # exactly the missing ones, nothing fused twice


def test_dry_run_projects_cost_and_writes_nothing(ray_session, tmp_path, checkpoint):
    data = tmp_path / "in"
    rows = _write_pairs(data, 5, seed=4)
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    summary = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint, dry_run=2))
    assert summary["pairs_ok"] == 2 and summary["pairs_total"] == 5
    assert summary["pairs_per_s"] > 0 and summary["projected_node_hours_total"] > 0
    # The projection is the whole input at the measured rate.
    expected = 5 / summary["pairs_per_s"] / 3600 * summary["nodes"]
    assert summary["projected_node_hours_total"] == pytest.approx(expected)
    assert not out.exists() or not any(out.iterdir())


def test_windows_fuse_every_pair_once_and_resume(ray_session, tmp_path, checkpoint):
    """Run window by window (bounded driver memory): every pair exactly once, resume and dry run across windows."""
    data = tmp_path / "in"
    rows = _write_pairs(data, 7, seed=5)
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    windows = {"pairs": {"batch_size": 2}, "resources": {"window_pairs": 2, "rows_per_decode": 1}}
    dry = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint, dry_run=3, **windows))
    assert (dry["pairs_ok"], dry["pairs_total"]) == (3, 7)
    summary = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint, **windows))
    assert (summary["pairs_ok"], summary["pairs_failed"], summary["pairs_total"]) == (7, 0, 7)
    assert {p.stem for p in out.glob("*.png")} == {r["pair_id"] for r in rows}
    manifest = read_manifest(str(out)).to_pylist()
    assert sorted(m[S.PAIR_ID] for m in manifest) == sorted(r["pair_id"] for r in rows)  # once each, all windows
    parts = {p.name for p in (out / S.MANIFEST_DIR).glob("part-*.parquet")}
    assert len({name.split("-task")[0].rsplit("-", 1)[-1] for name in parts}) >= 3  # parts of several windows
    again = run_batch_fuse(_config(str(data / "pairs.csv"), str(out), checkpoint, **windows))
    assert (again["pairs_ok"], again["pairs_skipped"]) == (0, 7)
