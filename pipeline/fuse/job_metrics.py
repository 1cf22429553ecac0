"""Job metrics exported through ``ray.util.metrics`` (Ray dashboard, Prometheus endpoint of each node).

Names are part of the interface (dashboards and alerts use them):

| name | kind | tags |
|---|---|---|
| ``maugif_pairs_read`` | counter | job, task |
| ``maugif_pairs_fused`` | counter | job, task |
| ``maugif_pairs_written`` | counter | job, task |
| ``maugif_pairs_failed`` | counter | job, stage |
| ``maugif_bytes_read`` | counter | job |
| ``maugif_bytes_written`` | counter | job |
| ``maugif_stage_seconds`` | histogram | job, stage |

Metric objects are created lazily, once per worker process, the first time a stage records something; outside a
Ray worker or driver (plain unit tests) every call is a no-op.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["METRIC_NAMES", "STAGE_SECONDS_BOUNDARIES", "JobMetrics"]

METRIC_NAMES = (
    "maugif_pairs_read",
    "maugif_pairs_fused",
    "maugif_pairs_written",
    "maugif_pairs_failed",
    "maugif_bytes_read",
    "maugif_bytes_written",
    "maugif_stage_seconds",
)
# Seconds per pair per stage: sub-millisecond (tiny images) to minutes (per-scene fits of large rasters).
STAGE_SECONDS_BOUNDARIES = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
]

_lock = threading.Lock()
_instruments: dict[str, Any] | None = None


def _create() -> dict[str, Any] | None:
    global _instruments
    with _lock:
        if _instruments is not None:
            return _instruments
        try:
            import ray
            from ray.util.metrics import Counter, Histogram

            if not ray.is_initialized():
                return None
        except ImportError:  # pragma: no cover - ray is a base dependency
            return None
        _instruments = {
            "pairs_read": Counter("maugif_pairs_read", "Pairs decoded", tag_keys=("job", "task")),
            "pairs_fused": Counter("maugif_pairs_fused", "Pairs fused by the model", tag_keys=("job", "task")),
            "pairs_written": Counter("maugif_pairs_written", "Pairs written", tag_keys=("job", "task")),
            "pairs_failed": Counter("maugif_pairs_failed", "Pairs failed", tag_keys=("job", "stage")),
            "bytes_read": Counter("maugif_bytes_read", "Input bytes read", tag_keys=("job",)),
            "bytes_written": Counter("maugif_bytes_written", "Output bytes written", tag_keys=("job",)),
            "stage_seconds": Histogram(
                "maugif_stage_seconds",
                "Seconds per pair spent in a stage",
                boundaries=STAGE_SECONDS_BOUNDARIES,
                tag_keys=("job", "stage"),
            ),
        }
        return _instruments


class JobMetrics:
    """Records job metrics with a fixed ``job`` tag. Cheap to construct; safe to pickle into Ray tasks/actors."""

    def __init__(self, job: str) -> None:
        self.job = job

    def _get(self, name: str) -> Any | None:
        instruments = _instruments if _instruments is not None else _create()
        return None if instruments is None else instruments[name]

    def pairs(self, kind: str, count: int, *, task: str = "", stage: str = "") -> None:
        """Count pairs: ``kind`` is one of read, fused, written, failed (failed is tagged by stage)."""
        if count <= 0:
            return
        metric = self._get(f"pairs_{kind}")
        if metric is None:
            return
        tags = {"job": self.job, "stage": stage} if kind == "failed" else {"job": self.job, "task": task}
        metric.inc(count, tags=tags)

    def bytes(self, kind: str, count: int) -> None:
        """Count bytes: ``kind`` is read or written."""
        metric = self._get(f"bytes_{kind}")
        if metric is not None and count > 0:
            metric.inc(count, tags={"job": self.job})

    def seconds(self, stage: str, seconds: float) -> None:
        """Observe the seconds one pair spent in ``stage`` (read, fuse, write, ...)."""
        metric = self._get("stage_seconds")
        if metric is not None:
            metric.observe(max(seconds, 0.0), tags={"job": self.job, "stage": stage})
