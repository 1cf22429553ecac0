"""The batch-fusion pipeline: discovery → decode (CPU tasks) → fusion (actor pool) → write (sink) → summary.

Composition of the public pieces (``read_pairs``, ``decode_pair``, :class:`~pipeline.fuse.predictor.FusionPredictor`,
:class:`~pipeline.fuse.sinks.FusedImageDatasink`), so users can rebuild it in their own Ray pipelines::

    ds = read_pairs("s3://bucket/pairs.parquet", task="vif")
    ds = ds.map(decode_row, num_cpus=0.5)
    ds = ds.map_batches(
        FusionPredictor,
        fn_constructor_kwargs={"config": {"method": "maugif"}},
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=4),
        num_gpus=0.25,
    )
    write_fused(ds, "s3://bucket/out")

(``from pipeline import read_pairs, decode_row, FusionPredictor, write_fused``; README "Python API".)

Resume: pairs whose latest manifest status is ``ok``, or whose output carries this tool's mark from a run recorded
at the output (:mod:`pipeline.io.marks`), are left out of each discovery batch on the driver
(:func:`pipeline.io.pairs.iter_pair_windows`), so they never enter Ray Data (no blocks, no decode, no fusion, no
manifest row) and each window holds ``resources.window_pairs`` pairs still to run. The driver counts them as
``skipped``, so the summary and exit code (:mod:`pipeline.fuse.batch_summary`) still describe the input's cumulative
state; the manifest keeps each done pair's earlier ``ok`` row as its latest status.

One INFO line per window on the driver (:data:`WINDOW_LOG`) gives its new and done pairs, wall time, rate and the
driver's memory: the figures to watch on a job of millions of pairs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from pipeline import schema as S
from pipeline.config.fuse_config import FuseJobConfig
from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.fuse.batch_summary import build_summary, exit_code, format_summary, save_summary
from pipeline.fuse.job_metrics import JobMetrics
from pipeline.fuse.memory import (
    head_headers,
    object_store_limit,
    rows_per_write,
    window_has_scenes,
    window_tile_bytes,
)
from pipeline.fuse.sinks import FusedImageDatasink
from pipeline.io.done_set import DoneSet

if TYPE_CHECKING:
    from pipeline.io.pairs import PairWindow

logger = logging.getLogger(__name__)

__all__ = [
    "MeteredDatasink",
    "build_dataset",
    "decode_row",
    "exit_code",
    "format_summary",
    "resume_done",
    "run_batch_fuse",
]


def decode_row(
    row: dict[str, Any],
    read: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    job: str = "",
) -> dict[str, Any]:
    """``decode_pair`` for ``Dataset.map`` plus metrics; skipped rows pass through without any I/O.

    The images leave as ``.npy`` bytes (:func:`pipeline.schema.encode_array`) so that blocks of ok and failed
    rows, or of uint8 and uint16 pairs, always concatenate.
    """
    from pipeline.fuse.scene_tiles import decode_tile_row, is_tile_row
    from pipeline.io.decode import decode_pair
    from pipeline.io.storage import retry_count

    if row.get(S.STATUS) == S.STATUS_SKIPPED:
        return {
            **row,
            S.IMAGE_A: None,
            S.IMAGE_B: None,
            S.META_A: None,
            S.META_B: None,
            S.BYTES_IN: 0,
            S.STORAGE_RETRIES: 0,
        }
    retries = retry_count()
    read_cfg, storage_cfg = ReadConfig(**read) if read else None, StorageConfig(**storage) if storage else None
    decode = decode_tile_row if is_tile_row(row) else decode_pair  # a tile row: one window of a scene
    out = decode(row, read_cfg, storage_cfg)
    out[S.STORAGE_RETRIES] = retry_count() - retries  # a Ray worker runs one task at a time
    out[S.IMAGE_A], out[S.IMAGE_B] = S.encode_array(out[S.IMAGE_A]), S.encode_array(out[S.IMAGE_B])
    metrics = JobMetrics(job)
    if out.get(S.STATUS) == S.STATUS_FAILED:
        metrics.pairs("failed", 1, stage=out.get(S.ERROR_STAGE) or S.STAGE_READ)
    else:
        metrics.pairs("read", 1, task=out.get(S.TASK) or "")
        metrics.bytes("read", int(out.get(S.BYTES_IN) or 0))
        metrics.seconds(S.STAGE_READ, float(out.get(S.SECONDS) or 0.0))
    return out


class MeteredDatasink(FusedImageDatasink):
    """:class:`FusedImageDatasink` that also exports write metrics and counts input bytes for the summary."""

    def __init__(self, *args: Any, job: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job = job

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        from ray.data.block import BlockAccessor

        from pipeline.fuse.memory import release_heap
        from pipeline.io.storage import retry_count

        blocks = list(blocks)
        bytes_in = 0
        retries = 0  # storage operations retried while decoding these rows, then while writing them
        upstream_failed = 0  # rows that failed at read or fuse were counted there, not again here
        tasks: dict[str, int] = {}
        for block in blocks:
            accessor = BlockAccessor.for_block(block)
            table = accessor.to_arrow()
            if S.BYTES_IN in table.column_names:
                bytes_in += int(pc.sum(table.column(S.BYTES_IN)).as_py() or 0)
            if S.STORAGE_RETRIES in table.column_names:
                retries += int(pc.sum(table.column(S.STORAGE_RETRIES)).as_py() or 0)
            if S.STATUS in table.column_names:
                failed = pc.equal(table.column(S.STATUS), S.STATUS_FAILED)
                if S.TILE_ROW in table.column_names:  # a failed tile fails its scene at commit, counted there
                    failed = pc.and_(failed, pc.less(pc.fill_null(table.column(S.TILE_ROW), -1), 0))
                upstream_failed += int(pc.sum(failed).as_py() or 0)
            if S.TASK in table.column_names and S.STATUS in table.column_names:
                ok = table.filter(pc.equal(table.column(S.STATUS), S.STATUS_OK))
                for task in ok.column(S.TASK).to_pylist():
                    tasks[task or ""] = tasks.get(task or "", 0) + 1
        started = time.perf_counter()
        retries_before = retry_count()
        result = super().write(blocks, ctx)
        del blocks
        release_heap()  # the encoded tiles' buffers: this pooled worker keeps no heap between write tasks
        retries += retry_count() - retries_before
        elapsed = time.perf_counter() - started
        metrics = JobMetrics(self.job)
        written = result["counts"].get(S.STATUS_OK, 0)
        for task, count in tasks.items():
            metrics.pairs("written", count, task=task)
        metrics.bytes("written", int(result["bytes"]))
        if written:
            metrics.seconds(S.STAGE_WRITE, elapsed / max(written, 1))
        failed_here = result["counts"].get(S.STATUS_FAILED, 0) - upstream_failed
        if failed_here:
            metrics.pairs("failed", failed_here, stage=S.STAGE_WRITE)
        return {**result, "bytes_in": bytes_in, S.STORAGE_RETRIES: retries}

    def on_write_complete(self, write_result: Any) -> None:
        returns = list(getattr(write_result, "write_returns", write_result))
        super().on_write_complete(returns)
        assert self.summary is not None
        self.summary["bytes_in"] = sum(int(r.get("bytes_in", 0)) for r in returns)
        self.summary[S.STORAGE_RETRIES] = sum(int(r.get(S.STORAGE_RETRIES, 0)) for r in returns)


def predictor_config(config: FuseJobConfig, progress_actor: str | None = None) -> dict[str, Any]:
    """The plain-data config each fusion actor is built from (``progress_actor``: see
    :func:`pipeline.fuse.progress.report_scene`)."""
    from pipeline.fuse.predictor import PredictorConfig

    return PredictorConfig(
        checkpoints=config.checkpoint_map(),
        multiplicative_overrides=dict(config.fusion.multiplicative),
        tile_size=config.tiling.tile_size,
        max_untiled_pixels=config.tiling.max_untiled_pixels,
        stats_max_pixels=config.stats_max_pixels,
        details=config.fusion.details,
        device="auto" if config.fusion.num_gpus_per_actor > 0 else "cpu",
        torch_threads=config.fusion.torch_threads,
        autocast=config.fusion.autocast,
        method=config.method,
        job=config.job_name,
        progress_actor=progress_actor,
        read=config.read.model_dump(),
        storage=config.storage.model_dump(),
    ).model_dump()


def discover_windows(
    config: FuseJobConfig, *, windowed: bool = True, done: Collection[str] | None = None
) -> Iterator[PairWindow]:
    """The job's pairs as successive Ray Datasets of ``resources.window_pairs`` rows (see ``iter_pair_windows``);
    ``windowed=False``: a single Dataset of all pairs. ``done``: pair ids left out on the driver (resume)."""
    from pipeline.io.pairs import iter_pair_windows

    return iter_pair_windows(
        config.input,
        task=config.task,
        config=config.pairs,
        storage=config.storage,
        block_rows=config.resources.rows_per_decode,
        window_pairs=config.resources.window_pairs if windowed else None,
        done=done,
    )


def discover(config: FuseJobConfig, done: Collection[str] | None = None):
    """All of the job's pairs (less ``done``) as one Ray Dataset (for composing; the job runs window by window)."""
    return next(iter(discover_windows(config, windowed=False, done=done))).dataset


