"""Comparing two methods' means: which metrics count, which are lower-is-better, and who is ahead where."""

from __future__ import annotations

TARGET_METRICS = ("en", "sd", "sf", "mi", "scd", "vif", "qabf", "ssim")

LOWER = {"nabf", "sam", "ergas", "d_lambda", "d_s", "seconds"}

DECISION_METRICS = (*TARGET_METRICS, "ag", "psnr")


def metrics_ahead(ours: dict[str, float], other: dict[str, float], metrics: tuple[str, ...]) -> list[str]:
    return [
        m
        for m in metrics
        if m in ours and m in other and ((ours[m] < other[m]) if m in LOWER else (ours[m] > other[m]))
    ]


def cell_counts(a: dict[str, float], b: dict[str, float], metrics: tuple[str, ...]) -> tuple[int, int]:
    """``(metrics on which a is ahead of b, metrics on which b is ahead of a)``; ties count for neither."""
    return len(metrics_ahead(a, b, metrics)), len(metrics_ahead(b, a, metrics))
