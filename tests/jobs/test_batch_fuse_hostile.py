"""``jobs/batch_fuse.py`` against hostile input (issue 12): one manifest mixing good pairs with every bad case, run
twice as a user runs it (a subprocess attached to a real local Ray), and an input URI outside the scheme allow-list.

Done when: every good (and now-valid) pair is fused exactly once, every bad pair is one failure record whose reason
names its input, nothing hangs, and the rerun fuses nothing new (same exit code, no new outputs, ok rows kept).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from factories import BATCH_FUSE_WRAPPER
from PIL import Image

from pipeline import schema as S
from pipeline.io.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "mff"
SIZE = (40, 48)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


# ------------------------------------------------------------------------------------------- input scheme


@pytest.mark.timeout(60)
def test_input_outside_the_scheme_allow_list_exits_2_before_ray_and_fetches_nothing(loopback_http, tmp_path):
    base, hits = loopback_http
    uri = f"{base}/pairs.csv"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BATCH_FUSE_WRAPPER, "--input", uri, "--task", "vif", "--output", str(tmp_path / "o")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "RAY_IMPORTED=False" in text and time.perf_counter() - started < 10.0, text
    [error] = [line for line in text.splitlines() if line.startswith("batch_fuse: error:")]
    assert f"input {uri}: scheme 'http' is not allowed" in error
    assert "expected one of 'file', 's3' (storage.allowed_schemes)" in error
    assert hits == [] and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------- the mixed job


def _crop_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` equal-size RGB pairs cut from the bundled MFI-WHU sample pairs (real pixels)."""
    names = sorted(p.name for p in (SAMPLES / "source1").glob("*.png"))
    sources = [
        tuple(np.asarray(Image.open(SAMPLES / side / n).convert("RGB")) for side in ("source1", "source2"))
        for n in names
    ]
    pairs = []
    for i in range(n):
        a0, b0 = sources[i % len(sources)]
        top, left = 3 * i, 5 * i
        pairs.append((a0[top : top + SIZE[0], left : left + SIZE[1]], b0[top : top + SIZE[0], left : left + SIZE[1]]))
    return pairs


def _geotiff(path: Path, array: np.ndarray, nodata: float | None = None) -> str:
    """``(H, W, C)`` as a georeferenced GeoTIFF (UTM 18N, 30 m) so both sides of a pair share one grid."""
    profile = {"driver": "GTiff", "height": array.shape[0], "width": array.shape[1], "count": array.shape[2],
               "dtype": array.dtype.name, "crs": "EPSG:32618",
               "transform": rasterio.transform.from_origin(300000.0, 2700000.0, 30.0, 30.0)}  # fmt: skip
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(array, 2, 0))
    return str(path)


def _build_inputs(data: Path, http_base: str) -> tuple[Path, dict[str, str], dict[str, str]]:
    """The manifest, ``{good pair_id: output kind}`` and ``{bad pair_id: text its failure must name}``."""
    data.mkdir()
    pairs = _crop_pairs(14)
    rows: list[list[str]] = []
    good: dict[str, str] = {}
    bad: dict[str, str] = {}

    def png(name: str, array: np.ndarray, mode: str | None = None) -> str:
        Image.fromarray(array, mode=mode).save(data / name)
        return name

    # 10 ordinary pairs, and 3 whose ids a CSV reader would turn into nulls.
    for i, pid in enumerate([f"g{i:02d}" for i in range(10)] + ["NA", "null", "nan"]):
        a, b = pairs[i]
        rows.append([pid, png(f"{pid}_a.png", a), png(f"{pid}_b.png", b), "mff"])
        good[pid] = "png"
    a, b = pairs[13]
    grey = a.mean(axis=2).astype(np.uint8)
    # Grey + alpha PNG (2 channels).
    rows.append(["grey_alpha", png("la.png", np.dstack([grey, np.full_like(grey, 200)]), "LA"), rows[0][2], "mff"])
    good["grey_alpha"] = "png"
    # An EXIF-rotated JPEG: pixels stored landscape, shown portrait, like its (portrait) partner.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(np.ascontiguousarray(np.rot90(b[:, :30], 1))).save(data / "rotated.jpg", exif=exif, quality=95)
    rows.append(["exif_rotated", "rotated.jpg", png("portrait_a.png", a[:, :30]), "mff"])
    good["exif_rotated"] = "png"
    # Float rasters: NaN as (undeclared) nodata, a very wide value range, and a 5-band stack.
    rng = np.random.default_rng(0)
    holed = (grey[..., None] / 255.0 * 400.0 - 100.0).astype(np.float32)
    holed[5:15, 10:30] = np.nan
    grey_tif = _geotiff(data / "grey.tif", b.mean(axis=2, keepdims=True).astype(np.uint8))
    rows.append(["nan_float", _geotiff(data / "nan.tif", holed), grey_tif, "vif"])
    good["nan_float"] = "cog"
    wide = (10 ** rng.uniform(-6, 30, SIZE + (1,))).astype(np.float32)
    wide[::7, ::5] *= -1.0
    rows.append(["wide_float", _geotiff(data / "wide.tif", wide), grey_tif, "vif"])
    good["wide_float"] = "cog"
    five = np.concatenate([a, b[..., :2]], axis=2).astype(np.uint16) * 257
    five_b = _geotiff(data / "five_b.tif", five[::-1].copy())  # flipped: detail A lacks
    rows.append(["five_band", _geotiff(data / "five_a.tif", five), five_b, "mff"])
    good["five_band"] = "cog"

    # Bad pairs: each must fail alone, naming its input.
    rows.append(["missing", str(data / "no_such.png"), rows[0][2], "mff"])
    bad["missing"] = str(data / "no_such.png")
    os.mkfifo(data / "pipe.png")
    rows.append(["fifo", str(data / "pipe.png"), rows[0][2], "mff"])
    bad["fifo"] = str(data / "pipe.png")
    rows.append(["dev_zero", "/dev/zero", rows[0][2], "mff"])
    bad["dev_zero"] = "/dev/zero"
    noise = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~120 KB of PNG: over the 60 KB cap below
    rows.append(["oversize", png("oversize.png", noise), rows[0][2], "mff"])
    bad["oversize"] = "oversize.png"
    rows.append(["http", f"{http_base}/a.png", rows[0][2], "mff"])
    bad["http"] = f"{http_base}/a.png"
    whole = (data / rows[1][1]).read_bytes()
    (data / "truncated.png").write_bytes(whole[: len(whole) // 2])
    rows.append(["truncated", "truncated.png", rows[1][2], "mff"])
    bad["truncated"] = "truncated.png"

    manifest = data / "pairs.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair_id", "uri_a", "uri_b", "task"])
        writer.writerows(rows)
        f.write("short_row,only_a.png\n")  # 2 fields
        f.write("long_row,a.png,b.png,mff,extra\n")  # 5 fields
        f.write(",g00_a.png,g00_b.png,mff\n")  # empty id
    header_and_rows = 1 + len(rows)
    for offset, key in enumerate(["short", "long", "empty_id"], start=1):
        bad[key] = f"{manifest} line {header_and_rows + offset}"
    return manifest, good, bad


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "jobs/batch_fuse.py", *args], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip


