"""Histogram metrics: entropy (EN) and fusion mutual information (MI).

Both work on 256 grey levels of the 0–255 scale. Conventions (see the package docstring):

======== ================================== ============================================================
name     EN                                 MI
======== ================================== ============================================================
standard luma, rounded, log2 (bits)         luma, rounded, 256×256 joint histogram, log2 (bits)
cddfuse  luma rounded (OpenCV), log2 (bits) same levels, natural log (nats, sklearn ``mutual_info_score``)
vifb     per RGB channel, floored, bits     per channel, min–max stretched to 0–255, natural log (nats)
======== ================================== ============================================================

METRICS.md lists VIFB's MI as bits; the toolbox's ``metricsMutinf.m`` uses MATLAB ``log`` and its published
values are reproduced only in nats (checked on the VIFB reference images, see
``tests/core/test_metrics_vifb.py``).
"""

from __future__ import annotations

import numpy as np

from maugif_core.metrics._common import (
    Planes,
    image_planes,
    planes_mean,
    prepare_single,
    triplet_planes,
)

__all__ = ["entropy", "mutual_information"]

_LEVELS = 256


def _levels(plane: np.ndarray, how: str) -> np.ndarray:
    """Integer grey levels 0..255 of a 0–255 plane: ``round`` (half to even), ``floor`` or ``stretch``."""
    if how == "floor":
        q = np.floor(plane)
    elif how == "stretch":
        lo, hi = float(plane.min()), float(plane.max())
        if hi == lo:
            return np.zeros(plane.shape, dtype=np.int64)
        # MATLAB int16() rounds half away from zero; the stretched values are >= 0, so floor(x + 0.5).
        q = np.floor((plane - lo) / (hi - lo) * 255.0 + 0.5)
    else:
        q = np.rint(plane)
    return np.clip(q, 0, _LEVELS - 1).astype(np.int64)


def _entropy_of_counts(counts: np.ndarray, log: np.ufunc) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * log(p)).sum())


def _plane_entropy(plane: np.ndarray, how: str) -> float:
    counts = np.bincount(_levels(plane, how).ravel(), minlength=_LEVELS)
    return _entropy_of_counts(counts, np.log2)


def _pair_mi(x: np.ndarray, y: np.ndarray, log: np.ufunc) -> float:
    """Mutual information of two integer level maps from their 256×256 joint histogram."""
    joint = np.bincount((x * _LEVELS + y).ravel(), minlength=_LEVELS * _LEVELS).reshape(_LEVELS, _LEVELS)
    h_x = _entropy_of_counts(joint.sum(axis=1), log)
    h_y = _entropy_of_counts(joint.sum(axis=0), log)
    h_xy = _entropy_of_counts(joint.ravel(), log)
    return h_x + h_y - h_xy


def entropy(image: np.ndarray, convention: str = "standard") -> float:
    """Shannon entropy (EN) of the 256-level grey histogram, in bits.

    ``standard``: BT.601 luma on 0–255 rounded to integers. ``cddfuse``: the same (OpenCV grey, rounded).
    ``vifb``: each channel floored to integers, the entropies averaged over channels (VIFB
    ``metricsEntropy``).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1].
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        Entropy in bits, in [0, 8].
    """
    return _entropy(image_planes(prepare_single(image, "image"), convention), convention)


def _entropy(planes: list[np.ndarray], convention: str) -> float:
    how = "floor" if convention == "vifb" else "round"
    return float(np.mean([_plane_entropy(p, how) for p in planes]))


def mutual_information(
    fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard"
) -> float:
    """Fusion mutual information MI = MI(A, F) + MI(B, F) from 256×256 joint histograms.

    ``standard``: luma rounded to integer levels, log2 (bits). ``cddfuse``: the same levels, natural log
    (nats, as ``sklearn.metrics.mutual_info_score``; × 1/ln 2 = 1.4427 to get bits). ``vifb``: per channel,
    each image min–max stretched to 0–255 and rounded before the histogram, natural log (nats), averaged over
    channels.

    Args:
        fused, image_a, image_b: ``(H, W)`` or ``(H, W, C)`` uint8, uint16 or float in [0, 1], same H and W.
        convention: ``standard``, ``cddfuse`` or ``vifb``.

    Returns:
        MI in bits (``standard``) or nats (``cddfuse``, ``vifb``); >= 0.
    """
    return _mutual_information(triplet_planes(fused, image_a, image_b, convention), convention)


def _mutual_information(planes: Planes, convention: str) -> float:
    how = "stretch" if convention == "vifb" else "round"
    log = np.log2 if convention == "standard" else np.log

    def one(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        lf = _levels(f, how)
        return _pair_mi(_levels(a, how), lf, log) + _pair_mi(_levels(b, how), lf, log)

    return planes_mean(planes, one)
