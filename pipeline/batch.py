"""The batch-fusion pipeline: discovery → decode (CPU tasks) → fusion (actor pool) → write (sink) → summary.

Composition of the public pieces (``read_pairs``, ``decode_pair``, :class:`~pipeline.predictor.FusionPredictor`,
:class:`~pipeline.sinks.FusedImageDatasink`), so users can rebuild it in their own Ray pipelines::

    ds = read_pairs("s3://bucket/pairs.parquet", task="vif")
    ds = ds.map(decode_row, fn_kwargs={...}, num_cpus=0.5)
    ds = ds.map_batches(FusionPredictor, fn_constructor_kwargs={"config": {...}}, concurrency=4, num_gpus=0.25)
    ds.write_datasink(MeteredDatasink(OutputConfig(uri="s3://bucket/out")))

Resume: pairs whose latest manifest status is ``ok`` are marked ``skipped`` before decoding and flow through as
such (no I/O, no fusion), so the summary can count them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema as S
from pipeline.fuse_config import FuseJobConfig
from pipeline.io_config import ReadConfig, StorageConfig
from pipeline.job_metrics import JobMetrics
from pipeline.sinks import FusedImageDatasink

logger = logging.getLogger(__name__)

__all__ = ["MeteredDatasink", "build_dataset", "decode_row", "mark_done", "run_batch_fuse"]


def mark_done(batch: pa.Table, done: Any) -> pa.Table:
    """Mark rows whose pair_id is in ``done`` (a set, or an ObjectRef of one) as ``skipped``."""
    if not isinstance(done, (set, frozenset)):
        import ray

        done = _cached_get(ray, done)
    if not done or batch.num_rows == 0:
        return batch
    # Python set membership per row: O(rows), independent of how many pairs are already done.
    hit = pa.array([pid in done for pid in batch.column(S.PAIR_ID).to_pylist()], type=pa.bool_())
    status = pc.if_else(hit, pa.scalar(S.STATUS_SKIPPED), batch.column(S.STATUS))
    return batch.set_column(batch.schema.get_field_index(S.STATUS), S.STATUS, status)


_DONE_CACHE: dict[Any, set] = {}


def _cached_get(ray: Any, ref: Any) -> set:
    """The done set behind ``ref``, fetched once per worker process."""
    key = ref.hex() if hasattr(ref, "hex") else id(ref)
    if key not in _DONE_CACHE:
        _DONE_CACHE.clear()
        _DONE_CACHE[key] = ray.get(ref)
    return _DONE_CACHE[key]


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
    from pipeline.readers import decode_pair

    if row.get(S.STATUS) == S.STATUS_SKIPPED:
        return {**row, S.IMAGE_A: None, S.IMAGE_B: None, S.META_A: None, S.META_B: None, S.BYTES_IN: 0}
    out = decode_pair(
        row,
        ReadConfig(**read) if read else None,
        StorageConfig(**storage) if storage else None,
    )
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

        blocks = list(blocks)
        bytes_in = 0
        upstream_failed = 0  # rows that failed at read or fuse were counted there, not again here
        tasks: dict[str, int] = {}
        for block in blocks:
            accessor = BlockAccessor.for_block(block)
            table = accessor.to_arrow()
            if S.BYTES_IN in table.column_names:
                bytes_in += int(pc.sum(table.column(S.BYTES_IN)).as_py() or 0)
            if S.STATUS in table.column_names:
                upstream_failed += int(pc.sum(pc.equal(table.column(S.STATUS), S.STATUS_FAILED)).as_py() or 0)
            if S.TASK in table.column_names and S.STATUS in table.column_names:
                ok = table.filter(pc.equal(table.column(S.STATUS), S.STATUS_OK))
                for task in ok.column(S.TASK).to_pylist():
                    tasks[task or ""] = tasks.get(task or "", 0) + 1
        started = time.perf_counter()
        result = super().write(blocks, ctx)
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
        return {**result, "bytes_in": bytes_in}

    def on_write_complete(self, write_result: Any) -> None:
        returns = list(getattr(write_result, "write_returns", write_result))
        super().on_write_complete(returns)
        assert self.summary is not None
        self.summary["bytes_in"] = sum(int(r.get("bytes_in", 0)) for r in returns)


def predictor_config(config: FuseJobConfig) -> dict[str, Any]:
    """The plain-data config each fusion actor is built from."""
    from pipeline.predictor import PredictorConfig

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
        job=config.job_name,
    ).model_dump()


def discover_windows(config: FuseJobConfig, *, windowed: bool = True) -> Iterator[tuple[Any, int]]:
    """The job's pairs as successive Ray Datasets of ``resources.window_pairs`` rows (see ``iter_pair_windows``);
    ``windowed=False``: a single Dataset of all pairs."""
    from pipeline.pairs import iter_pair_windows

    return iter_pair_windows(
        config.input,
        task=config.task,
        config=config.pairs,
        storage=config.storage,
        block_rows=config.resources.rows_per_decode,
        window_pairs=config.resources.window_pairs if windowed else None,
    )


def discover(config: FuseJobConfig):
    """All of the job's pairs as one Ray Dataset (for composing; the job itself runs window by window)."""
    return next(iter(discover_windows(config, windowed=False)))[0]


