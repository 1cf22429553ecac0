"""The training job's configuration (``jobs/train.py``): plain, frozen data validated on the driver.

Sections:

* ``model`` — which additive task preset to train, and config overrides of the model itself;
* ``data`` — the pair source (read with :func:`pipeline.io.pairs.read_pairs`) and how samples are made from it;
* ``train`` — Ray Train scaling (workers, CPUs/GPUs per worker) and the MAUGIF schedule (SPEC §1.1 defaults:
  100 + 100 epochs, Adam lr 5e-4, weight decay 1e-8, batch 8 per worker, crop 480, scale 0.08–1,
  ratio 3/4–4/3);
* ``storage`` — where checkpoints, metrics and the final model go (local or ``s3://``).

Importing this module imports neither torch nor Ray, so a bad config fails in well under a second. The stable
override keys documented for users are ``train.num_workers``, ``train.use_gpu``, ``train.batch_size``,
``train.crop_size``, ``train.epochs_stage1``, ``train.epochs_stage2``, ``train.lr``, ``train.seed`` and
``storage.path``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from pipeline.config.io_config import FrozenConfig, PairsConfig, ReadConfig, StorageConfig

__all__ = [
    "AdditiveTask",
    "DataSection",
    "ModelSection",
    "StorageSection",
    "TrainJobConfig",
    "TrainSection",
]

# Kept equal to maugif_core.ADDITIVE_TASKS (a test checks it): importing maugif_core pulls in torch (~3 s).
AdditiveTask = Literal["vif", "medical", "mff", "mef", "general"]


class ModelSection(FrozenConfig):
    """The model to train."""

    task: AdditiveTask = Field(
        "general",
        description=(
            "Additive task preset (vif, medical, mff, mef, general): sets the model's threshold, lambda_Y "
            "and chroma rule, and the default sub-folder names of folder pair sources. Multiplicative tasks "
            "are fitted per scene by the batch job, not trained here."
        ),
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Fields of maugif_core.AdditiveConfig to override on the preset, e.g. {decoder_width: 8} for a "
            "smaller model or {bn_mode: running}."
        ),
    )

    @model_validator(mode="after")
    def _check_overrides(self) -> ModelSection:
        if not self.overrides:
            return self
        # Only when overrides are given: maugif_core imports torch, which costs seconds.
        from pydantic import ValidationError

        from maugif_core.config import preset

        for key in ("task", "mechanism"):
            if key in self.overrides:
                raise ValueError(f"model.overrides.{key} cannot be overridden; set model.task instead")
        try:
            preset(self.task, **self.overrides)
        except ValidationError as e:
            problems = "; ".join(
                f"model.overrides.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ValueError(problems) from e
        return self


class DataSection(FrozenConfig):
    """Where training pairs come from and how samples are drawn from them."""

    input: str | None = Field(
        None,
        description=(
            "Pair source: a manifest (.csv/.parquet/.jsonl with pair_id, uri_a, uri_b[, task]) or a folder "
            "with two sub-folders matched by stem; local path or s3:// URI. Required (or --input)."
        ),
    )
    pairs: PairsConfig | None = Field(
        None, description="Pair discovery settings (pipeline.config.io_config.PairsConfig); None: its defaults."
    )
    read: ReadConfig | None = Field(
        None, description="Decoding settings (pipeline.config.io_config.ReadConfig); None: its defaults."
    )
    max_pairs: PositiveInt | None = Field(
        None, description="Train on at most this many pairs (the first ones discovered); None: all."
    )
    crops_per_pair: PositiveInt = Field(
        1,
        description=(
            "Random crops drawn from each pair per epoch. Raise it for small data sets, where one crop per "
            "pair makes an epoch only a step or two."
        ),
    )
    shuffle_buffer: NonNegativeInt = Field(
        64, description="Rows in each worker's local shuffle buffer (seeded); 0 disables shuffling."
    )
    materialize: Literal["auto", "always", "never"] = Field(
        "auto",
        description=(
            "Decode the whole data set into the object store before training. 'auto' does it when the "
            "training workers would leave less than decode_cpus free on the cluster (the 2-CPU deadlock: a "
            "lazy data set whose read tasks can never be scheduled)."
        ),
    )
    decode_cpus: PositiveFloat = Field(1.0, description="CPUs reserved by each decode task.")


class TrainSection(FrozenConfig):
    """Ray Train scaling and the two-stage MAUGIF schedule."""

    num_workers: PositiveInt = Field(2, description="Training workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU (or gpus_per_worker) per worker; NCCL instead of Gloo.")
    cpus_per_worker: PositiveFloat = Field(
        1.0,
        description="CPUs reserved per worker; fractions allowed (0.5: 2 workers share 2 CPUs with decode).",
    )
    gpus_per_worker: PositiveFloat = Field(
        1.0, description="GPUs per worker when use_gpu; fractions pack several workers on one GPU."
    )
    label_selector: dict[str, str] | None = Field(
        None,
        description=(
            "Ray node labels the workers must run on (ScalingConfig.label_selector), e.g. {pool: train} or "
            "{ray.io/accelerator-type: A10G}; None: any node."
        ),
    )
    torch_threads: PositiveInt | None = Field(
        None, description="torch intra-op threads per worker; None: max(1, floor(cpus_per_worker))."
    )
    batch_size: PositiveInt = Field(8, description="Samples per step on each worker (SPEC: 8).")
    crop_size: int = Field(480, ge=8, description="Side of the square random-resized crops, pixels (SPEC: 480).")
    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description="Area fraction range of the random-resized crop (SPEC: 0.08-1)."
    )
    crop_ratio: tuple[float, float] = Field(
        (3 / 4, 4 / 3), description="Aspect ratio range of the random-resized crop (SPEC: 3/4-4/3)."
    )
    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of the joint horizontal flip.")
    epochs_stage1: NonNegativeInt = Field(100, description="Epochs of stage 1 (encoders) (SPEC: 100).")
    epochs_stage2: NonNegativeInt = Field(100, description="Epochs of stage 2 (both decoders) (SPEC: 100).")
    lr: PositiveFloat = Field(5e-4, description="Adam learning rate (SPEC: 5e-4).")
    weight_decay: NonNegativeFloat = Field(1e-8, description="Adam L2 weight decay (SPEC: 1e-8).")
    seed: NonNegativeInt = Field(0, description="Seed of the initial weights, the crops and the shuffle.")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="Mixed precision: 'auto' = bf16 on GPUs that support it, else fp16; always off on CPU.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; 'auto' = nccl with GPUs, gloo on CPU."
    )
    max_failures: int = Field(
        3, ge=-1, description="Worker-group failures recovered from the last checkpoint (-1: unlimited)."
    )
    export: Literal["last", "best"] = Field(
        "last",
        description="Which checkpoint becomes <storage.path>/final: the last epoch or the best-scored one.",
    )
    trace: bool = Field(
        False,
        description=(
            "Write per-rank traces (the samples of every step, parameter digests) to <run>/trace/: a "
            "debugging aid, used by the DDP-equivalence test."
        ),
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainSection:
        if self.epochs_stage1 + self.epochs_stage2 == 0:
            raise ValueError("train.epochs_stage1 and train.epochs_stage2 are both 0: nothing to train")
        return self

    @model_validator(mode="after")
    def _check_crop_ranges(self) -> TrainSection:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"train.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise ValueError(f"train.crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        return self

    @model_validator(mode="after")
    def _check_gpu_options(self) -> TrainSection:
        if not self.use_gpu and self.amp in ("bf16", "fp16"):
            raise ValueError(f"train.amp={self.amp!r} needs train.use_gpu=true (mixed precision is GPU-only here)")
        if not self.use_gpu and self.backend == "nccl":
            raise ValueError("train.backend='nccl' needs train.use_gpu=true (use gloo or auto on CPU)")
        return self


class StorageSection(FrozenConfig):
    """Where the run lives: ``<path>/<name>/`` (checkpoints, metrics.csv, config.yaml), ``<path>/final/``."""

    path: str = Field(
        "./checkpoints",
        description="Output root, local or s3://; relative local paths are made absolute on the driver.",
    )
    name: str = Field(
        "maugif-train",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description=(
            "Run name: the folder under path. Re-running with the same path and name resumes from the last "
            "committed checkpoint (after a driver crash, or to extend training)."
        ),
    )
    keep_best: PositiveInt = Field(
        1,
        description=(
            "Checkpoints kept by score besides the latest, which is always kept. The score ranks a later "
            "stage above an earlier one and, within a stage, a lower epoch loss above a higher one."
        ),
    )
    s3: StorageConfig = Field(
        default_factory=StorageConfig,
        description="S3 access for input, checkpoints, outputs (endpoint, profile, retries; no credentials).",
    )


class TrainJobConfig(FrozenConfig):
    """Everything ``jobs/train.py`` needs; saved as YAML next to the outputs and inside every checkpoint."""

    model: ModelSection = Field(default_factory=ModelSection, description="The model to train.")
    data: DataSection = Field(default_factory=DataSection, description="Training pairs and sampling.")
    train: TrainSection = Field(default_factory=TrainSection, description="Scaling and schedule.")
    storage: StorageSection = Field(default_factory=StorageSection, description="Checkpoints and outputs.")

    @model_validator(mode="after")
    def _require_input(self) -> TrainJobConfig:
        if not self.data.input or not self.data.input.strip():
            raise ValueError("data.input is required: give --input URI or set data.input in the config")
        return self

    @property
    def run_uri(self) -> str:
        """``<storage.path>/<storage.name>``: Ray Train's run folder (checkpoints, metrics.csv, config)."""
        return f"{self.storage.path.rstrip('/')}/{self.storage.name}"

    @property
    def final_uri(self) -> str:
        """``<storage.path>/final``: the exported model (``model.safetensors``) and its config."""
        return f"{self.storage.path.rstrip('/')}/final"

    def with_absolute_paths(self) -> TrainJobConfig:
        """A copy whose local ``data.input`` and ``storage.path`` are absolute (workers may run elsewhere)."""

        def absolute(uri: str) -> str:
            if "://" in uri:
                return uri
            return os.path.abspath(os.path.expanduser(uri))

        data = self.data.model_copy(update={"input": absolute(self.data.input or "")})
        storage = self.storage.model_copy(update={"path": absolute(self.storage.path)})
        return self.model_copy(update={"data": data, "storage": storage})