def _outputs(out: Path) -> dict[str, tuple[int, int]]:
    """Every output file (manifest and summaries aside) with its size and modification time."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith("_manifest/") and rel != "_summary.json":
            files[rel] = (path.stat().st_size, path.stat().st_mtime_ns)
    return files


@pytest.mark.timeout(300)
def test_mixed_manifest_fuses_every_good_pair_once_and_reruns_to_nothing_new(ray_session, loopback_http, tmp_path):
    import ray

    http_base, hits = loopback_http
    manifest, good, bad = _build_inputs(tmp_path / "in", http_base)
    out = tmp_path / "out"
    args = ["--input", str(manifest), "--output", str(out), "--address", ray.get_runtime_context().gcs_address,
            "--set", "read.max_object_bytes=60000", "--set", "read.read_timeout_s=20", "--quiet"]  # fmt: skip

    started = time.perf_counter()
    first = _run(args)
    first_seconds = time.perf_counter() - started
    records = read_manifest(str(out)).to_pylist()
    ok = [r for r in records if r[S.STATUS] == S.STATUS_OK]
    failed = [r for r in records if r[S.STATUS] == S.STATUS_FAILED]
    assert sorted(r[S.PAIR_ID] for r in ok) == sorted(good), first.stdout + first.stderr
    assert len(failed) == len(bad), [(r[S.PAIR_ID], r[S.ERROR]) for r in failed]
    for key, names in bad.items():  # one failure record per bad pair, naming its input
        matching = [r for r in failed if names in (r[S.ERROR] or "")]
        assert len(matching) == 1, (key, names, [(r[S.PAIR_ID], r[S.ERROR]) for r in failed])
    by_id = {r[S.PAIR_ID]: r for r in failed}
    assert "storage.allowed_schemes" in by_id["http"][S.ERROR] and hits == []
    assert "read.max_object_bytes=60000" in by_id["oversize"][S.ERROR]
    assert "regular file" in by_id["fifo"][S.ERROR]

    # Every good pair fused exactly once, in the format its inputs call for.
    for pid, kind in good.items():
        if kind == "png":
            assert (out / f"{pid}.png").is_file(), pid
        else:
            assert (out / f"{pid}.vrt").is_file() and list((out / pid).glob("*.tif")), pid
    with rasterio.open(out / "nan_float.vrt") as src:
        fused = src.read(1)
        assert np.isnan(src.nodata) and np.isnan(fused[5:15, 10:30]).all()
        assert np.isfinite(fused[20:]).all()
    with rasterio.open(out / "wide_float.vrt") as src:
        assert np.isfinite(src.read()).all()
    with rasterio.open(out / "five_band.vrt") as src:
        assert (src.count, src.dtypes[0]) == (5, "uint16")
    assert np.asarray(Image.open(out / "exif_rotated.png")).shape[:2] == (SIZE[0], 30)  # portrait, as displayed
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["this_run"]["pairs_ok"], summary["this_run"]["pairs_failed"]) == (len(good), len(bad))
    assert first.returncode == 1, first.stdout + first.stderr  # 9 of 27 failed: over the 1 % default budget
    before = _outputs(out)

    second = _run(args)
    assert second.returncode == first.returncode, second.stdout + second.stderr
    assert _outputs(out) == before  # no new output, none rewritten
    records = read_manifest(str(out)).to_pylist()
    ok_again = [r for r in records if r[S.STATUS] == S.STATUS_OK]
    assert sorted((r[S.PAIR_ID], r[S.OUTPUT_URI]) for r in ok_again) == sorted(
        (r[S.PAIR_ID], r[S.OUTPUT_URI]) for r in ok
    )
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["this_run"]["pairs_ok"] == 0 and summary["cumulative"]["pairs_ok"] == len(good)
    assert summary["exit_code"] == first.returncode
    assert hits == []
    print(f"first run {first_seconds:.1f} s")