def build_dataset(config: FuseJobConfig, done: Any = None, limit: int | None = None, pairs: Any = None):
    """The lazy Ray Dataset of fused rows (before the sink).

    Args:
        config: the job config.
        done: set or ObjectRef of pair ids to mark ``skipped``.
        limit: fuse only the first ``limit`` pairs (dry run).
        pairs: the discovered pairs (:func:`discover`); discovered here when None.
    """
    from pipeline.predictor import FusionPredictor

    ds = pairs if pairs is not None else discover(config)
    if limit is not None:
        ds = ds.limit(limit)
    if done is not None:
        ds = ds.map_batches(mark_done, fn_kwargs={"done": done}, batch_format="pyarrow", num_cpus=0.1)
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
    return ds.map_batches(
        FusionPredictor,
        fn_constructor_kwargs={"config": predictor_config(config)},
        batch_size=fusion.batch_size,
        batch_format="numpy",
        concurrency=fusion.num_actors,  # a fixed-size pool: every actor starts at once
        max_restarts=-1,
        max_task_retries=-1,
        **remote,
    )


def committed_pair_ids(output: str) -> set[str]:
    """Pair ids whose final output exists at the top level of ``output`` (``<id>.png`` or ``<id>.vrt``).

    Outputs are committed atomically (temp name, then rename) and a raster's VRT is written after all its tiles,
    so a final name means a complete output even if the job died before its manifest part was flushed.
    """
    from pipeline.fsutil import filesystem_for

    fs, root = filesystem_for(output)
    try:
        names = fs.ls(root, detail=False)
    except FileNotFoundError:
        return set()
    done = set()
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".png", ".vrt"):
            if base.endswith(suffix) and not base.startswith((".", "_")):
                done.add(base[: -len(suffix)])
    return done


def _save_config(config: FuseJobConfig, output: str, run_id: str) -> None:
    from pipeline.fsutil import atomic_write_bytes

    payload = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True).encode()
    atomic_write_bytes(f"{output.rstrip('/')}/{S.MANIFEST_DIR}/config-{run_id}.json", payload)


def _alive_nodes() -> int:
    import ray

    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


