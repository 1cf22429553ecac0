"""Convert the remote-sensing ``.mat`` scenes of ``../shared/datasets`` to GeoTIFF pairs plus a manifest.

    python scripts/convert_remote_sensing.py --output /tmp/rs_pairs                 # every scene, whole
    python scripts/convert_remote_sensing.py --output /tmp/rs_pairs --crop-ms 200   # centre crops

Writes, into ``--output`` (a folder outside the repository; the data stay out of git):

* ``<pair_id>_a.tif`` — the low-resolution spectral image (MS or HS), ``<pair_id>_b.tif`` — the
  high-resolution image (PAN, or MS for HS–MS fusion). Plain GeoTIFFs without CRS or geotransform (the sources
  store none), band descriptions set (``red``/``green``/``blue`` where known, which the evaluation uses for
  RGB views and for rio-pansharpen's Brovey).
* ``manifest.csv`` — ``pair_id,uri_a,uri_b,task`` with absolute paths, readable by ``jobs/evaluate.py`` and
  ``jobs/batch_fuse.py``.
* ``README.md`` — what was converted, how, and from where.

Scenes (pair ids):

===================== ============ =========================================================================
pair id               task         source → what is written
===================== ============ =========================================================================
``wv2``               pansharpen   Pansharpening_WV2/imgWV2.mat: I_MS 320×320×8, I_PAN 1280×1280 (r = 4),
                                   uint16 11-bit → float32 / 2047
``landsat7_1`` … _7   pansharpen   Pansharpening_Landsat7_FuseBox/cropped/N_{ms,pan}.mat: 400×400×6 and
                                   800×800 (r = 2), uint8 kept
``paris_hs_pan``      pansharpen   HS_Paris_EO1_HySure/data/paris_data_hs_pan.mat: Hyperion HSim 72×58×128,
                                   ALI PCim 216×174 (r = 3), float64 → float32 / (max over both)
``paris_hs_ms``       hsi_msi      paris_data_hs_ms.mat: Hyperion HSim 72×72×128, ALI MSim 72×72×9, one grid
                                   (evaluate with ``same_grid_ratio=3``, as HySure's demo degrades the HS by
                                   3); float64 → float32 / (max over both)
===================== ============ =========================================================================

Float scenes are divided by one factor per scene (the maximum over both images), so values lie in [0, 1] and
the two images keep their relative radiometry. ``--crop-ms N`` keeps the centre N×N of the low-resolution
image (and the matching r·N×r·N of the high-resolution one, on the same aligned grid).
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"

WV2_BANDS = ("coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2")
LANDSAT_BANDS = ("red", "green", "blue", "nir", "mid_ir", "swir")  # FuseBox order (bands 1 and 3 swapped)
ALI_MS_BANDS = tuple(f"ali_ms_{i}" for i in range(1, 10))
# Hyperion VNIR centre wavelengths, approximately 355.59 + 10.18 * (band - 1) nm: the bands nearest these are
# labelled red / green / blue (for RGB views and rio-pansharpen's Brovey only).
RGB_NM = {"red": 650.0, "green": 550.0, "blue": 470.0}


def _load(path: Path) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected the dataset under --datasets)")
    return loadmat(str(path))


def _hyperion_descriptions(band_numbers: np.ndarray) -> list[str]:
    numbers = [int(b) for b in np.asarray(band_numbers).ravel()]
    names = [f"hyperion_{b}" for b in numbers]
    wavelengths = np.array([355.59 + 10.18 * (b - 1) for b in numbers])
    for colour, nm in RGB_NM.items():
        names[int(np.argmin(np.abs(wavelengths - nm)))] = colour
    return names


def write_tif(path: Path, image: np.ndarray, descriptions: list[str] | tuple[str, ...]) -> None:
    """Write ``(H, W[, C])`` as a plain (not georeferenced) GeoTIFF with band descriptions."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    cube = image[..., None] if image.ndim == 2 else image
    profile = {
        "driver": "GTiff", "height": cube.shape[0], "width": cube.shape[1], "count": cube.shape[2],
        "dtype": str(cube.dtype), "compress": "deflate",
        "interleave": "pixel" if cube.shape[2] <= 16 else "band",
    }  # fmt: skip
    with warnings.catch_warnings():
        # These scenes have no georeferencing: writing one without a transform is the point, not a mistake.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dataset:
            dataset.write(np.ascontiguousarray(cube.transpose(2, 0, 1)))
            for i, name in enumerate(descriptions, start=1):
                dataset.set_band_description(i, name)


