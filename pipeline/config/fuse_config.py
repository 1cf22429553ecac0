"""Configuration of the batch-fusion job (``jobs/batch_fuse.py``): plain, validated data.

Validated on the driver before ``ray.init`` so a bad config fails in well under a second; the resolved config is
saved next to the outputs (``<output>/_extras/config.yaml`` would break the top-level layout rule, so it goes into
``<output>/_manifest/config-<run>.json``).
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from pipeline.config.io_config import FrozenConfig, PairsConfig, ReadConfig, StorageConfig
from pipeline.config.output_config import OutputConfig, TilingConfig

__all__ = ["FailureConfig", "FuseJobConfig", "FusionConfig", "ResourceConfig"]


class FusionConfig(FrozenConfig):
    """The model actors."""

    batch_size: PositiveInt = Field(16, description="Pairs per map_batches call of a fusion actor.")
    num_actors: PositiveInt = Field(1, description="Fusion actors; the pool starts at this size (no ramp-up).")
    num_cpus_per_actor: NonNegativeFloat = Field(
        0.5,
        description="CPUs reserved per actor (fractional: leaves room for decode/write tasks on small nodes).",
    )
    num_gpus_per_actor: NonNegativeFloat = Field(
        0.0, description="GPUs per actor; 0 runs on CPU, a fraction (e.g. 0.25) packs several actors per GPU."
    )
    torch_threads: NonNegativeInt = Field(
        0, description="torch intra-op threads per actor (0: torch's default for the actor's CPUs)."
    )
    autocast: bool = Field(False, description="bfloat16 autocast of the additive forward pass on CUDA.")
    details: bool = Field(
        False, description="Also write both detail (modality contribution) maps under <output>/_extras/."
    )
    multiplicative: dict[str, Any] = Field(
        default_factory=lambda: {"steps": 1500},
        description="Overrides of the per-scene multiplicative fit (maugif_core MultiplicativeConfig fields).",
    )


class ResourceConfig(FrozenConfig):
    """CPU tasks around the actors."""

    decode_num_cpus: PositiveFloat = Field(0.5, description="CPUs per decode task.")
    rows_per_decode: PositiveInt = Field(
        64,
        description="Pairs per decode task (dataset block). Smaller blocks overlap decode, fusion and write more "
        "finely; each block costs the driver ~70 kB of Ray Data bookkeeping until its window ends.",
    )
    write_num_cpus: PositiveFloat = Field(0.5, description="CPUs per write task.")
    window_pairs: PositiveInt = Field(
        50_000,
        description="Pairs per Dataset execution. The input is run window by window so the driver's memory is "
        "bounded by the window, not the input (Ray Data keeps a little driver state per block).",
    )
    rows_per_write: PositiveInt = Field(
        64, description="Rows bundled into one write task (one manifest part); Ray Data keeps driver state per task."
    )
    write_max_mb: PositiveInt = Field(
        48,
        description="Fused bytes one write task holds at most when scenes are fused as tile rows: rows_per_write "
        "is lowered to fit this many MiB of tiling.tile_size² tiles (16 rows of 1024² RGB tiles, 3 of 8-band "
        "16-bit ones; bands and sample size from the GeoTIFF headers of each window's first pairs), so the job's "
        "memory follows the tile size, not how many tiles a scene has.",
    )
    object_store_mb: PositiveInt | None = Field(
        None,
        description="Object-store memory (MiB) Ray Data may fill with the job's blocks in flight "
        "(its resource_limits); None: Ray Data's default, a share of the node's object store.",
    )


class FailureConfig(FrozenConfig):
    """The failure budget."""

    max_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="Exit non-zero when failed pairs / processed pairs exceeds this."
    )


class FuseJobConfig(FrozenConfig):
    """Everything ``jobs/batch_fuse.py`` needs."""

    input: str = Field(..., description="Pair source: a manifest (.csv/.parquet/.jsonl) or a folder (fsspec URI).")
    task: str | None = Field(
        None,
        description="Task of pairs whose source names none (vif, medical, mff, mef, general, pansharpen, hsi_msi).",
    )
    checkpoint: str | None = Field(
        None,
        description="maugif_core checkpoint (file, folder or training output location; local or s3://) for "
        "`task`; without it the bundled pretrained model of each additive task is used.",
    )
    checkpoints: dict[str, str] = Field(
        default_factory=dict, description="Per-task checkpoints, for manifests that mix tasks."
    )
    allow_task_mismatch: bool = Field(
        False,
        description="Use a checkpoint trained for another task of the same mechanism (otherwise a mismatch between "
        "a checkpoint's stored task and the task it is given for stops the job before it starts).",
    )
    method: str = Field(
        "maugif",
        description="Fusion method: maugif (default), a classical baseline (average, maxabs, dwt, laplacian; "
        "bicubic, brovey, gihs, gsa, mtf_glp) or a third-party method of the maugif.methods entry-point group. "
        "Every method runs through the same outputs, manifest, resume and tiling (with the method's declared halo).",
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where and how outputs are written.")
    tiling: TilingConfig = Field(default_factory=TilingConfig, description="Tiling of large images.")
    fusion: FusionConfig = Field(default_factory=FusionConfig, description="Fusion actors.")
    resources: ResourceConfig = Field(default_factory=ResourceConfig, description="Decode / write tasks.")
    failures: FailureConfig = Field(default_factory=FailureConfig, description="Failure budget.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-storage access.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="Pair discovery.")
    read: ReadConfig = Field(default_factory=ReadConfig, description="Decoding.")
    resume: bool = Field(True, description="Skip pairs already `ok` in the output's manifest.")
    dry_run: NonNegativeInt | None = Field(
        None, description="Fuse this many pairs into a scratch location and print the cost projection only."
    )
    stats_max_pixels: PositiveInt | None = Field(
        4096 * 4096,
        description="Per-image BatchNorm statistics of larger images come from a decimated overview.",
    )
    address: str | None = Field(None, description="Ray cluster to attach to (else RAY_ADDRESS, else local).")
    job_name: str = Field("maugif-batch-fuse", description="Tag of the exported metrics.")

    @model_validator(mode="after")
    def _task_is_known(self) -> FuseJobConfig:
        from maugif_core.config import TASKS

        for name in [self.task, *self.checkpoints]:
            if name is not None and name not in TASKS:
                raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
        if self.checkpoint is not None and self.task is None:
            raise ValueError("checkpoint is set but task is not: say which task the checkpoint is for")
        return self

    @model_validator(mode="after")
    def _method_is_known(self) -> FuseJobConfig:
        from maugif_core.methods import get_method, method_names, supports_task

        if self.method not in method_names():
            raise ValueError(f"method: unknown method {self.method!r}: expected one of {', '.join(method_names())}")
        if self.method != "maugif" and self.task is not None:
            method = get_method(self.method)
            if not supports_task(method, self.task):
                raise ValueError(
                    f"method: {self.method!r} is a {method.mechanism} method; it cannot fuse task {self.task!r}"
                )
        if self.method != "maugif" and (self.checkpoint is not None or self.checkpoints):
            raise ValueError(f"checkpoint: given with method {self.method!r}; checkpoints are for method maugif")
        return self

    @model_validator(mode="after")
    def _tile_covers_halo(self) -> FuseJobConfig:
        if self.tiling.tile_size < 16:
            raise ValueError(f"tiling.tile_size must be at least 16 pixels, got {self.tiling.tile_size}")
        return self

    def checkpoint_map(self) -> dict[str, str]:
        """Task → checkpoint URI, ``checkpoint`` counted for ``task``."""
        mapping = dict(self.checkpoints)
        if self.checkpoint is not None and self.task is not None:
            mapping[self.task] = self.checkpoint
        return mapping