def build_dataset(
    config: FuseJobConfig,
    done: Any = None,
    limit: int | None = None,
    pairs: Any = None,
    progress_actor: str | None = None,
    split_scenes: bool = False,
):
    """The lazy Ray Dataset of fused rows (before the sink).

    Args:
        config: the job config.
        done: pair ids to leave out at discovery (used only when ``pairs`` is None; the job passes them to
            :func:`discover_windows` instead).
        limit: fuse only the first ``limit`` pairs (dry run).
        pairs: the discovered pairs (:func:`discover`); discovered here when None.
        progress_actor: name of the job's progress counter (per-scene fits report to it).
        split_scenes: cut planned rows into blocks of ``fusion.batch_size`` so a scene's tiles spread over the
            actors (:func:`~pipeline.fuse.memory.window_has_scenes` decides per window).
    """
    from pipeline.fuse.predictor import FusionPredictor

    ds = pairs if pairs is not None else discover(config, done=done)
    if limit is not None:
        ds = ds.limit(limit)
    # Large rasters become tile rows (pipeline.fuse.scene_plan) for MAUGIF; another method (a classical baseline or a
    # plugin) has no scene state to share, and is tiled with its declared halo inside the actor instead.
    if config.tiling.window_min_pixels is not None and config.method == "maugif":
        from pipeline.fuse.scene_plan import plan_scene_rows

        ds = ds.flat_map(
            plan_scene_rows,
            fn_kwargs={
                "read": config.read.model_dump(),
                "storage": config.storage.model_dump(),
                "tiling": config.tiling.model_dump(),
                "predictor": predictor_config(config, progress_actor),
            },
            num_cpus=config.resources.decode_num_cpus,
        )
        if split_scenes:
            # Planning turns a scene into all its tile rows in one block, and an actor pool fuses a block in one
            # task: one actor would fuse the whole scene while the others wait. Blocks of one actor batch spread
            # the tiles (a streaming repartition, no barrier). Not for small pairs: 16-row tasks halve their rate.
            ds = ds.repartition(target_num_rows_per_block=config.fusion.batch_size)
    ds = ds.map(
        decode_row,
        fn_kwargs={
            "read": config.read.model_dump(),
            "storage": config.storage.model_dump(),
            "job": config.job_name,
        },
        num_cpus=config.resources.decode_num_cpus,
    )
    fusion = config.fusion
    remote: dict[str, Any] = {"num_cpus": fusion.num_cpus_per_actor}
    if fusion.num_gpus_per_actor > 0:
        remote["num_gpus"] = fusion.num_gpus_per_actor
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        FusionPredictor,
        fn_constructor_kwargs={"config": predictor_config(config, progress_actor)},
        batch_size=fusion.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=fusion.num_actors),  # a fixed-size pool: every actor starts at once
        # Lost actors restart and their batches are retried: Ray Data's actor-pool defaults (max_restarts=-1,
        # max_task_retries=-1), which Ray 2.60 no longer takes by keyword without a deprecation warning.
        **remote,
    )


