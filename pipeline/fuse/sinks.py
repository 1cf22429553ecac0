"""Ray Data sink for fused results, with the per-row write logic it runs (stage → commit).

A row (``pipeline.schema`` keys) is either a whole image, or one tile of a large raster (``TILE_ROW``,
``TILE_COL`` >= 0 and ``WINDOW``, the tile's core window on the output grid, with ``FUSED`` cropped to that
core):

- whole plain image → ``<pair_id>.png``; whole raster → COG tiles, STAC item and VRT, all in the write task;
- raster tile → its COG tile ``<pair_id>/<row>_<col>.tif`` in the write task; once every tile of the job is
  written, :meth:`FusedImageDatasink.on_write_complete` (driver) checks that each raster's cores cover its
  grid and commits it (STAC item, then the VRT).

With ``OutputConfig.key_shards`` > 1 every path above is under ``<output>/<shard>/`` (:mod:`pipeline.io.key_shards`).

Rows whose ``STATUS`` is already ``failed``/``skipped`` (an earlier stage caught the error) are recorded, not
written. Any error while writing a row becomes a ``failed`` manifest record (stage ``write``) and the job goes
on. Each write task appends its records to the manifest as its own deterministic part file; the driver adds
the records of tiled rasters. Plain functions for use without Ray live in :mod:`pipeline.io.writers` and are
re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from ray.data import Datasink
from ray.data.block import BlockAccessor

from pipeline.config.output_config import OutputConfig
from pipeline.fuse.progress import RowReporter
from pipeline.io.cog import RasterMeta, TileRef, cast_to_dtype
from pipeline.io.fsutil import filesystem_for, is_local
from pipeline.io.key_shards import pair_output
from pipeline.io.manifest import ManifestWriter, make_record, new_run_id
from pipeline.io.marks import make_mark
from pipeline.io.writers import (
    choose_format,
    commit_raster,
    output_meta,
    png_uri,
    tile_uri,
    write_cog_tile,
    write_extra,
    write_png,
    write_raster,
    write_stac_item,
    write_vrt,
)
from pipeline.schema import (
    ERROR,
    ERROR_STAGE,
    FUSED,
    META_A,
    META_B,
    PAIR_ID,
    SECONDS,
    STAGE_WRITE,
    STATUS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    TASK,
    TILE_COL,
    TILE_ROW,
    WINDOW,
    decode_array,
)

__all__ = [
    "FusedImageDatasink",
    "commit_tiled_rasters",
    "write_cog_tile",
    "write_png",
    "write_raster",
    "write_row",
    "write_stac_item",
    "write_vrt",
]

logger = logging.getLogger(__name__)


def _is_tile(row: Mapping[str, Any]) -> bool:
    value = row.get(TILE_ROW)
    return value is not None and int(value) >= 0


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _meta_a(row: Mapping[str, Any], fused_chw: np.ndarray) -> RasterMeta:
    """Image A's metadata from the row, or, for rows built without it, a plain image's from the fused array."""
    if row.get(META_A):
        return RasterMeta.from_json(row[META_A])
    count = fused_chw.shape[0] if fused_chw.ndim == 3 else 1
    height, width = fused_chw.shape[-2:]
    return RasterMeta(dtype=str(fused_chw.dtype), count=count, height=height, width=width)


def write_row(row: Mapping[str, Any], config: OutputConfig, fs: Any = None) -> dict[str, Any]:
    """Write one row's fused result; never raises for a bad row.

    Args:
        row: a row with ``PAIR_ID``, ``FUSED`` ``(H, W, C)`` or ``(H, W)``, ``META_A`` (optional: without
            it, a plain image of the fused array's dtype and bands; and ``META_B``,
            ``TASK``) and optionally ``TILE_ROW``/``TILE_COL``/``WINDOW``, ``STATUS``/``ERROR_STAGE``/
            ``ERROR``, ``SECONDS`` (time spent upstream), plus any of ``config.extra_columns``.
        config: output settings.
        fs: filesystem of ``config.uri`` (built when None).

    Returns:
        For a whole image: ``{"kind": "pair", "record": <manifest record>, "bytes": n}``. For a tile:
        ``{"kind": "tile", ...}`` with the tile's window, status and, for tile (0, 0), the raster's metadata.
    """
    start = time.perf_counter()
    pair_id = str(row.get(PAIR_ID))
    upstream = float(row.get(SECONDS) or 0.0)
    tile = _is_tile(row)
    base = pair_output(config.uri, pair_id, config.key_shards)  # the output, or its shard prefix for this pair
    result: dict[str, Any] = {"kind": "tile" if tile else "pair", "pair_id": pair_id, "bytes": 0}
    if tile:
        result.update(row=int(row[TILE_ROW]), col=int(row[TILE_COL]))
    status = row.get(STATUS)
    if status in (STATUS_FAILED, STATUS_SKIPPED):
        record = make_record(
            pair_id, status, error_stage=row.get(ERROR_STAGE), error=row.get(ERROR), seconds=upstream or None
        )
        return {**result, "record": record, "ok": False, "seconds": upstream}
    try:
        fused = decode_array(row.get(FUSED))
        if fused is None or np.size(fused) == 0:
            raise ValueError(f"row of pair {pair_id!r} has no fused array")
        # Rows carry the fused image channel-last (H, W, C), as maugif_core and the predictor return it; the
        # writers work band-first.
        fused = np.asarray(fused)
        fused = np.moveaxis(fused, -1, 0) if fused.ndim == 3 else fused
        meta_b = RasterMeta.from_json(row[META_B]) if row.get(META_B) else None
        meta = output_meta(_meta_a(row, fused), meta_b, row.get(TASK))
        dtype = str(fused.dtype) if np.issubdtype(fused.dtype, np.integer) else meta.dtype
        if tile:
            window = json.loads(row[WINDOW]) if isinstance(row[WINDOW], (str, bytes)) else dict(row[WINDOW])
            block = fused if fused.ndim == 3 else fused[np.newaxis]
            if block.shape[-2:] != (int(window["height"]), int(window["width"])):
                raise ValueError(f"tile of shape {block.shape[-2:]} does not match its core window {window}")
            result["bytes"] = write_cog_tile(
                cast_to_dtype(block, dtype, meta.nodata),
                tile_uri(base, pair_id, result["row"], result["col"]),
                meta=meta,
                row_off=int(window["row_off"]),
                col_off=int(window["col_off"]),
                config=config,
                fs=fs,
            )
            result.update(window={k: int(window[k]) for k in ("row_off", "col_off", "height", "width")}, ok=True)
            if result["row"] == 0 and result["col"] == 0:
                result.update(meta=meta.__dict__, dtype=dtype, band_count=block.shape[0])
                scene = _scene(row)
                if scene:  # what the scene's fit estimated (sensor registration, MTF gain): STAC, manifest
                    result["properties"] = {f"maugif:{k}": v for k, v in scene.items()}
                    result["scene"] = scene
            result["seconds"] = upstream + time.perf_counter() - start
            return result
        if choose_format(meta, config) == "png":
            uri = png_uri(base, pair_id)
            nbytes = write_png(
                cast_to_dtype(fused, dtype, meta.nodata),
                uri,
                compress_level=config.png_compress_level,
                fs=fs,
                mark=make_mark(pair_id),
            )
        else:
            uri, nbytes = write_raster(
                cast_to_dtype(fused, dtype, meta.nodata), base, pair_id, meta, config=config, fs=fs
            )
        for column in config.extra_columns:
            if row.get(column) is not None:
                nbytes += write_extra(
                    np.asarray(decode_array(row[column])), base, pair_id, column, config=config, meta=meta, fs=fs
                )[1]
        seconds = upstream + time.perf_counter() - start
        record = make_record(pair_id, STATUS_OK, output_uri=uri, seconds=seconds, extras=_scene(row))
        return {**result, "record": record, "ok": True, "bytes": nbytes, "seconds": seconds}
    except Exception as e:  # one bad pair must not stop the job: it becomes a failure record
        logger.warning("writing pair %s failed: %s", pair_id, e)
        seconds = upstream + time.perf_counter() - start
        record = make_record(pair_id, STATUS_FAILED, error_stage=STAGE_WRITE, error=_error_text(e), seconds=seconds)
        return {**result, "record": record, "ok": False, "error": _error_text(e), "seconds": seconds}


def commit_tiled_rasters(tiles: Iterable[dict[str, Any]], config: OutputConfig, fs: Any = None) -> list[dict]:
    """Commit rasters written tile by tile: check coverage, then write the STAC item and the VRT.

    Args:
        tiles: the ``{"kind": "tile"}`` results of :func:`write_row`, for every tile of the job.
        config: output settings.
        fs: filesystem of ``config.uri`` (built when None).

    Returns:
        One manifest record per raster: ``ok`` with the VRT's URI, or ``failed`` (stage ``write``) naming the
        failed or missing tiles; a failed raster gets no VRT, so it is never mistaken for a complete one.
    """
    if fs is None:
        fs, _ = filesystem_for(config.uri)
    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tile in tiles:
        by_pair[tile["pair_id"]].append(tile)
    records = []
    for pair_id in sorted(by_pair):
        start = time.perf_counter()
        parts = by_pair[pair_id]
        seconds = sum(float(t.get("seconds") or 0.0) for t in parts)
        failed = [t for t in parts if not t.get("ok")]
        head = next((t for t in parts if "meta" in t), None)
        error = None
        if failed:
            first = failed[0]
            error = (
                f"{len(failed)} of {len(parts)} tiles failed; tile ({first['row']}, {first['col']}): "
                f"{first.get('error') or first['record'].get(ERROR)}"
            )
        elif head is None:
            error = "tile (0, 0) is missing: the raster cannot be committed"
        else:
            meta = RasterMeta(
                **{
                    **head["meta"],
                    "descriptions": _tuple(head["meta"]["descriptions"]),
                    "transform": _tuple(head["meta"]["transform"]),
                    "sources": _tuple(head["meta"].get("sources")),
                }
            )
            covered = sum(t["window"]["height"] * t["window"]["width"] for t in parts)
            distinct = len({(t["row"], t["col"]) for t in parts})
            if covered != meta.height * meta.width or distinct != len(parts):
                error = f"tiles cover {covered} of {meta.height * meta.width} pixels (missing or duplicate tiles)"
        if error is not None:
            logger.warning("raster %s not committed: %s", pair_id, error)
            records.append(make_record(pair_id, STATUS_FAILED, error_stage=STAGE_WRITE, error=error, seconds=seconds))
            continue
        refs = [
            (
                t["row"],
                t["col"],
                TileRef(
                    f"{t['row']}_{t['col']}.tif",
                    t["window"]["row_off"],
                    t["window"]["col_off"],
                    t["window"]["height"],
                    t["window"]["width"],
                ),
            )
            for t in parts
        ]
        try:
            uri, _ = commit_raster(
                pair_output(config.uri, pair_id, config.key_shards),
                pair_id,
                meta,
                refs,
                dtype=head["dtype"],
                band_count=head["band_count"],
                config=config,
                fs=fs,
                properties=head.get("properties"),
            )
        except Exception as e:
            records.append(
                make_record(pair_id, STATUS_FAILED, error_stage=STAGE_WRITE, error=_error_text(e), seconds=seconds)
            )
            continue
        seconds += time.perf_counter() - start
        records.append(make_record(pair_id, STATUS_OK, output_uri=uri, seconds=seconds, extras=head.get("scene")))
    return records


def _scene(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the pair's fit estimated (``"scene"`` in its ``meta_a``, see
    :func:`pipeline.fuse.predictor_rows.with_scene`), or None."""
    return json.loads(row[META_A]).get("scene") if row.get(META_A) else None


