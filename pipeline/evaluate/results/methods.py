"""The method keys the evaluation runs ask for and the report reads back: the classical baselines and the
MAUGIF inference variants (BatchNorm statistics, envelope)."""

from __future__ import annotations

ADDITIVE_BASELINES = ("average", "maxabs", "dwt", "laplacian")

SPECTRAL_BASELINES = ("bicubic", "brovey", "gihs", "gsa", "rio_brovey")

# MAUGIF method keys in the report: per-image BatchNorm statistics, running statistics (both without the
# envelope; run as MODEL_METHODS and read back under these keys: see read_run), and running statistics with the
# fused luma capped at the brighter source (jobs/evaluate.py method names, pipeline.config.eval_config).
PER_IMAGE, RUNNING, ENVELOPED = "maugif", "maugif:running", "maugif:running+envelope"

VARIANT_TITLES = {
    PER_IMAGE: "per-image BN, no envelope",
    RUNNING: "running BN, no envelope",
    ENVELOPED: "running BN + envelope",
}

# What jobs/evaluate.py is asked to run for PER_IMAGE and RUNNING: explicit about the envelope too.
MODEL_METHODS = ("maugif:per_image+no_envelope", "maugif:running+no_envelope")

MAUGIF_PREFIX = "maugif"

VIFB_FUSED = "U2Fusion"  # one published method whose fused images are in VIFB/reference_fused: scored by us too