def _save_config(config: FuseJobConfig, output: str, run_id: str) -> None:
    from pipeline.io.fsutil import atomic_write_bytes

    payload = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True).encode()
    atomic_write_bytes(f"{output.rstrip('/')}/{S.MANIFEST_DIR}/config-{run_id}.json", payload)


def _with_lookahead(windows: Iterator[PairWindow]) -> Iterator[tuple[PairWindow, bool]]:
    """``(window, is_last)``: the next window is discovered before the current one runs, so the progress total is
    final as soon as the last window starts (one extra window of pair rows in the object store)."""
    current = next(windows, None)
    while current is not None:
        following = next(windows, None)
        yield current, following is None
        current = following


WINDOW_LOG = "window %d: %d new pairs, %d skipped as done, %.1f s, %.1f pairs/s, driver RSS %.0f MiB (peak %.0f MiB)"
"""The per-window INFO line: index, pairs run, pairs left out as done, wall seconds since the previous window
ended (this window's discovery and execution), new pairs per second, the driver's resident memory now and its
peak so far."""


def _driver_rss_mib() -> tuple[float, float]:
    """The driver's resident memory now and its peak so far, in MiB."""
    import resource
    import sys

    import psutil

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak_mib = peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
    return psutil.Process().memory_info().rss / (1 << 20), peak_mib