def _tuple(value: Any) -> tuple | None:
    return tuple(value) if value is not None else None


class FusedImageDatasink(Datasink):
    """Writes fused rows (PNG, or COG tiles + VRT + STAC) and the job manifest; use with ``write_datasink``.

    Args:
        config: output settings (``config.uri`` is the output location).
        run_id: run identifier for manifest part names; ``config.run_id`` or a new sortable id when None.
        min_rows_per_write: rows Ray Data bundles into each write task (None: Ray's choice).
        part_prefix: prefix of this sink's manifest part names, for several executions (windows) in one run.
        progress: a :class:`~pipeline.fuse.progress.ProgressCounter` actor that write tasks report finished rows to.

    After ``write_datasink`` returns, :attr:`summary` holds ``{"ok", "failed", "skipped", "bytes",
    "run_id"}``.

    Example:
        >>> sink = FusedImageDatasink(OutputConfig(uri="s3://bucket/run-1"))  # doctest: +SKIP
        >>> dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0.5})  # doctest: +SKIP
    """

    def __init__(
        self,
        config: OutputConfig,
        *,
        run_id: str | None = None,
        min_rows_per_write: int | None = 16,
        part_prefix: str = "",
        progress: Any = None,
    ) -> None:
        self.progress = progress  # a pipeline.fuse.progress.ProgressCounter actor handle, or None
        self.config = config
        self.run_id = run_id or config.run_id or new_run_id()
        if config.run_id != self.run_id:  # outputs carry the run id in their mark (pipeline.io.marks)
            config = config.model_copy(update={"run_id": self.run_id})
            self.config = config
        self.part_prefix = part_prefix  # tells apart the manifest parts of several executions in one run
        self.summary: dict[str, Any] | None = None
        self._min_rows_per_write = min_rows_per_write

    def get_name(self) -> str:
        return "FusedImage"

    @property
    def supports_distributed_writes(self) -> bool:
        return True

    @property
    def min_rows_per_write(self) -> int | None:
        """Rows bundled into one write task: fewer, larger manifest parts and less per-task overhead."""
        return self._min_rows_per_write

    def on_write_start(self, schema: Any = None) -> None:
        fs, root = filesystem_for(self.config.uri)
        if is_local(fs):
            os.makedirs(root, exist_ok=True)
        logger.info("writing fused outputs to %s (run %s)", self.config.uri, self.run_id)

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        """Write the rows of one task; append its manifest part; return counts and tile results."""
        fs, _ = filesystem_for(self.config.uri)
        task_idx = int(getattr(ctx, "task_idx", 0))
        counts = {STATUS_OK: 0, STATUS_FAILED: 0, STATUS_SKIPPED: 0}
        tiles: list[dict[str, Any]] = []
        total_bytes = 0
        with ManifestWriter(
            self.config.uri,
            self.run_id,
            writer=f"{self.part_prefix}task{task_idx:06d}",
            flush_rows=self.config.manifest_flush_rows,
        ) as manifest:
            reporter = RowReporter(self.progress)
            for block in blocks:
                for row in BlockAccessor.for_block(block).iter_rows(public_row_format=True):
                    result = write_row(row, self.config, fs)
                    total_bytes += result["bytes"]
                    if result["kind"] == "tile":
                        tiles.append(result)
                        continue
                    manifest.add(result["record"])
                    counts[result["record"][STATUS]] += 1
                    reporter.row(result["record"][STATUS])
        reporter.flush()
        return {"counts": counts, "bytes": total_bytes, "tiles": tiles}

    def on_write_complete(self, write_result: Any) -> None:
        """Commit tiled rasters and record them in the manifest; fill :attr:`summary`."""
        returns = getattr(write_result, "write_returns", write_result)
        counts = {STATUS_OK: 0, STATUS_FAILED: 0, STATUS_SKIPPED: 0}
        total_bytes = 0
        tiles: list[dict[str, Any]] = []
        for task_result in returns:
            for key, value in task_result["counts"].items():
                counts[key] += value
            total_bytes += task_result["bytes"]
            tiles.extend(task_result["tiles"])
        if tiles:
            records = commit_tiled_rasters(tiles, self.config)
            with ManifestWriter(
                self.config.uri,
                self.run_id,
                writer=f"{self.part_prefix}commit",
                flush_rows=self.config.manifest_flush_rows,
            ) as manifest:
                manifest.add_many(records)
            for record in records:
                counts[record[STATUS]] += 1
            reporter = RowReporter(self.progress)
            for record in records:
                reporter.row(record[STATUS])
            reporter.flush()
        self.summary = {**counts, "bytes": total_bytes, "run_id": self.run_id}
        logger.info("write complete: %s", self.summary)

    def on_write_failed(self, error: Exception) -> None:
        logger.error("writing to %s failed (run %s): %s", self.config.uri, self.run_id, error)
