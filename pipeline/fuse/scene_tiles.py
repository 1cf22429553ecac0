"""Reading and fusing one tile row of a scene (rows planned by :mod:`pipeline.fuse.scene_plan`).

:func:`decode_tile_row` reads only the tile's windows plus halo from both sources (local files, or ``s3://``
through the storage layer's range reads: :func:`pipeline.io.readers.read_window`). :func:`fuse_tile_row` fuses the
read windows with the scene's shared state (never computing any per-tile statistic) and crops the result to the
tile's core, which the sink writes as one COG tile. Both follow the whole-image path step by step (per-image
unit mapping, nodata masks and fill, luma/chroma split, fusion, colour, dtype, nodata), so the stitched tiles
equal the whole-image output up to float rounding.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from maugif_core.config import MULTIPLICATIVE_TASKS
from pipeline import schema as S
from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import GridError, RasterReadError
from pipeline.fuse.scene_state import SceneState, loads_state, mapping_from_dict
from pipeline.io.radiometry import fill_value, invalid_mask, nodata_value, union_mask

__all__ = ["decode_tile_row", "fuse_tile_row", "is_tile_row"]

logger = logging.getLogger(__name__)

_STATE_CACHE: OrderedDict[tuple[str, int], tuple[SceneState, Any]] = OrderedDict()
_STATE_CACHE_SIZE = 4


def is_tile_row(row: Any) -> bool:
    """Whether a row is one tile of a scene (``TILE_ROW >= 0`` with its source windows)."""
    value = row.get(S.TILE_ROW)
    return value is not None and int(value) >= 0 and row.get(S.READ_WINDOWS) is not None


def decode_tile_row(
    row: dict[str, Any],
    read: ReadConfig | None = None,
    storage: StorageConfig | None = None,
    *,
    in_actor: bool = False,
) -> dict[str, Any]:
    """Read a tile row's windows of A and B (``(h, w, C)`` arrays in ``IMAGE_A``/``IMAGE_B``); never raises.

    A's window of a multiplicative pair lies on A's own grid and may reach past its edge (read boundless, as
    the whole-image path reads it). A row planned to be read by its fusion actor (``tiling.read_tiles_in_actor``)
    passes a decode task unread; the actor calls this with ``in_actor=True``.
    """
    from pipeline.io.readers import read_window

    started = time.perf_counter()
    out = dict(row)
    windows = json.loads(row[S.READ_WINDOWS])
    unread = windows.get("reader") == "actor" and not in_actor
    if unread or out.get(S.STATUS) in (S.STATUS_FAILED, S.STATUS_SKIPPED):
        out.update({S.IMAGE_A: None, S.IMAGE_B: None, S.BYTES_IN: 0})
        return out
    try:
        image_b, _ = read_window(row[S.URI_B], tuple(windows["b"]), config=read, storage=storage)
        boundless = row.get(S.TASK) in MULTIPLICATIVE_TASKS
        image_a, _ = read_window(row[S.URI_A], tuple(windows["a"]), config=read, storage=storage, boundless=boundless)
    except (RasterReadError, GridError) as e:
        error = f"tile ({row[S.TILE_ROW]}, {row[S.TILE_COL]}): {e}"
        out.update({S.IMAGE_A: None, S.IMAGE_B: None, S.BYTES_IN: 0, S.STATUS: S.STATUS_FAILED})
        out.update({S.ERROR_STAGE: S.STAGE_READ, S.ERROR: error})
        return out
    out.update(
        {
            S.IMAGE_A: image_a,
            S.IMAGE_B: image_b,
            S.BYTES_IN: int(image_a.nbytes + image_b.nbytes),
            S.SECONDS: float(row.get(S.SECONDS) or 0.0) + time.perf_counter() - started,
        }
    )
    return out


def _state(row: dict[str, Any], device: Any) -> tuple[SceneState, Any]:
    """The scene's state and its model on ``device`` (cached per actor, a few scenes at a time)."""
    payload = row[S.SCENE_STATE]
    key = (str(row.get(S.PAIR_ID)), hash(bytes(payload)))
    hit = _STATE_CACHE.get(key)
    if hit is not None:
        _STATE_CACHE.move_to_end(key)
        return hit
    state = loads_state(payload)
    model = None
    if state.model_state is not None:
        from maugif_core.config import MultiplicativeConfig
        from maugif_core.multiplicative.model import MultiplicativeMAUGIF

        model = MultiplicativeMAUGIF(MultiplicativeConfig(**state.model_config))
        model.load_state_dict(state.model_state)
        model = model.to(device).eval()
    if state.norm_stats is not None:
        state.norm_stats = tuple([(m.to(device), v.to(device)) for m, v in stats] for stats in state.norm_stats)
    _STATE_CACHE[key] = (state, model)
    while len(_STATE_CACHE) > _STATE_CACHE_SIZE:
        _STATE_CACHE.popitem(last=False)
    return state, model


def _crop(chw: np.ndarray, crop: list[int], ratio: int = 1) -> np.ndarray:
    top, left, height, width = crop
    return chw[..., top : top + height, left : left + width]