def _alive_nodes() -> int:
    import ray

    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


def resume_done(output: str, current_run: str | None = None, key_shards: int = 0) -> DoneSet:
    """Pair ids a rerun skips: the manifest's ``ok`` pairs, plus outputs carrying this tool's mark from a run
    recorded at ``output`` (committed after the last manifest flush of a crashed run), found at the top of the output
    or, with ``key_shards`` > 1, under its shard prefixes. A file that merely has an output's name is never trusted
    (see :mod:`pipeline.io.marks`)."""
    from pipeline.io.manifest import done_ids
    from pipeline.io.marks import marked_pair_ids

    done = done_ids(output)
    marked, _ = marked_pair_ids(output, exclude=done, current_run=current_run, key_shards=key_shards)
    return done.union(marked)


def _scratch_uri(output: str, run_id: str) -> str:
    from pipeline.io.fsutil import join_key

    return join_key(output, f"_dry-run-{run_id}")


def _remove_scratch(scratch: str, output: str, output_existed: bool) -> None:
    from pipeline.io.fsutil import filesystem_for, is_local

    fs, root = filesystem_for(scratch)
    try:
        fs.rm(root, recursive=True)
    except FileNotFoundError:
        pass
    except Exception:
        logger.warning("dry run: could not remove the scratch prefix %s", scratch, exc_info=True)
    if is_local(fs) and not output_existed:
        with contextlib.suppress(OSError):
            os.rmdir(filesystem_for(output)[1])  # the output folder the dry run created, if now empty


