"""The rows of the fusion predictor: reading a batch's rows, and building its ok / failed / passed-through rows.

Images arrive as ``(H, W, C)`` or ``(H, W)`` arrays (or their ``.npy`` bytes) with optional metadata, and the
``fused`` column leaves channel-last ``(H, W, C)`` (2-D again for a 2-D image A), as ``maugif_core`` returns it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from pipeline import schema as S

logger = logging.getLogger("pipeline.fuse.predictor")  # the predictor's log records, as before the split

__all__ = [
    "GREY",
    "chw_to_hwc",
    "failed_row",
    "fused_row",
    "hwc3",
    "passthrough",
    "read_meta",
    "to_columns",
    "to_rows",
    "with_scene",
]

GREY = "_grey_a"  # predictor-internal: image A came as (H, W), so the fused image goes back as (H, W)


def read_meta(value: Any) -> dict[str, Any]:
    """A row's ``meta_a`` / ``meta_b``: JSON text, a dict, or absent (``{}``: nothing known, no nodata)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    return dict(value) if isinstance(value, dict) else json.loads(value)


def with_scene(row: dict, scene: dict | None) -> dict:
    """``row`` with what its pair's fit estimated (``scene``: plain values) under ``"scene"`` in its ``meta_a``
    JSON, where the writer finds it for the manifest's extras and the STAC item; unchanged when there is
    nothing estimated or no ``meta_a`` (rows built without metadata)."""
    if not scene or not row.get(S.META_A):
        return row
    return {**row, S.META_A: json.dumps({**read_meta(row[S.META_A]), "scene": _plain(scene)})}


def _plain(values: dict) -> dict:
    return {k: v if isinstance(v, (str, int, type(None))) else float(v) for k, v in values.items()}


def hwc3(image: np.ndarray, name: str) -> np.ndarray:
    """``(H, W)`` → ``(H, W, 1)``; ``(H, W, C)`` unchanged."""
    if image.ndim == 2:
        return image[..., None]
    if image.ndim != 3:
        raise ValueError(f"{name}: expected an (H, W) or (H, W, C) array, got shape {image.shape}")
    return image


def chw_to_hwc(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` (the tiled paths' layout) → ``(H, W, C)``; ``(H, W)`` → ``(H, W, 1)``."""
    return image[..., None] if image.ndim == 2 else np.moveaxis(image, 0, -1)


def fused_row(row: dict, hwc: np.ndarray, details: dict | None, seconds: float) -> dict:
    """A success row; ``hwc`` is the fused image, channel-last ``(H, W, C)`` (``(H, W)`` again for a 2-D A)."""
    out = _base(row)
    if row.get(GREY) and hwc.ndim == 3 and hwc.shape[2] == 1:
        hwc = hwc[..., 0]
    out.update(
        {
            S.FUSED: S.encode_array(hwc),
            S.STATUS: S.STATUS_OK,
            S.ERROR_STAGE: None,
            S.ERROR: None,
            S.SECONDS: float(row.get(S.SECONDS) or 0.0) + seconds,
        }
    )
    if details:
        out.update({k: S.encode_array(v) for k, v in details.items()})
    return out


def failed_row(row: dict, error: BaseException) -> dict:
    logger.warning("fusing pair %s failed: %s", row.get(S.PAIR_ID), error)
    out = _base(row)
    out.update(
        {
            S.FUSED: None,
            S.STATUS: S.STATUS_FAILED,
            S.ERROR_STAGE: S.STAGE_FUSE,
            S.ERROR: f"{type(error).__name__}: {error}",
        }
    )
    return out


def passthrough(row: dict) -> dict:
    out = _base(row)
    out[S.FUSED] = None
    return out


def _base(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in (S.IMAGE_A, S.IMAGE_B, GREY)}


def to_rows(batch: Any) -> list[dict[str, Any]]:
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
        return batch.to_dict("records")
    columns = list(batch.keys())
    n = len(batch[columns[0]]) if columns else 0
    return [{c: batch[c][i] for c in columns} for i in range(n)]


def to_columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys:
                keys.append(k)
    return {k: [row.get(k) for row in rows] for k in keys}
