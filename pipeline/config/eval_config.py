"""The evaluation job's configuration (``jobs/evaluate.py``): plain, frozen data validated on the driver.

Importing this module imports neither torch nor Ray, so a bad config fails in well under a second.

Methods are named as in the tables: ``maugif`` (the MAUGIF model of the task, BatchNorm mode from its config),
``maugif:per_image`` / ``maugif:running`` (the same weights with that BatchNorm inference mode, SPEC §1.1),
``maugif:envelope`` / ``maugif:no_envelope`` (fused luma capped at the brighter source, or not), variants joined
with ``+`` (``maugif:running+envelope``),
the classical baselines of :mod:`maugif_core.baselines` (``average``, ``maxabs``, ``dwt``, ``laplacian`` for
additive tasks; ``bicubic``, ``brovey``, ``gihs``, ``gsa`` for ``pansharpen`` / ``hsi_msi``), the optional
peers ``mertens`` (OpenCV's Mertens exposure fusion, additive tasks) and ``rio_brovey`` (rio-pansharpen's
Brovey, spectral tasks), and the names of ``fused`` folders (already-fused images of any other tool).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from pipeline.config.io_config import FrozenConfig, PairsConfig, ReadConfig, StorageConfig

__all__ = [
    "ADDITIVE_METHODS",
    "BN_MODES",
    "DEFAULT_METHODS",
    "EvalJobConfig",
    "FusedSourceConfig",
    "MAUGIF",
    "SPECTRAL_METHODS",
    "maugif_overrides",
    "split_method",
]

# Kept equal to maugif_core.config.TASKS (importing maugif_core pulls in torch).
Task = Literal["vif", "medical", "mff", "mef", "general", "hsi_msi", "pansharpen"]
MULTIPLICATIVE = ("hsi_msi", "pansharpen")

MAUGIF = "maugif"
BN_MODES = ("per_image", "running")
ADDITIVE_METHODS = ("average", "maxabs", "dwt", "laplacian", "mertens")
SPECTRAL_METHODS = ("bicubic", "brovey", "gihs", "gsa", "mtf_glp", "rio_brovey")
DEFAULT_METHODS = {
    "additive": (MAUGIF, "average", "maxabs", "dwt", "laplacian"),
    "multiplicative": (MAUGIF, "bicubic", "brovey", "gihs", "gsa", "mtf_glp"),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


ENVELOPES = {"envelope": "max", "no_envelope": "none"}


def split_method(name: str) -> tuple[str, str | None]:
    """``"maugif:running"`` → ``("maugif", "running")``; ``"dwt"`` → ``("dwt", None)``."""
    base, sep, variant = name.partition(":")
    return base, (variant if sep else None)


def maugif_overrides(variant: str | None) -> dict[str, str]:
    """The additive-model config overrides a ``maugif:`` variant names.

    ``"running+envelope"`` → ``{"bn_mode": "running", "envelope": "max"}``; ``None`` → ``{}``.

    Raises:
        ValueError: an unknown token, or two tokens setting the same option.
    """
    out: dict[str, str] = {}
    for token in variant.split("+") if variant else ():
        if token in BN_MODES:
            key, value = "bn_mode", token
        elif token in ENVELOPES:
            key, value = "envelope", ENVELOPES[token]
        else:
            allowed = ", ".join((*BN_MODES, *ENVELOPES))
            raise ValueError(
                f"unknown maugif variant {token!r} in {variant!r} (expected one of {allowed}, joined by +)"
            )
        if key in out:
            raise ValueError(f"maugif variant {variant!r} sets {key} twice")
        out[key] = value
    return out


class FusedSourceConfig(FrozenConfig):
    """Already-fused images of another method, scored next to ours (matched to the pairs by pair_id)."""

    name: str = Field(
        ..., pattern=_NAME.pattern, description="Method name in the tables (letters, digits, '.', '_', '-')."
    )
    uri: str = Field(..., description="Folder holding the fused images (local path or s3:// prefix).")
    pattern: str = Field(
        "{pair_id}.*",
        description=(
            "File-name pattern with '{pair_id}' once and '*' as a wildcard, matched case-insensitively, e.g. "
            "'{pair_id}_U2Fusion.jpg' for VIFB's reference outputs. The default matches batch_fuse outputs."
        ),
    )

    @model_validator(mode="after")
    def _check_pattern(self) -> FusedSourceConfig:
        if self.pattern.count("{pair_id}") != 1:
            raise ValueError(f"fused pattern {self.pattern!r} must contain '{{pair_id}}' exactly once")
        return self


class EvalJobConfig(FrozenConfig):
    """Everything ``jobs/evaluate.py`` needs; saved as ``<output>/config.yaml``."""

    input: str = Field(..., description="Pair source: manifest (.csv/.parquet/.jsonl) or folder; local or s3://.")
    task: Task = Field(..., description="Task of the pairs (pairs whose source names another task are refused).")
    output: str = Field(..., description="Output folder (local or s3://) for the CSVs, plots and report.html.")
    methods: tuple[str, ...] | None = Field(
        None,
        description=(
            "Methods to run, in table order (see the module docstring). None: maugif and the task's "
            "classical baselines, plus every fused folder."
        ),
    )
    checkpoint: str | None = Field(
        None,
        description=(
            "MAUGIF checkpoint of an additive task (file, folder or training output, local or s3://). None: "
            "the task's bundled pretrained model. Multiplicative models are fitted per scene and need none."
        ),
    )
    convention: Literal["standard", "cddfuse", "vifb"] = Field(
        "standard",
        description="Additive metric convention (maugif_core.metrics): ours, CDDFuse's or VIFB/MEFB's.",
    )
    protocol: Literal["wald", "full"] = Field(
        "wald",
        description=(
            "pansharpen / hsi_msi only. 'wald': degrade both inputs by the ratio, fuse, compare with the "
            "original low-resolution image (sam, ergas, q2n, psnr). 'full': fuse the original pair, score "
            "without reference (qnr, d_lambda, d_s)."
        ),
    )
    fused: tuple[FusedSourceConfig, ...] = Field(
        (), description="Folders of already-fused images to score as extra methods (--fused-dir)."
    )
    limit: PositiveInt | None = Field(None, description="Evaluate only the first N pairs discovered.")
    grid_pairs: NonNegativeInt = Field(
        4,
        description="Pairs shown in the visual grid (sources, ours, baselines): the first N discovered.",
    )
    thumbnail_size: PositiveInt = Field(256, description="Longest side of a grid thumbnail, pixels.")
    save_fused: bool = Field(
        False,
        description="Also write every method's fused image to <output>/fused/<method>/<pair_id>.(png|tif).",
    )
    nyquist_gain_a: float = Field(
        0.3,
        gt=0,
        lt=1,
        description=(
            "Wald protocol: gain at the low-resolution Nyquist frequency of the Gaussian (MTF-like) filter "
            "that degrades image A (MS / HS) before decimation; 0.3 is the usual generic MS MTF."
        ),
    )
    nyquist_gain_b: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="Wald protocol: the same for image B (PAN / MS); PAN MTFs are lower (about 0.1-0.17).",
    )
    same_grid_ratio: int | None = Field(
        None,
        ge=2,
        description=(
            "Wald protocol for pairs on one grid (e.g. HS and MS both at 30 m): degrade only A by this ratio "
            "(HySure's simulation). None: such pairs fail with the reason."
        ),
    )
    block_size: PositiveInt = Field(
        32, description="Block side of Q2n and of QNR's Q index (rounded to a multiple of the ratio for QNR)."
    )
    multiplicative: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the per-scene MAUGIF fit (MultiplicativeConfig fields: steps, lr, ...).",
    )
    max_failed_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Exit code 1 when more than this fraction of (pair, method) runs failed (0: any).",
    )
    num_actors: PositiveInt = Field(2, description="Evaluation actors (each loads the model once).")
    cpus_per_actor: PositiveFloat = Field(
        0.5, description="CPUs reserved per actor; fractional so decode tasks still run on a 2-CPU machine."
    )
    torch_threads: PositiveInt = Field(1, description="torch intra-op threads per actor.")
    address: str | None = Field(None, description="Ray cluster address; None: RAY_ADDRESS, else a local instance.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-storage access.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="Pair discovery.")
    read: ReadConfig = Field(default_factory=ReadConfig, description="Decoding.")

    @property
    def mechanism(self) -> str:
        """``"multiplicative"`` for pansharpen / hsi_msi, else ``"additive"``."""
        return "multiplicative" if self.task in MULTIPLICATIVE else "additive"

    @property
    def method_names(self) -> tuple[str, ...]:
        """The methods to run: as configured, or the task's defaults plus every fused folder."""
        if self.methods is not None:
            return self.methods
        return (*DEFAULT_METHODS[self.mechanism], *(f.name for f in self.fused))

    @model_validator(mode="after")
    def _check_methods(self) -> EvalJobConfig:
        fused = [f.name for f in self.fused]
        if len(set(fused)) != len(fused):
            raise ValueError(f"fused: method names must be unique, got {fused}")
        known = ADDITIVE_METHODS if self.mechanism == "additive" else SPECTRAL_METHODS
        names = self.method_names
        if not names:
            raise ValueError("methods: expected at least one method")
        if len(set(names)) != len(names):
            raise ValueError(f"methods: names must be unique, got {list(names)}")
        for name in names:
            base, variant = split_method(name)
            if name in fused:
                continue
            if base == MAUGIF:
                if variant is not None and self.mechanism != "additive":
                    raise ValueError(f"methods: {name!r}: task {self.task} has no maugif variants")
                try:
                    maugif_overrides(variant)
                except ValueError as exc:
                    raise ValueError(f"methods: {name!r}: {exc}") from None
            elif variant is not None or base not in known:
                raise ValueError(
                    f"methods: unknown method {name!r} for task {self.task}: expected maugif, "
                    f"{', '.join(known)} or a fused folder name ({', '.join(fused) or 'none given'})"
                )
        for name in fused:
            if name not in names:
                raise ValueError(f"fused: folder {name!r} is not in methods {list(names)}")
        return self

    @model_validator(mode="after")
    def _check_multiplicative_overrides(self) -> EvalJobConfig:
        if self.multiplicative and self.mechanism != "multiplicative":
            raise ValueError(f"multiplicative: overrides given but task {self.task!r} is additive")
        for key in ("task", "mechanism", "bands_low", "bands_high", "ratio"):
            if key in self.multiplicative:
                raise ValueError(f"multiplicative.{key} cannot be overridden (set per scene)")
        return self
