"""Fixtures of the results-tooling tests: evaluation outputs written the way jobs/evaluate.py writes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.evaluate.results.compare import DECISION_METRICS


def _write_run(folder: Path, means: dict[str, dict[str, float]], pairs: tuple[str, ...] = ("p0", "p1")) -> Path:
    """``folder/metrics_per_image.csv`` where every pair of ``method`` scores ``means[method][metric]`` (so the
    per-method means are exactly those values)."""
    rows = [(p, method, metric, value) for p in pairs for method, ms in means.items() for metric, value in ms.items()]
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["pair_id", "method", "metric", "value"])
    frame.to_csv(folder / "metrics_per_image.csv", index=False)
    return folder


@pytest.fixture
def write_run() -> Callable[..., Path]:
    return _write_run


@pytest.fixture
def flat() -> Callable[..., dict[str, float]]:
    """``flat(value, **overrides)``: the same value on every decision metric (TARGET_METRICS + ag + psnr)."""

    def make(value: float, **overrides: float) -> dict[str, float]:
        return {**dict.fromkeys(DECISION_METRICS, value), **overrides}

    return make
