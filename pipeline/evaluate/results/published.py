"""Published numbers the results are set against: METRICS.md's CDDFuse-lineage rows and the VIFB / MEFB
toolboxes' per-image tables."""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluate.results.rows import method_means

# METRICS.md, CDDFuse-lineage published rows: set -> method -> (EN, SD, SF, MI, SCD, VIF, Qabf, SSIM).
PUBLISHED_MD = {
    "tno": {
        "U2Fusion": (6.83, 34.55, 11.52, 1.37, 1.71, 0.58, 0.44, 0.99),
        "DeFusion": (6.95, 38.41, 8.21, 1.78, 1.64, 0.60, 0.41, 0.96),
        "CDDFuse": (7.12, 46.00, 13.15, 2.19, 1.76, 0.77, 0.54, 1.03),
    },
    "roadscene": {
        "U2Fusion": (7.09, 38.12, 13.25, 1.87, 1.70, 0.60, 0.51, 0.97),
        "DeFusion": (7.23, 44.44, 10.22, 2.25, 1.69, 0.63, 0.48, 0.89),
        "CDDFuse": (7.44, 54.67, 16.36, 2.30, 1.81, 0.69, 0.52, 0.98),
    },
    "mri_ct": {
        "DeFusion": (4.63, 66.38, 21.56, 2.20, 1.12, 0.47, 0.44, 1.29),
        "CDDFuse": (4.88, 79.17, 38.14, 2.61, 1.41, 0.61, 0.68, 1.34),
    },
    "mri_pet": {
        "DeFusion": (4.17, 64.65, 22.35, 1.74, 1.48, 0.58, 0.56, 1.45),
        "CDDFuse": (4.23, 70.73, 29.57, 2.03, 1.69, 0.71, 0.71, 1.49),
    },
    "mri_spect": {
        "DeFusion": (3.81, 56.65, 15.45, 1.80, 1.27, 0.61, 0.56, 1.46),
        "CDDFuse": (3.90, 58.31, 20.87, 2.49, 1.35, 0.97, 0.78, 1.48),
    },
}

# Toolbox metric names -> ours (vifb convention; VIFB's "Variance" is the standard deviation).
VIFB_NAMES = {
    "Entropy": "en",
    "Variance": "sd",
    "Spatial_frequency": "sf",
    "Avg_gradient": "ag",
    "Mutinf": "mi",
    "Qabf": "qabf",
    "Ssim": "ssim",
    "Psnr": "psnr",
}

MEFB_NAMES = {
    "Entropy": "en",
    "SD": "sd",
    "Spatial_frequency": "sf",
    "Avg_gradient": "ag",
    "Qabf": "qabf",
    "Psnr": "psnr",
}


def published_toolbox(table: Path, names: dict[str, str], images: set[str]) -> dict[str, dict[str, float]]:
    """Per-method means of a toolbox's per-image table over ``images`` (case-insensitive), in our metric
    names."""
    import pandas as pd

    frame = pd.read_csv(table)
    frame = frame[frame["image"].str.lower().isin({i.lower() for i in images}) & frame["metric"].isin(names)]
    frame = frame.assign(metric=frame["metric"].map(names))
    return method_means(frame)
