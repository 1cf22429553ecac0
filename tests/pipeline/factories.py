"""Fixture factories for the ingest tests: small real images written into ``tmp_path`` and uploaded to S3.

Real pixels come from licence-clear shared datasets: crops of MFI-WHU (MIT) for plain images and of rasterio's
``RGB.byte.tif`` test raster (CC0, Landsat 7) for GeoTIFFs. Edge cases (16-bit, int16, float32, many bands,
truncation) are derived from those crops deterministically. Nothing binary is committed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SHARED_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"  # as in tests/conftest.py
MFI_WHU = SHARED_DATASETS / "MFI-WHU"
RGB_BYTE = SHARED_DATASETS / "GeoTIFF_rasterio_testdata" / "RGB.byte.tif"


def mfi_crop(index: int = 1, source: int = 1, height: int = 40, width: int = 56) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 crop of MFI-WHU ``source{source}/{index}.jpg`` at (100, 120)."""
    from PIL import Image

    with Image.open(MFI_WHU / f"source{source}" / f"{index}.jpg") as image:
        array = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(array[100 : 100 + height, 120 + 0 : 120 + width])


def landsat_crop(height: int = 48, width: int = 64, row: int = 300, col: int = 300):
    """A crop of ``RGB.byte.tif``: ``((H, W, 3) uint8, crs, transform)`` with the crop's own transform."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(RGB_BYTE) as src:
        window = Window(col, row, width, height)
        bands = src.read(window=window)
        return np.moveaxis(bands, 0, -1).copy(), src.crs, src.window_transform(window)


def write_pillow(path: Path, array: np.ndarray, fmt: str, **save_kw) -> Path:
    """Write a ``(H, W, C)`` uint8 (or ``(H, W, 1)`` uint16 for PNG) array with Pillow."""
    from PIL import Image

    data = array[:, :, 0] if array.shape[2] == 1 else array
    Image.fromarray(data).save(path, format=fmt, **save_kw)
    return path


def write_gdal(path: Path, array: np.ndarray, driver: str = "GTiff", **profile) -> Path:
    """Write ``(H, W, C)`` with rasterio (GTiff or PNG); ``profile`` adds crs, transform, nodata ..."""
    import rasterio

    descriptions = profile.pop("descriptions", None)
    height, width, count = array.shape
    with rasterio.open(
        path, "w", driver=driver, height=height, width=width, count=count, dtype=array.dtype.name, **profile
    ) as dst:
        dst.write(np.moveaxis(array, -1, 0))
        for i, text in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, text)
    for aux in Path(path).parent.glob(Path(path).name + ".aux.xml"):
        aux.unlink()
    return path


def geotiff_variant(dtype: str, bands: int = 3, height: int = 48, width: int = 64) -> np.ndarray:
    """Landsat crop pixels turned into ``dtype`` with ``bands`` bands (extra bands are band mixes)."""
    base, _, _ = landsat_crop(height, width)
    planes = [base[:, :, i % 3].astype(np.float64) * (1 + i // 3) for i in range(bands)]
    stack = np.stack(planes, axis=-1)
    if dtype == "uint8":
        return np.clip(stack, 0, 255).astype(np.uint8)
    if dtype == "uint16":
        return (stack * 257).astype(np.uint16)
    if dtype == "int16":
        return (stack * 100 - 12000).astype(np.int16)
    return (stack / 255.0 - 0.25).astype(dtype)


def write_geotiff(
    path: Path,
    array: np.ndarray,
    *,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    crs: str | None = "EPSG:32618",
    transform=None,
    tiled: bool = True,
) -> Path:
    """A GeoTIFF of ``array`` on the Landsat crop's grid (or ``transform``), tiled 16x16."""
    _, crop_crs, crop_transform = landsat_crop(array.shape[0], array.shape[1])
    profile = {"crs": crs if crs is not None else None, "transform": transform or crop_transform}
    if crs is None:
        profile.pop("crs")
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    return write_gdal(path, array, "GTiff", descriptions=descriptions, **profile)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (in place)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def write_manifest(path: Path, rows: Iterable[dict], fmt: str | None = None) -> Path:
    """Write manifest rows as CSV, Parquet or JSONL (by ``fmt`` or the file extension)."""
    import json

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = list(rows)
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    table = pa.Table.from_pylist(rows)
    if fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def make_folder_pairs(root: Path, folder_a: str, folder_b: str, stems_a: Sequence[str], stems_b: Sequence[str]):
    """Two sub-folders of small PNGs; ``stems_*`` are file names (with extension) on each side."""
    for folder, names, source in ((folder_a, stems_a, 1), (folder_b, stems_b, 2)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            target = root / folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            write_pillow(target, mfi_crop(1 + i % 3, source, 8, 8), "PNG")
    return root


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def upload_tree(endpoint: str, local: Path, bucket: str, prefix: str = "") -> str:
    """Upload every file below ``local`` to ``s3://bucket/prefix/...``; returns the prefix URI."""
    client = s3_client(endpoint)
    for dirpath, _, files in os.walk(local):
        for name in files:
            full = Path(dirpath) / name
            key = "/".join(p for p in (prefix, full.relative_to(local).as_posix()) if p)
            client.upload_file(str(full), bucket, key)
    return f"s3://{bucket}/{prefix}".rstrip("/")


def upload_file(endpoint: str, local: Path, bucket: str, key: str) -> str:
    s3_client(endpoint).upload_file(str(local), bucket, key)
    return f"s3://{bucket}/{key}"


# Runs the batch job like `python jobs/batch_fuse.py ARGS` (``python -c BATCH_FUSE_WRAPPER ARGS`` from the repository
# root), then reports on stderr whether Ray was ever imported (``RAY_IMPORTED=True/False``).
BATCH_FUSE_WRAPPER = """
import runpy, sys
sys.argv = ["jobs/batch_fuse.py", *sys.argv[1:]]
code = 0
try:
    runpy.run_path("jobs/batch_fuse.py", run_name="__main__")
except SystemExit as e:
    code = e.code
print("RAY_IMPORTED=" + str("ray" in sys.modules), file=sys.stderr)
sys.exit(code)
"""