def crop_centre(low: np.ndarray, high: np.ndarray, ratio: int, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop of at most ``size``² low-resolution pixels and the matching high-resolution window."""
    if size is None:
        return low, high
    h, w = low.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return (
        low[top : top + ch, left : left + cw],
        high[top * ratio : (top + ch) * ratio, left * ratio : (left + cw) * ratio],
    )


def scenes(datasets: Path):
    """Yield ``(pair_id, task, low, high, ratio, low_descriptions, high_descriptions)`` for every scene."""
    wv2 = _load(datasets / "Pansharpening_WV2" / "imgWV2.mat")
    bits = int(np.asarray(wv2["L"]).ravel()[0])
    scale = float(2**bits - 1)
    ratio = int(np.asarray(wv2["ratio"]).ravel()[0])
    ms, pan = (wv2["I_MS"] / scale).astype(np.float32), (wv2["I_PAN"] / scale).astype(np.float32)
    yield "wv2", "pansharpen", ms, pan, ratio, WV2_BANDS, ("pan",)
    landsat = datasets / "Pansharpening_Landsat7_FuseBox" / "cropped"
    for n in range(1, 40):
        ms_path, pan_path = landsat / f"{n}_ms.mat", landsat / f"{n}_pan.mat"
        if not ms_path.is_file() or not pan_path.is_file():
            continue
        ms, pan = _load(ms_path)["cropped_im"], _load(pan_path)["cropped_gray"]
        yield f"landsat7_{n}", "pansharpen", ms, pan, pan.shape[0] // ms.shape[0], LANDSAT_BANDS, ("pan",)
    paris = datasets / "HS_Paris_EO1_HySure" / "data"
    hs_pan = _load(paris / "paris_data_hs_pan.mat")
    hs, pan = hs_pan["HSim"], hs_pan["PCim"]
    scale = float(max(hs.max(), pan.max()))
    yield (
        "paris_hs_pan", "pansharpen", (hs / scale).astype(np.float32), (pan / scale).astype(np.float32),
        pan.shape[0] // hs.shape[0], _hyperion_descriptions(hs_pan["non_del_bands"]), ("pan",),
    )  # fmt: skip
    hs_ms = _load(paris / "paris_data_hs_ms.mat")
    hs, ms = hs_ms["HSim"], hs_ms["MSim"]
    scale = float(max(hs.max(), ms.max()))
    yield (
        "paris_hs_ms", "hsi_msi", (hs / scale).astype(np.float32), (ms / scale).astype(np.float32), 1,
        _hyperion_descriptions(hs_ms["non_del_bands"]), ALI_MS_BANDS,
    )  # fmt: skip


README = """# Remote-sensing pairs (converted)

Written by `scripts/convert_remote_sensing.py` from `{datasets}` (see each dataset's SOURCE.md for provenance
and licence). Plain GeoTIFFs without CRS; `*_a.tif` = low-resolution spectral image, `*_b.tif` =
high-resolution image; `manifest.csv` lists the pairs. Crop: {crop}.

| pair_id | task | A (low res) | B (high res) | ratio | dtype |
|---|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="Output folder (outside the repository).")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="The shared datasets folder.")
    parser.add_argument("--crop-ms", type=int, help="Centre crop of at most N x N low-resolution pixels.")
    parser.add_argument("--only", help="Comma-separated pair ids to convert (default: all).")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    if output == REPO or REPO in output.parents:
        print(f"refusing to write into the repository ({output}): choose a folder outside it", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    manifest_rows, table_rows = [], []
    for pair_id, task, low, high, ratio, names_low, names_high in scenes(args.datasets):
        if only and pair_id not in only:
            continue
        low, high = crop_centre(low, high, ratio, args.crop_ms)
        uri_a, uri_b = output / f"{pair_id}_a.tif", output / f"{pair_id}_b.tif"
        write_tif(uri_a, low, names_low)
        write_tif(uri_b, high, names_high)
        manifest_rows.append([pair_id, str(uri_a), str(uri_b), task])
        bands = lambda image: 1 if image.ndim == 2 else image.shape[2]  # noqa: E731
        table_rows.append(
            f"| {pair_id} | {task} | {low.shape[0]}×{low.shape[1]}×{bands(low)} | "
            f"{high.shape[0]}×{high.shape[1]}×{bands(high)} | {ratio} | {low.dtype} |"
        )
        print(f"{pair_id}: A {low.shape} B {high.shape} ratio {ratio} ({low.dtype})")
    with (output / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair_id", "uri_a", "uri_b", "task"])
        writer.writerows(manifest_rows)
    crop = f"centre {args.crop_ms}×{args.crop_ms} low-resolution pixels" if args.crop_ms else "none (whole scenes)"
    (output / "README.md").write_text(README.format(datasets=args.datasets, crop=crop, rows="\n".join(table_rows)))
    print(f"{len(manifest_rows)} pairs -> {output / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
