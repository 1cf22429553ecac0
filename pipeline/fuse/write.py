"""``write_fused``: the last step of a user's own Ray Data pipeline, writing fused rows like the batch job does."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["write_fused"]


def write_fused(ds: Any, uri: str, *, num_cpus: float = 0.5, **output_options: Any) -> dict[str, Any]:
    """Write a dataset of fused rows (:class:`~pipeline.fuse.predictor.FusionPredictor` output) to ``uri``.

    One output per pair (PNG, or COG tiles + VRT + STAC for rasters), written atomically, plus the job manifest
    under ``<uri>/_manifest/`` (ok, failed and skipped rows), exactly as the batch job writes them.

    Args:
        ds: a ``ray.data.Dataset`` of rows with ``pair_id`` and ``fused`` (``(H, W, C)`` array or its ``.npy``
            bytes), ``status`` / ``error`` when known, and optionally ``meta_a`` / ``meta_b`` / ``task``.
        uri: output location (local path, ``file://`` or ``s3://`` prefix).
        num_cpus: CPUs per write task.
        **output_options: further :class:`~pipeline.config.output_config.OutputConfig` fields (``format``,
            ``png_compress_level``, ...).

    Returns:
        ``{"ok", "failed", "skipped", "bytes", "run_id", ...}``: the counts of this write.
    """
    from pipeline.config.output_config import OutputConfig
    from pipeline.fuse.sinks import FusedImageDatasink

    if "://" not in uri:
        uri = os.path.abspath(uri)  # write tasks may run in another working directory than this driver
    sink = FusedImageDatasink(OutputConfig(uri=uri, **output_options))
    ds.write_datasink(sink, ray_remote_args={"num_cpus": num_cpus})
    return dict(sink.summary or {})