def run_batch_fuse(
    config: FuseJobConfig, *, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the job on the connected Ray cluster; returns the summary (also saved as ``<output>/_summary.json``).

    With ``config.dry_run = N`` the first N pairs are fused through the real output storage into a scratch
    prefix ``<output>/_dry-run-<run_id>/`` that is removed afterwards; the summary separates the start-up time
    from the steady-state rate and projects the whole input from the steady state.

    Args:
        config: the job config.
        on_progress: called about twice a second from a driver thread with ``{"ok", "failed", "skipped",
            "total", "discovering", "fitting", "fitted"}`` (rows finished so far; pairs discovered so far; whether
            discovery goes on; ``(pair_id, started_at)`` of the per-scene fits running now; fits finished).
    """
    import ray

    from pipeline.fuse.progress import ProgressPoller, rates_from_history, start_counter
    from pipeline.io.fsutil import filesystem_for
    from pipeline.io.manifest import new_run_id, run_failures
    from pipeline.io.storage import retry_count

    started = time.perf_counter()
    driver_retries = retry_count()
    wall_start = time.time()
    run_id = config.output.run_id or new_run_id()
    dry = config.dry_run is not None
    output_existed = filesystem_for(config.output.uri)[0].exists(filesystem_for(config.output.uri)[1])
    output = _scratch_uri(config.output.uri, run_id) if dry else config.output.uri
    update: dict[str, Any] = {"uri": output, "run_id": run_id}
    if config.fusion.details:
        update["extra_columns"] = tuple(dict.fromkeys([*config.output.extra_columns, S.DETAIL_B, S.DETAIL_A]))
    output_config = config.output.model_copy(update=update)
    counter_name = f"maugif-progress-{run_id}"
    counter = start_counter(counter_name)
    state = {"total": 0, "discovering": True}
    left_out = {"skipped": 0}  # done pairs left out at discovery: never seen by the counter, counted here

    def report(snapshot: dict[str, Any]) -> None:
        if on_progress is not None:
            counts = {k: snapshot.get(k, 0) for k in ("ok", "failed", "skipped")}
            counts["skipped"] += left_out["skipped"]
            scenes = {"fitting": snapshot.get("fitting", []), "fitted": snapshot.get("fitted", 0)}
            on_progress({**counts, **scenes, **state})

    try:
        if not dry:  # before this run is recorded: an output keeps one key layout (library callers; CLI pre-flight)
            from pipeline.io.key_shards import check_key_shards

            check_key_shards(config.output.uri, config.output.key_shards, config.storage, exclude_run=run_id)
        _save_config(config, output, run_id)
        done = DoneSet()
        if config.resume and not dry:
            done = resume_done(output, run_id, config.output.key_shards)
        logger.info("resume: %d pairs already done at %s", len(done), output)
        counts: dict[str, int] = {}
        total = 0
        limit = config.dry_run
        # Datasets snapshot Ray Data's context when created: the budget is set before the pairs are discovered.
        with ProgressPoller(counter, report) as poller, object_store_limit(config.resources.object_store_mb):
            window_started = time.perf_counter()
            windows = discover_windows(config, done=done or None)
            for index, (window, last) in enumerate(_with_lookahead(windows)):
                pairs, rows, skipped = window.dataset, window.rows, window.skipped
                total += rows + skipped
                left_out["skipped"] += skipped
                state["discovering"] = not last
                state["total"] = total if limit is None else min(total, config.dry_run or 0)
                ran = 0  # a window of only done pairs, or a dry run past its limit (only counted), runs nothing
                if rows and (limit is None or limit > 0):
                    headers = head_headers(config, window.head)  # read once for both decisions
                    split = window_has_scenes(config, window.head, headers)
                    ds = build_dataset(
                        config, limit=limit, pairs=pairs, progress_actor=counter_name, split_scenes=split
                    )
                    sink = MeteredDatasink(
                        output_config,
                        run_id=run_id,
                        min_rows_per_write=rows_per_write(config, window_tile_bytes(config, window.head, headers)),
                        job=config.job_name,
                        part_prefix=f"w{index:05d}-",
                        progress=counter,
                    )
                    ds.write_datasink(sink, ray_remote_args={"num_cpus": config.resources.write_num_cpus})
                    for key, value in (sink.summary or {}).items():
                        if isinstance(value, int):
                            counts[key] = counts.get(key, 0) + value
                    ran = rows if limit is None else min(rows, limit)
                    if limit is not None:
                        limit -= ran
                    del ds, sink
                del pairs, window  # release this window's block references before the next one
                seconds = time.perf_counter() - window_started
                rate = ran / seconds if seconds > 0 else 0.0
                logger.info(WINDOW_LOG, index, ran, skipped, seconds, rate, *_driver_rss_mib())
                window_started = time.perf_counter()
            state["discovering"] = False
        counts[S.STATUS_SKIPPED] = counts.get(S.STATUS_SKIPPED, 0) + left_out["skipped"]
        elapsed = time.perf_counter() - started
        # The driver's own retries (manifest, config, tiled-raster commits) next to the tasks' ones.
        counts[S.STORAGE_RETRIES] = counts.get(S.STORAGE_RETRIES, 0) + retry_count() - driver_retries
        summary = build_summary(
            run_id=run_id,
            input_uri=config.input,
            output=None if dry else config.output.uri,
            dry_run=config.dry_run,
            counts=counts,
            total=total,
            elapsed=elapsed,
            nodes=_alive_nodes(),
            budget=config.failures.max_fraction,
            rates=rates_from_history(poller.latest.get("history", []), wall_start),
        )
        summary["method"] = config.method
        summary["failures"] = run_failures(output, run_id) if counts.get(S.STATUS_FAILED) else None
        if dry:
            summary["scratch"] = output
        else:
            save_summary(summary, output)
            if config.output.write_stac:  # the job's STAC Collection, linking every raster item at the output
                from pipeline.io.stac import write_collection

                write_collection(output, key_shards=config.output.key_shards)
        return summary
    finally:
        ray.kill(counter)
        if dry:
            _remove_scratch(output, config.output.uri, output_existed)