def _fuse_additive(predictor: Any, row: dict, state: SceneState, raw_a: np.ndarray, raw_b: np.ndarray) -> np.ndarray:
    import torch

    from maugif_core.additive import compose_colour, prepare_pair
    from pipeline.io.tiling import fill_nodata

    meta_a, meta_b = json.loads(row[S.META_A]), json.loads(row[S.META_B])
    nodata_a, nodata_b = nodata_value(meta_a), nodata_value(meta_b)
    model = predictor.additive_model(row[S.TASK])
    mask_a, mask_b = invalid_mask(raw_a, nodata_a), invalid_mask(raw_b, nodata_b)
    mask = union_mask(mask_a, mask_b)
    map_a = mapping_from_dict(state.mapping_a)
    unit_a = map_a.to_unit(raw_a, mask_a)
    prep = prepare_pair(unit_a, mapping_from_dict(state.mapping_b).to_unit(raw_b, mask_b))
    luma_a, luma_b = fill_nodata(prep.luma_a, mask, 0.0), fill_nodata(prep.luma_b, mask, 0.0)
    device = predictor.device
    ta = torch.from_numpy(np.ascontiguousarray(luma_a))[None, None].to(device)
    tb = torch.from_numpy(np.ascontiguousarray(luma_b))[None, None].to(device)
    fused_y = model.fuse_luma(ta, tb, norm_stats=state.norm_stats, details=False)[0][0, 0].float().cpu().numpy()
    fused = compose_colour(fused_y, prep, model.config.chroma)
    fused = fused if fused.ndim == 3 else fused[..., None]
    # Unit float -> A's dtype as the whole-image path does (pipeline.io.radiometry): the change fusion made added
    # to A's own values for stretched data, scaled for natural data.
    fused = np.moveaxis(map_a.from_unit_residual(fused, unit_a, raw_a), 2, 0)
    if mask is not None and mask.any():
        fused = np.where(mask[None], np.asarray(fill_value(raw_a.dtype, nodata_a, nodata_b)).astype(fused.dtype), fused)
    return fused


def _fuse_multiplicative(
    predictor: Any, row: dict, state: SceneState, model: Any, raw_a: np.ndarray, raw_b: np.ndarray
) -> np.ndarray:
    import torch

    meta_a, meta_b = json.loads(row[S.META_A]), json.loads(row[S.META_B])
    nodata_a, nodata_b = nodata_value(meta_a), nodata_value(meta_b)
    r = state.ratio
    mask_a, mask_b = invalid_mask(raw_a, nodata_a), invalid_mask(raw_b, nodata_b)
    map_a = mapping_from_dict(state.mapping_a)
    a = np.moveaxis(map_a.to_unit(raw_a, mask_a), 2, 0)  # invalid pixels 0, as in the whole-image path
    b = np.moveaxis(mapping_from_dict(state.mapping_b).to_unit(raw_b, mask_b), 2, 0)
    mask = None
    if mask_a is not None:
        mask = np.repeat(np.repeat(mask_a, r, axis=0), r, axis=1)
    if mask_b is not None:
        mask = mask_b if mask is None else (mask | mask_b)
    device = predictor.device
    with torch.no_grad():
        ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None].to(device)
        tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))[None].to(device)
        fused = model.fuse_tensor(ta, tb)[0].float().cpu().numpy()  # (L, h, w) unit float
    out = map_a.from_unit(fused)  # a new image: A's mapping, layout kept (C, H, W)
    if mask is not None and mask.any():
        out = np.where(mask[None], np.asarray(fill_value(raw_a.dtype, nodata_a, nodata_b)).astype(out.dtype), out)
    return out


def _image(value: Any) -> np.ndarray | None:
    """A decoded window, or None when the row was not read yet (an empty column arrives as None or, in a numpy
    batch of all-empty rows, as a float NaN)."""
    if value is None or isinstance(value, (float, np.floating)):
        return None
    return S.decode_array(value)


def fuse_tile_row(predictor: Any, row: dict[str, Any]) -> tuple[np.ndarray, float]:
    """Fuse one decoded tile row with its scene's state; returns its core ``(C, h, w)`` in A's dtype and the
    seconds spent.

    Args:
        predictor: the :class:`~pipeline.fuse.predictor.FusionPredictor` of this actor (device, additive models).
        row: a decoded tile row (``IMAGE_A``/``IMAGE_B`` as arrays or ``.npy`` bytes).

    Raises:
        whatever fusion raises; the predictor turns it into a failure row of the tile.
    """
    started = time.perf_counter()
    raw_a, raw_b = _image(row.get(S.IMAGE_A)), _image(row.get(S.IMAGE_B))
    if raw_a is None or raw_b is None:  # read here (tiling.read_tiles_in_actor): only this batch's windows in memory
        cfg = predictor.config
        decoded = decode_tile_row(
            row, ReadConfig(**cfg.read), StorageConfig(**cfg.storage) if cfg.storage else None, in_actor=True
        )
        if decoded.get(S.STATUS) == S.STATUS_FAILED:
            raise RasterReadError(decoded[S.ERROR])
        raw_a, raw_b = decoded[S.IMAGE_A], decoded[S.IMAGE_B]
    state, model = _state(row, predictor.device)
    if model is not None:
        fused = _fuse_multiplicative(predictor, row, state, model, raw_a, raw_b)
    else:
        fused = _fuse_additive(predictor, row, state, raw_a, raw_b)
    core = np.ascontiguousarray(_crop(fused, json.loads(row[S.READ_WINDOWS])["crop"]))
    return core, time.perf_counter() - started
