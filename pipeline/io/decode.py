"""Decoding a pair row: both images read and their grids checked or aligned; the map function of the batch job.

Additive pairs must share a grid (:func:`~pipeline.io.geo.check_additive`); for ``pansharpen`` / ``hsi_msi`` the
low-resolution image A is read on the grid planned from both headers (:func:`~pipeline.io.geo.plan_grid`), by window
when it nests, through a ``WarpedVRT`` when it has to be resampled (:func:`read_lowres`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from maugif_core.config import MULTIPLICATIVE_TASKS
from pipeline import schema as S
from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import GridError, RasterReadError
from pipeline.io.geo import GridPlan, _crs, check_additive, plan_grid
from pipeline.io.readers import _raster_meta, _read_raster, open_raster, read_image, read_meta, read_window

__all__ = ["decode_pair", "read_lowres"]

logger = logging.getLogger(__name__)


def read_lowres(
    uri: str, plan: GridPlan, *, config: ReadConfig | None = None, storage: StorageConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the low-res image on the plan's aligned grid, covering the whole high-res extent.

    Aligned pairs are read by window (boundless: outside pixels get nodata, else 0); off-grid pairs through a
    ``WarpedVRT`` onto ``plan.lo_transform``. ``meta["grid"]`` records the plan.
    """
    config = config or ReadConfig()
    if not plan.resample:
        window = plan.lowres_window((0, 0, plan.hi_shape[0], plan.hi_shape[1]))
        image, meta = read_window(uri, window, config=config, storage=storage, boundless=True)
        meta.update(height=window[2], width=window[3], transform=meta.pop("window_transform", meta["transform"]))
        meta.pop("window", None)
    else:
        from rasterio.enums import Resampling
        from rasterio.transform import Affine
        from rasterio.vrt import WarpedVRT

        with open_raster(uri, config=config, storage=storage) as src:
            options = {"nodata": src.nodata} if src.nodata is not None else {}
            with WarpedVRT(
                src,
                crs=src.crs if plan.crs is None else _crs(plan.crs),
                transform=Affine(*plan.lo_transform),
                height=plan.lo_shape[0],
                width=plan.lo_shape[1],
                resampling=Resampling[config.resampling],
                **options,
            ) as vrt:
                image, meta = _read_raster(uri, vrt, "TIFF", config, None)
                meta.update(_raster_meta(uri, vrt, "TIFF", None), driver=src.driver)
        logger.info("%s warped onto the aligned grid (%s)", uri, plan.reason)
    meta["grid"] = plan.to_dict()
    return image, meta


def _failed(row: dict[str, Any], error: str, started: float) -> dict[str, Any]:
    row.update(
        {
            S.IMAGE_A: None,
            S.IMAGE_B: None,
            S.META_A: None,
            S.META_B: None,
            S.BYTES_IN: 0,
            S.STATUS: S.STATUS_FAILED,
            S.ERROR_STAGE: S.STAGE_READ,
            S.ERROR: error,
            S.SECONDS: time.perf_counter() - started,
        }
    )
    return row


def decode_pair(
    row: Mapping[str, Any], config: ReadConfig | None = None, storage: StorageConfig | None = None
) -> dict[str, Any]:
    """Read and check both images of a pair row; for ``ray.data.Dataset.map``. Never raises for a bad pair.

    Additive tasks need equal sizes (and equal grids when both are georeferenced); ``pansharpen``/``hsi_msi``
    need an integer-ratio grid (A low resolution, B high resolution), resampled when ``config`` allows it, see
    :mod:`pipeline.io.geo`. Rows that already failed (discovery) pass through with empty image columns.

    Returns:
        The row plus ``image_a, image_b`` (``(H, W, C)`` arrays), ``meta_a, meta_b`` (JSON strings),
        ``bytes_in``, ``seconds``; on failure the image/meta columns are None, ``status=failed``,
        ``error_stage=read`` and ``error`` says which URI and why.
    """
    config = config or ReadConfig()
    started = time.perf_counter()
    out = dict(row)
    if out.get(S.STATUS) == S.STATUS_FAILED:
        error, stage = out.get(S.ERROR), out.get(S.ERROR_STAGE)
        out = _failed(out, error or "failed", started)
        out[S.ERROR_STAGE] = stage or S.STAGE_DISCOVER
        return out
    uri_a, uri_b = out[S.URI_A], out[S.URI_B]
    try:
        if out.get(S.TASK) in MULTIPLICATIVE_TASKS:
            image_b, meta_b = read_image(uri_b, config=config, storage=storage)
            meta_a = read_meta(uri_a, config=config, storage=storage)
            plan = plan_grid(meta_a, meta_b, config=config)
            image_a, meta_a = read_lowres(uri_a, plan, config=config, storage=storage)
        else:
            image_a, meta_a = read_image(uri_a, config=config, storage=storage)
            image_b, meta_b = read_image(uri_b, config=config, storage=storage)
            check_additive(meta_a, meta_b)
    except (RasterReadError, GridError) as e:
        return _failed(out, str(e), started)
    except Exception as e:  # one bad pair must never take the map down
        logger.exception("unexpected error reading pair %s", out.get(S.PAIR_ID))
        return _failed(out, f"unexpected {type(e).__name__} reading {uri_a} / {uri_b}: {e}", started)
    out.update(
        {
            S.IMAGE_A: image_a,
            S.IMAGE_B: image_b,
            S.META_A: json.dumps(meta_a),
            S.META_B: json.dumps(meta_b),
            S.BYTES_IN: int((meta_a.get("bytes") or 0) + (meta_b.get("bytes") or 0)),
            S.STATUS: S.STATUS_OK,
            S.ERROR_STAGE: None,
            S.ERROR: None,
            S.SECONDS: time.perf_counter() - started,
        }
    )
    return out