def run_batch_fuse(config: FuseJobConfig) -> dict[str, Any]:
    """Run the job on the connected Ray cluster; returns the summary (also saved as ``<output>/_summary.json``).

    With ``config.dry_run = N`` the first N pairs are fused into a scratch folder that is deleted afterwards, and
    the summary holds the projection for the whole input; nothing is written to the real output.
    """
    import ray

    from pipeline.fsutil import atomic_write_bytes
    from pipeline.manifest import done_pair_ids, new_run_id

    started = time.perf_counter()
    run_id = config.output.run_id or new_run_id()
    scratch = tempfile.mkdtemp(prefix="maugif-dry-run-") if config.dry_run is not None else None
    output = scratch if scratch is not None else config.output.uri
    update: dict[str, Any] = {"uri": output, "run_id": run_id}
    if config.fusion.details:
        update["extra_columns"] = tuple(dict.fromkeys([*config.output.extra_columns, S.DETAIL_B, S.DETAIL_A]))
    output_config = config.output.model_copy(update=update)
    try:
        _save_config(config, output, run_id)
        done: set[str] = set()
        if config.resume and scratch is None:
            done = done_pair_ids(output) | committed_pair_ids(output)
        logger.info("resume: %d pairs already done at %s", len(done), output)
        done_ref = ray.put(done) if done else None
        counts: dict[str, int] = {}
        total = 0
        limit = config.dry_run
        for index, (pairs, rows) in enumerate(discover_windows(config)):
            total += rows
            if limit is not None and limit <= 0:
                continue  # dry run: the rest is only counted
            ds = build_dataset(config, done_ref, limit=limit, pairs=pairs)
            sink = MeteredDatasink(
                output_config,
                run_id=run_id,
                min_rows_per_write=config.resources.rows_per_write,
                job=config.job_name,
                part_prefix=f"w{index:05d}-",
            )
            ds.write_datasink(sink, ray_remote_args={"num_cpus": config.resources.write_num_cpus})
            for key, value in (sink.summary or {}).items():
                if isinstance(value, int):
                    counts[key] = counts.get(key, 0) + value
            if limit is not None:
                limit -= min(rows, limit)
            del ds, pairs, sink  # release this window's block references before the next one
        elapsed = time.perf_counter() - started
        ok, failed, skipped = (int(counts.get(k, 0)) for k in (S.STATUS_OK, S.STATUS_FAILED, S.STATUS_SKIPPED))
        processed = ok + failed
        rate = processed / elapsed if elapsed > 0 else 0.0
        nodes = _alive_nodes()
        remaining = max(total - skipped, 0)
        projected = (remaining / rate / 3600.0 * nodes) if rate > 0 else math.inf
        fraction = failed / processed if processed else 0.0
        summary = {
            "run_id": run_id,
            "input": config.input,
            "output": config.output.uri if scratch is None else None,
            "dry_run": config.dry_run,
            "pairs_total": total,
            "pairs_ok": ok,
            "pairs_failed": failed,
            "pairs_skipped": skipped,
            "failure_fraction": fraction,
            "failure_budget": config.failures.max_fraction,
            "within_budget": fraction <= config.failures.max_fraction,
            "elapsed_s": elapsed,
            "pairs_per_s": rate,
            "bytes_in": int(counts.get("bytes_in", 0)),
            "bytes_out": int(counts.get("bytes", 0)),
            "nodes": nodes,
            "projected_node_hours_total": (total / rate / 3600.0 * nodes) if rate > 0 else None,
            "projected_node_hours_remaining": projected if math.isfinite(projected) else None,
        }
        if scratch is None:
            atomic_write_bytes(
                f"{output.rstrip('/')}/{S.SUMMARY_FILE}",
                json.dumps(summary, indent=2, sort_keys=True).encode(),
            )
        return summary
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def exit_code(summary: dict[str, Any]) -> int:
    """0 when the failure fraction is within budget, 1 otherwise."""
    return 0 if summary.get("within_budget", False) else 1


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary for the console."""
    lines = [
        f"pairs: {summary['pairs_ok']} ok, {summary['pairs_failed']} failed, {summary['pairs_skipped']} skipped "
        f"(of {summary['pairs_total']} discovered)",
        f"time: {summary['elapsed_s']:.1f} s, {summary['pairs_per_s']:.2f} pairs/s on {summary['nodes']} node(s)",
        f"bytes: {summary['bytes_in'] / 1e6:.1f} MB in, {summary['bytes_out'] / 1e6:.1f} MB out",
    ]
    if summary.get("projected_node_hours_total") is not None:
        lines.append(
            f"projection: {summary['projected_node_hours_total']:.4f} node-hours for all {summary['pairs_total']} "
            f"pairs at this rate"
        )
    lines.append(
        f"failures: {summary['failure_fraction']:.2%} (budget {summary['failure_budget']:.2%})"
        + ("" if summary["within_budget"] else " — OVER BUDGET")
    )
    if summary.get("output"):
        lines.append(f"output: {summary['output']}")
    return "\n".join(lines)
