"""Scenes of any size: peak memory of the whole job and tiles/s, tile rows vs the whole-image path (issue 14).

Builds synthetic additive (visible / infrared) GeoTIFF scenes of side S by mirroring and tiling a real crop —
rasterio's ``RGB.byte.tif`` test raster (Landsat 7, CC0) from ``/work/shared/datasets/GeoTIFF_rasterio_testdata``;
A is its three bands, B ``255 - blue`` — written strip by strip (DEFLATE, 512² blocks, internal overviews), then
runs ``jobs/batch_fuse.py`` on each as a subprocess that starts its own local Ray. While it runs, the proportional
set size (PSS: shared object-store pages counted once) of every process of the job's tree — the driver, GCS,
raylet, Ray workers and the object store they map — is summed every 0.25 s; the peak of that sum is reported,
with the sum of RSS beside it (which counts shared pages several times).

Usage (quiet machine):
    /work/heavy2 env PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_scene.py --sides 6000 12000 \
        --modes windowed whole --work /tmp/bench_scene
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "datasets" / "GeoTIFF_rasterio_testdata" / "RGB.byte.tif"
if not SOURCE.exists():
    SOURCE = Path("/work/shared/datasets/GeoTIFF_rasterio_testdata/RGB.byte.tif")


def make_scene(folder: Path, side: int) -> tuple[Path, Path]:
    """Write ``vis_<side>.tif`` (3 bands) and ``ir_<side>.tif`` (1 band), ``side`` x ``side``, strip by strip."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    path_a, path_b = folder / f"vis_{side}.tif", folder / f"ir_{side}.tif"
    if path_a.exists() and path_b.exists():
        return path_a, path_b
    with rasterio.open(SOURCE) as src:
        crop = np.moveaxis(src.read(window=Window(100, 100, 512, 512)), 0, -1)  # valid pixels, no nodata collar
        crs, transform = src.crs, src.transform
    base = np.concatenate([crop, crop[::-1]], axis=0)
    base = np.concatenate([base, base[:, ::-1]], axis=1)  # mirrored 1024x1024 period: seamless
    period = base.shape[0]
    t = Affine(transform.a, 0, transform.c, 0, transform.e, transform.f)
    profile = {
        "driver": "GTiff",
        "height": side,
        "width": side,
        "dtype": "uint8",
        "crs": crs,
        "transform": t,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "DEFLATE",
        "BIGTIFF": "IF_SAFER",
    }
    cols = np.arange(side) % period
    with (
        rasterio.open(path_a, "w", count=3, **profile) as dst_a,
        rasterio.open(path_b, "w", count=1, **profile) as dst_b,
    ):
        for row in range(0, side, 1024):
            rows = np.arange(row, min(row + 1024, side)) % period
            strip = base[rows][:, cols]
            window = Window(0, row, side, len(rows))
            dst_a.write(np.moveaxis(strip, -1, 0), window=window)
            dst_b.write((255 - strip[:, :, 2])[None], window=window)
    factors = [f for f in (2, 4, 8, 16, 32, 64) if side // f >= 256]
    for path in (path_a, path_b):
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews(factors, Resampling.average)
    return path_a, path_b


def make_pan_scene(folder: Path, side: int, ratio: int = 2) -> tuple[Path, Path]:
    """Write ``ms_<side>.tif`` (3 bands, ``side / ratio`` square, ``ratio`` x the pixel size) and ``pan_<side>.tif``
    (1 band, ``side`` square) on the same origin: A = the mirrored crop's RGB averaged over ``ratio``² blocks,
    B = its band mean at full resolution (a synthetic panchromatic band, like the bundled Landsat sample's)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    path_a, path_b = folder / f"ms_{side}.tif", folder / f"pan_{side}.tif"
    if path_a.exists() and path_b.exists():
        return path_a, path_b
    side -= side % (1024 * ratio)  # whole periods: the MS grid is exactly PAN / ratio
    with rasterio.open(SOURCE) as src:
        crop = np.moveaxis(src.read(window=Window(100, 100, 512, 512)), 0, -1).astype(np.float32)
        crs, transform = src.crs, src.transform
    base = np.concatenate([crop, crop[::-1]], axis=0)
    base = np.concatenate([base, base[:, ::-1]], axis=1)  # 1024 x 1024 x 3, seamless period
    pan_base = np.clip(base.mean(axis=2) + 0.5, 0, 255).astype(np.uint8)
    small = base.reshape(1024 // ratio, ratio, 1024 // ratio, ratio, 3).mean(axis=(1, 3))
    ms_base = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    t = Affine(transform.a, 0, transform.c, 0, transform.e, transform.f)
    common = {"driver": "GTiff", "dtype": "uint8", "crs": crs, "tiled": True, "blockxsize": 512, "blockysize": 512}
    common.update(compress="DEFLATE", BIGTIFF="IF_SAFER")
    low = side // ratio
    reps = (side // 1024, side // 1024)
    with (
        rasterio.open(path_a, "w", count=3, height=low, width=low, transform=t * Affine.scale(ratio), **common) as a,
        rasterio.open(path_b, "w", count=1, height=side, width=side, transform=t, **common) as b,
    ):
        strip_b = np.tile(pan_base, (1, reps[1]))
        strip_a = np.tile(ms_base, (1, reps[1], 1))
        for i in range(reps[0]):
            b.write(strip_b[None], window=Window(0, i * 1024, side, 1024))
            a.write(np.moveaxis(strip_a, -1, 0), window=Window(0, i * (1024 // ratio), low, 1024 // ratio))
    for path, size in ((path_a, low), (path_b, side)):
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews([f for f in (2, 4, 8, 16, 32, 64) if size // f >= 256], Resampling.average)
    return path_a, path_b


def validate_outputs(out: Path, pair_id: str) -> dict:
    """Check the job's outputs as the tests do: COG tiles, the VRT (with overviews), the scene COG when there is one
    (rio-cogeo's validator), the item and the Collection (pystac's offline core schemas)."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from pipeline.io.stac import validate_core

    report: dict = {}
    tiles = sorted((out / pair_id).glob("*_*.tif"))
    bad = [t.name for t in tiles[:: max(len(tiles) // 16, 1)] if not cog_validate(str(t), quiet=True)[0]]
    report["tiles_valid"] = f"{len(tiles)} tiles, sampled ones valid" if not bad else f"invalid: {bad}"
    with rasterio.open(out / f"{pair_id}.vrt") as vrt:
        report["vrt"] = f"{vrt.width}x{vrt.height}x{vrt.count}, overviews {vrt.overviews(1)}"
    scene = out / f"{pair_id}.tif"
    if scene.exists():
        valid, errors, _ = cog_validate(str(scene), quiet=True)
        report["scene_cog"] = "valid" if valid else f"invalid: {errors}"
    for name in (f"{pair_id}/item.json", "collection.json"):
        path = out / name
        if path.exists():
            try:
                validate_core(json.loads(path.read_text()))
                report[name] = "valid"
            except Exception as e:  # report, do not hide
                report[name] = f"invalid: {e}"
        else:
            report[name] = "missing"
    return report


def _tree(root: int) -> list:
    import psutil

    try:
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _role(proc) -> str:
    """A process's part in the job: the driver, a Ray system process, or a worker by its task or actor title."""
    name = proc.name()
    if proc.pid == os.getpid():
        return "bench"
    cmd = " ".join(proc.cmdline()[:3])
    if "batch_fuse.py" in cmd:
        return "driver"
    if name.startswith("ray::"):
        return name.split("(")[0][:40]
    return name[:40]


class Sampler(threading.Thread):
    """Peak of the summed PSS (and RSS) over a process tree, sampled every ``interval`` seconds."""

    def __init__(self, root: int, interval: float = 0.25, output: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.output = root, interval, output
        self.cog_seconds = 0.0  # time a scene COG build's scratch folder existed in the output
        self.cog_peak_pss = 0  # peak of the summed PSS meanwhile
        self.peak_pss = self.peak_rss = 0
        self.peak_procs = 0
        self.peak_by_role: dict[str, int] = {}  # PSS per process role at the moment of the summed peak
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            pss = rss = 0
            procs = _tree(self.root)
            by_role: dict[str, int] = {}
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    pss += info.pss
                    rss += info.rss
                    role = _role(proc)
                    by_role[role] = by_role.get(role, 0) + info.pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            if self.output is not None and self._building():
                self.cog_seconds += self.interval
                self.cog_peak_pss = max(self.cog_peak_pss, pss)
            if pss > self.peak_pss:
                self.peak_pss, self.peak_procs, self.peak_by_role = pss, len(procs), by_role
            self.peak_rss = max(self.peak_rss, rss)
            self.stop.wait(self.interval)

    def _building(self) -> bool:
        try:
            return any(name.startswith(".maugif-scene") for name in os.listdir(self.output))
        except OSError:
            return False


def run_job(
    manifest: Path, out: Path, mode: str, tile: int, actors: int, extra: list[str] = (), task: str = "vif"
) -> dict:
    sets = [
        f"tiling.tile_size={tile}",
        f"output.cog_tile_size={tile}",
        f"fusion.num_actors={actors}",
        "fusion.torch_threads=1",
        "failures.max_fraction=0",
        "resume=false",
    ]
    if mode == "whole":
        sets += ["tiling.window_min_pixels=null", "read.max_pixels=1000000000", "read.max_object_bytes=8000000000"]
    else:
        sets += ["tiling.window_min_pixels=1048576"]
    sets += list(extra)  # --set overrides given to the benchmark
    cmd = [sys.executable, str(REPO / "jobs" / "batch_fuse.py"), "--input", str(manifest), "--output", str(out)]
    cmd += ["--task", task, "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid, output=out)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    summary = json.loads((out / "_summary.json").read_text()) if (out / "_summary.json").exists() else {}
    tile_files = list((out / "scene").glob("*_*.tif"))
    if proc.returncode == 0:
        validation = validate_outputs(out, "scene")
    tiles = len(tile_files)
    elapsed = float(summary.get("elapsed_s") or summary.get("run", {}).get("elapsed_s") or wall)
    return {
        "mode": mode,
        "task": task,
        "validation": validation if proc.returncode == 0 else None,
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "job_s": round(elapsed, 1),
        "tiles": tiles,
        "tiles_per_s": round(tiles / elapsed, 3) if elapsed and tiles else 0.0,
        "peak_pss_gib": round(sampler.peak_pss / 2**30, 3),
        "peak_rss_gib": round(sampler.peak_rss / 2**30, 3),
        "procs_at_peak": sampler.peak_procs,
        "peak_by_role_gib": {
            role: round(v / 2**30, 3) for role, v in sorted(sampler.peak_by_role.items(), key=lambda kv: -kv[1])[:8]
        },
        "scene_cog_build_s": round(sampler.cog_seconds, 1),
        "scene_cog_peak_pss_gib": round(sampler.cog_peak_pss / 2**30, 3),
        "tail": output[-600:] if proc.returncode else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[6000, 12000, 24000])
    parser.add_argument("--modes", nargs="+", default=["windowed", "whole"], choices=["windowed", "whole"])
    parser.add_argument(
        "--task", default="vif", choices=["vif", "pansharpen"], help="pansharpen: MS at 1/2 of the PAN side"
    )
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_scene"))
    parser.add_argument("--keep-outputs", action="store_true")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="job override")
    args = parser.parse_args()
    for side in args.sides:
        t0 = time.perf_counter()
        make = make_pan_scene if args.task == "pansharpen" else make_scene
        path_a, path_b = make(args.work / "scenes", side)
        made = time.perf_counter() - t0
        manifest = args.work / f"pairs_{args.task}_{side}.csv"
        with open(manifest, "w", newline="") as f:
            csv.writer(f).writerows([["pair_id", "uri_a", "uri_b", "task"], ["scene", path_a, path_b, args.task]])
        for mode in args.modes:
            out = args.work / f"out_{args.task}_{side}_{mode}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            load = os.getloadavg()[0]
            result = run_job(manifest, out, mode, args.tile, args.actors, args.sets, args.task)
            result["sets"] = args.sets
            import rasterio

            with rasterio.open(path_b) as b:  # the full-resolution input (PAN for pansharpen)
                pixels = b.height * b.width
            result.update(side=side, megapixels=round(pixels / 1e6, 1), scene_build_s=round(made, 1))
            result["load_avg_1m_before"] = round(load, 2)
            print(json.dumps(result), flush=True)
            if not args.keep_outputs:
                subprocess.run(["rm", "-rf", str(out)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
