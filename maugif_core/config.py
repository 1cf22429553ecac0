"""Model configurations and the per-task presets (SPEC §1).

Configs are frozen pydantic models: plain data that is validated once, stored inside every checkpoint as JSON and
turned into modules by :func:`maugif_core.build_model`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from maugif_core.errors import UnknownTaskError

__all__ = [
    "ADDITIVE_TASKS",
    "MULTIPLICATIVE_TASKS",
    "TASKS",
    "AdditiveConfig",
    "ModelConfig",
    "MultiplicativeConfig",
    "preset",
]

ADDITIVE_TASKS = ("vif", "medical", "mff", "mef", "general")
MULTIPLICATIVE_TASKS = ("hsi_msi", "pansharpen")
TASKS = ADDITIVE_TASKS + MULTIPLICATIVE_TASKS

ChromaRule = Literal["from_a", "saturation_weighted"]
BatchNormMode = Literal["per_image", "running"]
EnvelopeRule = Literal["none", "max"]
DecisionRule = Literal["none", "focus", "exposure"]
CompositionRule = Literal["linear", "pyramid"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdditiveConfig(_Frozen):
    """Configuration of an additive-mechanism MAUGIF model (SPEC §1.1)."""

    mechanism: Literal["additive"] = Field("additive", description="Fusion mechanism; fixed for this config.")
    task: Literal["vif", "medical", "mff", "mef", "general"] = Field(
        "general", description="Task preset the model was built for."
    )
    threshold: float = Field(0.0, description="Detail threshold t: tau(d) = d * 1[d >= t], in unit-float luma.")
    lambda_y: PositiveFloat = Field(0.9, description="Stage-1 weight of ||C - Y_A||.")
    chroma: ChromaRule = Field("from_a", description="How the fused chroma is formed from the sources.")
    direction: Literal["b_to_a", "a_to_b"] = Field(
        "b_to_a",
        description="Which injector fuses: D_B injects B's detail into A (default) or D_A the reverse.",
    )
    envelope: EnvelopeRule = Field(
        "none",
        description=(
            "Inference-time bound on the fused luma: 'none' keeps F_Y = Y_A + tau(d) (SPEC §1.1); 'max' caps it "
            "at max(Y_A, B), the brighter source at each pixel, so injected detail cannot lift a pixel above what "
            "either source holds (a dark background stays dark). Pointwise, so tiling is unaffected; training is "
            "unchanged."
        ),
    )
    bn_mode: BatchNormMode = Field(
        "running",
        description=(
            "BatchNorm at inference: 'running' uses the running statistics (the default, chosen by measurement: "
            "docs/RESULTS.md, 'BatchNorm at inference'); 'per_image' normalises each image with its own "
            "statistics (the reference's behaviour at batch 1, frozen across the tiles of one image)."
        ),
    )
    decision: DecisionRule = Field(
        "none",
        description=(
            "Per-pixel source decision (maugif_core.decision): 'none' keeps the learned fusion Y_A + tau(d); "
            "'focus' decides, per pixel, which source is in focus from both detail maps (D_B, D_A) and the "
            "sources' Laplacian energy, refines the decision and composes the luma from the sources; "
            "'exposure' does the same with well-exposedness. Widens the receptive field (tiling halo) by "
            "maugif_core.decision.decision_radius."
        ),
    )
    detail_weight: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Decision evidence: weight of the detail maps' energy contrast against the sources' activity.",
    )
    activity_radius: NonNegativeInt = Field(
        8, description="Decision: radius (pixels) of the window the activity and detail energies are averaged over."
    )
    region_radius: NonNegativeInt = Field(
        4,
        description=(
            "Decision: small-region removal; decided regions narrower than 2r+1 pixels are removed (opening) and "
            "holes as narrow filled (closing)."
        ),
    )
    vote_radius: NonNegativeInt = Field(
        3, description="Decision: consistency check, a majority vote over a (2r+1)^2 window (0: off)."
    )
    guide_radius: NonNegativeInt = Field(
        4, description="Decision: radius of the guided filter that smooths the decision along image edges (0: off)."
    )
    guide_eps: PositiveFloat = Field(
        1e-3, description="Decision: guided-filter regularisation (unit-float luma squared); larger is smoother."
    )
    uncertain_band: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Decision: where the refined weight of B is within this of 1/2, the learned fusion is blended back in "
            "(linearly, fully at 1/2); 0 composes from the sources everywhere."
        ),
    )
    inject_gain: float = Field(
        0.0,
        ge=0,
        description=(
            "Decision: gain of the learned injection on top of the decided source, per pixel in the decided "
            "direction: F = w (Y_B + g tau(d_A)) + (1 - w) (Y_A + g tau(d_B)); 0 composes the sources alone."
        ),
    )
    composition: CompositionRule = Field(
        "linear",
        description=(
            "Decision: how the decided sources are composed. 'linear': F = w B' + (1 - w) A' in the image "
            "domain, the learned fusion blended back where w is within uncertain_band of 1/2. 'pyramid': the two "
            "(injected) sources' undecimated Laplacian pyramids are blended level by level with the weight's "
            "Gaussian pyramid, and where a level's weight is within uncertain_band of 1/2 the coefficient of "
            "larger magnitude is taken (max-abs); the coarsest level is blended. Widens the receptive field by "
            "2 (2^pyramid_levels - 1) pixels."
        ),
    )
    pyramid_levels: PositiveInt = Field(
        4, le=6, description="Decision, 'pyramid' composition: number of detail levels (dilations 1, 2, 4, ...)."
    )
    encoder_channels: PositiveInt = Field(3, description="Width of the encoder's 11x11 layer (reference: 3).")
    decoder_width: PositiveInt = Field(16, description="Width of the decoder's first branch (reference: 16).")
    decoder_width2: PositiveInt = Field(32, description="Width of the decoder's second branch (reference: 32).")
    loss_w_shared: float = Field(0.2, ge=0, description="Stage-1 weight of ||C_B - C||.")
    loss_w_b: float = Field(1.0, ge=0, description="Stage-1 weight of ||C - B||.")
    loss_w_grad: float = Field(66.0, ge=0, description="Stage-2 weight of the Sobel max-gradient term.")


class MultiplicativeConfig(_Frozen):
    """Configuration of a multiplicative-mechanism MAUGIF model (SPEC §1.2)."""

    mechanism: Literal["multiplicative"] = Field(
        "multiplicative", description="Fusion mechanism; fixed for this config."
    )
    task: Literal["hsi_msi", "pansharpen"] = Field("pansharpen", description="Task preset.")
    rank: PositiveInt = Field(15, description="K, the number of spectral basis vectors (capped at the band count L).")
    ratio: Annotated[int, Field(ge=2)] | None = Field(
        None, description="Integer resolution ratio r; inferred from the image sizes when None."
    )
    decimation: Literal["plain", "blur"] = Field(
        "plain",
        description="How M is brought to low resolution for the loss: plain decimation or blur-then-decimate.",
    )
    steps: PositiveInt = Field(6000, description="Maximum optimisation steps of the per-scene fit.")
    lr: PositiveFloat = Field(3e-4, description="Adam learning rate of the per-scene fit.")
    early_stop_patience: int = Field(
        500,
        ge=0,
        description="Stop after this many steps without relative improvement (0 disables early stopping).",
    )
    early_stop_rel_tol: float = Field(1e-4, ge=0, description="Relative loss improvement that counts as progress.")
    decimation_offset: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description=(
            "Phase of plain decimation, in high-resolution pixels: M_low[i, j] = M[r*i + offset, "
            "r*j + offset]. None = r // 2, the pixel nearest the centre of each r x r footprint (aligned "
            "origins); the reference uses 0."
        ),
    )
    weight_decay: float = Field(1e-8, ge=0, description="Adam L2 weight decay of the per-scene fit.")
    loss_w_recon: float = Field(0.2, ge=0, description="Weight of ||D(E(Z)) - Z||.")
    seed: int = Field(0, description="Seed of the per-scene fit.")
    fusion: Literal["injection", "decoder"] = Field(
        "injection",
        description=(
            "Fusion rule. 'decoder': SPEC §1.2's X = Phi D(M), every coefficient predicted from M. 'injection' "
            "(ours, the default): X = up(H) + Phi G^T (D(M) - up(D(M_low)), ...), the measured spectra for the "
            "low frequencies and only the high-frequency detail injected, with gains G fitted per scene at "
            "reduced scale (see maugif_core.multiplicative.injection). Needs the low-resolution image (or its "
            "tile) at fusion time."
        ),
    )
    injection_sources: Literal["decoder+image", "decoder"] = Field(
        "decoder+image",
        description=(
            "Detail injected by the 'injection' rule: D's high-frequency response D(M) - up(D(M_low)) "
            "('decoder'), plus M's own detail M - up(M_low) ('decoder+image'), weighted by the scene's "
            "injection gains G fitted at reduced scale."
        ),
    )
    injection_ridge: float = Field(
        0.01,
        ge=0,
        description="Ridge weight of the least-squares fit of the injection gains, relative to mean(diag(X^T X)).",
    )
    chroma_window: NonNegativeInt = Field(
        0,
        description=(
            "'injection' rule: keep B's noise out of the colour. When > 0, the injected detail is replaced by its "
            "local regression on B's own (band-mean) detail over a box of (2 * chroma_window * r + 1) high-"
            "resolution pixels: the spatial structure is B's, the spectral direction varies only as smoothly as "
            "the box (no chroma speckle from per-pixel noise). 0 disables it. Widens the receptive field by "
            "chroma_window * r pixels."
        ),
    )
    consistency_steps: NonNegativeInt = Field(
        2,
        description=(
            "'injection' rule: back-projection steps X <- X + up(H - degrade(X)) after injection, pulling the "
            "fused cube towards consistency with H under the model's own degradation (the MTF-like Gaussian of "
            "the injection gains' fit, registered like the loss' decimation): the multiplicative mechanism's "
            "premise that H is a spatial degradation of the latent cube. 0 disables it. Each step widens the "
            "receptive field by consistency_radius(r) pixels (docs/EVALUATION.md has the measurements)."
        ),
    )
    sensor: Literal["estimate", "fixed"] = Field(
        "estimate",
        description=(
            "The simulated sensor (registration of H on M and MTF gain) used by the fit's decimation, the "
            "injection gains, the injected detail and back-projection. 'estimate' (default): per scene, from the "
            "data at reduced scale, or the registration from the rasters' georeferencing when fit() is given it "
            "(maugif_core.multiplicative.sensor). 'fixed': the footprint centre and gain 0.3 for every scene."
        ),
    )
    bands_low: Annotated[int, Field(ge=2)] | None = Field(
        None,
        description=(
            "L, band count of the low-resolution image A. None until fitted; when set, it fixes the "
            "parameter shapes (so a fitted model can be rebuilt from its config) and scenes with another "
            "count are refused."
        ),
    )
    bands_high: PositiveInt | None = Field(
        None,
        description="l, band count of the high-resolution image B (1 for pansharpening). None until "
        "fitted; see bands_low.",
    )

    @model_validator(mode="after")
    def _check_decimation_offset(self) -> MultiplicativeConfig:
        offset, ratio = self.decimation_offset, self.ratio
        if offset is not None and ratio is not None and offset >= ratio:
            raise ValueError(
                f"decimation_offset must be smaller than ratio ({self.ratio}), got {self.decimation_offset}"
            )
        return self

    @model_validator(mode="after")
    def _check_bands_pair(self) -> MultiplicativeConfig:
        if (self.bands_low is None) != (self.bands_high is None):
            raise ValueError(
                f"bands_low and bands_high must be set together, got bands_low={self.bands_low}, "
                f"bands_high={self.bands_high}"
            )
        return self


ModelConfig = AdditiveConfig | MultiplicativeConfig

# SPEC §1.1's table (t, λ_Y, chroma), plus the envelope where the evaluation measured it ahead of SPEC's uncapped
# rule on the task's held-out sets (docs/RESULTS.md, "Envelope"; multi-focus was a tie, so it keeps SPEC's rule).
# Multi-focus composes from a per-pixel focus decision (maugif_core.decision), chosen by measurement on Lytro and
# MFI-WHU (scripts/tune_decision.py, docs/RESULTS_MULTIFOCUS.md); multi-exposure uses the well-exposedness
# decision, which beat the learned fusion and every baseline on 6 of 8 on MEFB's held-out fold (same document).
_ADDITIVE_PRESETS: dict[str, dict] = {
    "vif": {"threshold": -0.5, "lambda_y": 0.9, "chroma": "from_a", "envelope": "max"},
    "medical": {"threshold": 0.0, "lambda_y": 2.0, "chroma": "from_a", "envelope": "max"},
    "mff": {
        "threshold": 0.0,
        "lambda_y": 0.9,
        "chroma": "saturation_weighted",
        "envelope": "none",
        "decision": "focus",
        "inject_gain": 0.5,
    },
    "mef": {
        "threshold": 0.0,
        "lambda_y": 0.9,
        "chroma": "saturation_weighted",
        "envelope": "max",
        "decision": "exposure",
    },
    "general": {"threshold": 0.0, "lambda_y": 0.9, "chroma": "from_a", "envelope": "max"},
}


def preset(task: str, **overrides) -> ModelConfig:
    """Return the model config of a task preset, with field overrides applied (and validated).

    Raises:
        UnknownTaskError: ``task`` is not one of :data:`TASKS`.
        pydantic.ValidationError: an override is not a field of the config or has a bad value.
    """
    if task in _ADDITIVE_PRESETS:
        return AdditiveConfig(task=task, **{**_ADDITIVE_PRESETS[task], **overrides})
    if task in MULTIPLICATIVE_TASKS:
        return MultiplicativeConfig(task=task, **overrides)
    raise UnknownTaskError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
