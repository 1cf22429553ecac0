"""I/O throughput of read + decode + encode + write: local disk vs. S3, Ray Data vs. a plain loop.

Measures pairs/s for the work that bounds our pipeline (USERS.md: the model is ~1,000x cheaper per pixel than
ResNet-50, so I/O and codecs are the limit). The "fusion" is a pixel average: a stand-in that costs almost
nothing, so the numbers are the I/O ceiling of the write path.

Four configurations, in one run, on the same synthetic pairs:

- ``loop``: one Python process, pair after pair (fsspec read → decode → average → encode → atomic write);
- ``ray``: Ray Data ``map`` (read + decode + average, CPU tasks of 0.5 CPU) → :class:`FusedImageDatasink`
  (encode + atomic write + manifest);

each over local disk and over a real S3 API server (moto, started here in a child process so that its CPU use
is not charged to the loop's GIL). Kinds: ``png`` (RGB uint8 PNG pairs → fused PNG) and ``cog`` (4-band uint16
GeoTIFF pairs → COG tiles + VRT + STAC item).

Run:
    python benchmarks/bench_io.py --pairs 200 --size 256 --kinds png,cog
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipeline.config.output_config import OutputConfig  # noqa: E402
from pipeline.fuse.sinks import write_row  # noqa: E402
from pipeline.io.fsutil import filesystem_for  # noqa: E402
from pipeline.schema import FUSED, META_A, META_B, PAIR_ID, TASK, URI_A, URI_B  # noqa: E402

S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

try:  # the colleague's reader, when present
    from pipeline.io.readers import read_image as _read_image  # type: ignore[attr-defined]  # noqa: E402
except ImportError:
    _read_image = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3() -> tuple[subprocess.Popen, str]:
    """moto's ThreadedMotoServer in a child process; returns (process, endpoint URL)."""
    port = _free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer; "
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}); s.start(); time.sleep(10**6)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def decode(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode PNG / GeoTIFF bytes with rasterio: ``(C, H, W)`` and the meta dict of the row schema."""
    from rasterio.io import MemoryFile

    with MemoryFile(data) as mem, mem.open() as src:
        meta = {
            "dtype": src.dtypes[0],
            "count": src.count,
            "height": src.height,
            "width": src.width,
            "nodata": src.nodata,
            "crs": src.crs.to_wkt() if src.crs else None,
            "transform": list(src.transform)[:6] if src.crs else None,
            "descriptions": list(src.descriptions),
        }
        return src.read(), meta


def read_one(uri: str) -> tuple[np.ndarray, dict[str, Any]]:
    """``(C, H, W)`` pixels and meta: through ``pipeline.io.readers.read_image`` when present, else rasterio."""
    if _read_image is not None:
        image, meta = _read_image(uri)
        return np.moveaxis(image, -1, 0), meta
    fs, path = filesystem_for(uri)
    return decode(fs.cat_file(path))


def read_pair(row: dict[str, Any]) -> dict[str, Any]:
    """Read, decode and 'fuse' (average) one pair into a sink row."""
    image_a, meta_a = read_one(row[URI_A])
    image_b, meta_b = read_one(row[URI_B])
    fused = ((image_a.astype(np.uint32) + image_b) // 2).astype(image_a.dtype)
    return {
        PAIR_ID: row[PAIR_ID],
        FUSED: fused,
        META_A: json.dumps(meta_a),
        META_B: json.dumps(meta_b),
        TASK: "vif",
    }


def make_inputs(root: str, kind: str, pairs: int, size: int) -> list[dict[str, str]]:
    """Write ``pairs`` synthetic pairs under ``root/inputs``; return pair rows."""
    from affine import Affine
    from rasterio.io import MemoryFile

    rng = np.random.default_rng(0)
    fs, base = filesystem_for(root)
    rows = []
    for i in range(pairs):
        uris = []
        for side in "ab":
            # Smooth content with noise: compresses like real imagery, not like white noise.
            yy, xx = np.mgrid[0:size, 0:size]
            if kind == "png":
                img = (np.sin(xx / 17 + i) + np.cos(yy / 23)) * 60 + 128 + rng.normal(0, 8, (3, size, size))
                img = np.clip(img, 0, 255).astype(np.uint8)
                profile = {"driver": "PNG"}
            else:
                img = (np.sin(xx / 17 + i) + np.cos(yy / 23)) * 9000 + 30000 + rng.normal(0, 500, (4, size, size))
                img = np.clip(img, 0, 65535).astype(np.uint16)
                profile = {
                    "driver": "GTiff",
                    "crs": "EPSG:32618",
                    "transform": Affine(10, 0, 5e5, 0, -10, 4e6),
                    "tiled": True,
                    "compress": "deflate",
                }
            with MemoryFile() as mem:
                with mem.open(count=img.shape[0], height=size, width=size, dtype=img.dtype, **profile) as dst:
                    dst.write(img)
                data = mem.read()
            ext = "png" if kind == "png" else "tif"
            path = f"{base}/inputs/{side}/{i:06d}.{ext}"
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, data)
            uris.append(f"{root}/inputs/{side}/{i:06d}.{ext}")
        rows.append({PAIR_ID: f"{i:06d}", URI_A: uris[0], URI_B: uris[1]})
    return rows


def run_loop(rows: list[dict[str, str]], config: OutputConfig) -> float:
    fs, _ = filesystem_for(config.uri)
    start = time.perf_counter()
    for row in rows:
        result = write_row(read_pair(row), config, fs)
        if not result.get("ok"):
            raise RuntimeError(result["record"])
    return time.perf_counter() - start


def run_ray(rows: list[dict[str, str]], config: OutputConfig) -> float:
    import ray

    from pipeline.fuse.sinks import FusedImageDatasink

    sink = FusedImageDatasink(config)
    start = time.perf_counter()
    blocks = max(2, len(rows) // 8)  # ~8 pairs per block, as a manifest-driven read would produce
    dataset = ray.data.from_items(rows, override_num_blocks=blocks).map(read_pair, num_cpus=0.5)
    dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0.5})
    elapsed = time.perf_counter() - start
    if sink.summary is None or sink.summary["ok"] != len(rows):
        raise RuntimeError(f"ray run wrote {sink.summary}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--kinds", default="png,cog")
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings per configuration")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    proc, endpoint = start_s3()
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    scratch = tempfile.mkdtemp(prefix="bench_io_")
    import boto3
    import ray

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "RAY_AUTH_MODE": "disabled"}},
    )
    results = []
    try:
        for kind in args.kinds.split(","):
            fmt = "png" if kind == "png" else "cog"
            for storage, root in (("local", f"{scratch}/{kind}"), ("s3", f"s3://bench/{kind}")):
                rows = make_inputs(root, kind, args.pairs, args.size)
                for mode, runner in (("loop", run_loop), ("ray", run_ray)):
                    if mode == "ray":  # warm the worker pool so startup is not charged to the measurement
                        run_ray(rows[:4], OutputConfig(uri=f"{root}/warm", format=fmt))
                    times = []
                    for rep in range(args.repeats):
                        config = OutputConfig(uri=f"{root}/out-{mode}-{rep}", format=fmt, cog_tile_size=args.size)
                        times.append(runner(rows, config))
                    best = min(times)
                    results.append((kind, storage, mode, args.pairs / best, best))
                    print(
                        f"{kind:4s} {storage:5s} {mode:4s} {args.pairs / best:8.1f} pairs/s  ({best:.2f} s)",
                        flush=True,
                    )
    finally:
        ray.shutdown()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)

    print("\nkind  storage  loop pairs/s  ray pairs/s  ray/loop")
    for kind in args.kinds.split(","):
        for storage in ("local", "s3"):
            loop = next(r[3] for r in results if r[:3] == (kind, storage, "loop"))
            ray_ = next(r[3] for r in results if r[:3] == (kind, storage, "ray"))
            print(f"{kind:5s} {storage:8s} {loop:12.1f} {ray_:12.1f} {ray_ / loop:9.2f}")
    print(
        "\nreader: "
        + ("pipeline.io.readers.read_image" if _read_image else "rasterio MemoryFile (pipeline.io.readers absent)")
    )
    print(f"cpus: {os.cpu_count()}; command: python benchmarks/bench_io.py {' '.join(argv or sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
