"""Regenerate the bundled sample pairs from ../shared/datasets (deterministic; run from the repo root).

    .venv/bin/python samples/make_samples.py

Everything written here is a small crop of a licence-clear source (see samples/README.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import rasterio
import scipy.io
from PIL import Image
from rasterio.transform import Affine
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parent
DATASETS = ROOT.parent.parent / "shared" / "datasets"

MFF_PAIRS = ("1", "3", "5", "7")  # MFI-WHU pairs bundled as samples (others stay free for training)
CROP = 256


def make_mff(rows: list[dict]) -> None:
    for sub in ("source1", "source2"):
        (ROOT / "mff" / sub).mkdir(parents=True, exist_ok=True)
    for stem in MFF_PAIRS:
        images = [
            Image.open(DATASETS / "MFI-WHU" / sub / f"{stem}.jpg").convert("RGB") for sub in ("source1", "source2")
        ]
        w, h = images[0].size
        left, top = (w - CROP) // 2, (h - CROP) // 2
        for sub, image in zip(("source1", "source2"), images, strict=True):
            # PNG keeps the crop lossless (no second JPEG generation).
            image.crop((left, top, left + CROP, top + CROP)).save(
                ROOT / "mff" / sub / f"mfiwhu_{stem}.png", optimize=True
            )
        rows.append(
            {
                "pair_id": f"mfiwhu_{stem}",
                "uri_a": f"mff/source1/mfiwhu_{stem}.png",
                "uri_b": f"mff/source2/mfiwhu_{stem}.png",
                "task": "mff",
            }
        )


def make_pansharpen_geotiff(rows: list[dict]) -> None:
    """rasterio's CC0 Landsat RGB.byte.tif as the MS image; a synthetic PAN (band mean, bilinear 2x) on a grid of
    half the pixel size. The PAN is SYNTHETIC: it exercises georeferenced I/O, not fusion quality."""
    out = ROOT / "pansharpen"
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(DATASETS / "GeoTIFF_rasterio_testdata" / "RGB.byte.tif") as src:
        window = Window(300, 250, 192, 160)
        ms = src.read(window=window)
        transform = src.window_transform(window)
        profile = dict(
            driver="GTiff",
            dtype="uint8",
            count=3,
            height=ms.shape[1],
            width=ms.shape[2],
            crs=src.crs,
            transform=transform,
            nodata=src.nodata,
            compress="deflate",
            tiled=True,
            blockxsize=64,
            blockysize=64,
        )
    with rasterio.open(out / "landsat_rgb_ms.tif", "w", **profile) as dst:
        dst.write(ms)
        dst.descriptions = ("red", "green", "blue")
    mean = ms.astype(np.float32).mean(axis=0)
    # Bilinear 2x upsampling with pixel-centre alignment.
    h, w = mean.shape
    ys = (np.arange(2 * h) + 0.5) / 2 - 0.5
    xs = (np.arange(2 * w) + 0.5) / 2 - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
    y1, x1 = np.clip(y0 + 1, 0, h - 1), np.clip(x0 + 1, 0, w - 1)
    wy, wx = np.clip(ys - y0, 0, 1)[:, None], np.clip(xs - x0, 0, 1)[None, :]
    pan = (
        mean[y0][:, x0] * (1 - wy) * (1 - wx)
        + mean[y0][:, x1] * (1 - wy) * wx
        + mean[y1][:, x0] * wy * (1 - wx)
        + mean[y1][:, x1] * wy * wx
    )
    nodata_mask = (ms == 0).all(axis=0).repeat(2, axis=0).repeat(2, axis=1)
    pan = np.where(nodata_mask, 0, np.clip(np.rint(pan), 1, 255)).astype(np.uint8)
    pan_transform = transform * Affine.scale(0.5)
    profile.update(count=1, height=2 * h, width=2 * w, transform=pan_transform)
    with rasterio.open(out / "landsat_pan_synthetic.tif", "w", **profile) as dst:
        dst.write(pan[None])
        dst.descriptions = ("pan (synthetic: mean of RGB, bilinear 2x)",)
    rows.append(
        {
            "pair_id": "landsat_rgb_synthetic_pan",
            "uri_a": "pansharpen/landsat_rgb_ms.tif",
            "uri_b": "pansharpen/landsat_pan_synthetic.tif",
            "task": "pansharpen",
        }
    )


def make_pansharpen_real(rows: list[dict]) -> None:
    """A crop of FuseBox Landsat-7 scene 1 (real PAN, 6-band MS, ratio 2; no CRS stored: plain TIFF grid)."""
    out = ROOT / "pansharpen"
    ms = scipy.io.loadmat(DATASETS / "Pansharpening_Landsat7_FuseBox" / "cropped" / "1_ms.mat")["cropped_im"]
    pan = scipy.io.loadmat(DATASETS / "Pansharpening_Landsat7_FuseBox" / "cropped" / "1_pan.mat")["cropped_gray"]
    ms_crop = ms[100:196, 100:196, :]  # 96 x 96 x 6
    pan_crop = pan[200:392, 200:392]  # 192 x 192, the same area at ratio 2
    with rasterio.open(
        out / "landsat7_scene1_ms.tif",
        "w",
        driver="GTiff",
        dtype="uint8",
        count=6,
        height=96,
        width=96,
        compress="deflate",
    ) as dst:
        dst.write(np.moveaxis(ms_crop, 2, 0))
        dst.descriptions = ("red", "green", "blue", "nir", "mid-ir", "swir")
    with rasterio.open(
        out / "landsat7_scene1_pan.tif",
        "w",
        driver="GTiff",
        dtype="uint8",
        count=1,
        height=192,
        width=192,
        compress="deflate",
    ) as dst:
        dst.write(pan_crop[None])
        dst.descriptions = ("pan",)
    rows.append(
        {
            "pair_id": "landsat7_scene1",
            "uri_a": "pansharpen/landsat7_scene1_ms.tif",
            "uri_b": "pansharpen/landsat7_scene1_pan.tif",
            "task": "pansharpen",
        }
    )


def main() -> None:
    rows: list[dict] = []
    make_mff(rows)
    make_pansharpen_geotiff(rows)
    make_pansharpen_real(rows)
    with open(ROOT / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["pair_id", "uri_a", "uri_b", "task"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} sample pairs under {ROOT}")


if __name__ == "__main__":
    main()
