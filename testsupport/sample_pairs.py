"""Small real image pairs for operations tests and benchmarks: crops of the bundled MFI-WHU multi-focus samples."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ops.cluster_config import REPO_ROOT

__all__ = ["write_crop_pairs"]

SAMPLES = REPO_ROOT / "samples" / "mff"


def write_crop_pairs(folder: Path, n: int, *, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` PNG pairs (random ``size`` x ``size`` crops, same window in both images) and a manifest.

    Returns the manifest path (CSV: pair_id, uri_a, uri_b, task=mff; absolute URIs, so a job can read it from
    any working directory). Deterministic for a given seed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in (SAMPLES / "source1").glob("*.png"))
    sources = [
        (
            np.asarray(Image.open(SAMPLES / "source1" / name)),
            np.asarray(Image.open(SAMPLES / "source2" / name)),
        )
        for name in names
    ]
    rows = []
    for i in range(n):
        image_a, image_b = sources[i % len(sources)]
        top = int(rng.integers(0, image_a.shape[0] - size))
        left = int(rng.integers(0, image_a.shape[1] - size))
        pair_id = f"pair{i:04d}"
        for suffix, image in (("a", image_a), ("b", image_b)):
            Image.fromarray(image[top : top + size, left : left + size]).save(folder / f"{pair_id}_{suffix}.png")
        rows.append(
            {
                "pair_id": pair_id,
                "uri_a": str(folder / f"{pair_id}_a.png"),
                "uri_b": str(folder / f"{pair_id}_b.png"),
                "task": "mff",
            }
        )
    manifest = folder / "pairs.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["pair_id", "uri_a", "uri_b", "task"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
