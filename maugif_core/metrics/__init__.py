"""Fusion quality metrics (pure NumPy/SciPy), with one documented convention and compatibility conventions.

Published fusion tables use incompatible definitions of the "same" metric. Every additive metric here takes
``convention=``:

* ``"standard"`` — ours: one grey plane per image (BT.601 luma on the 0–255 scale; grey and grey-as-RGB kept
  as they are), textbook formulas, MI in bits, SSIM/MS-SSIM the mean over the two sources, true PSNR.
* ``"cddfuse"`` — the CDDFuse ``Evaluator`` lineage (also DeFusion, U2Fusion tables in METRICS.md): OpenCV
  grey rounded to integers, MI in nats, SSIM a sum with old-skimage defaults, PSNR with max(F) as peak, AG a
  plain mean.
* ``"vifb"`` — the VIFB/MEFB MATLAB toolboxes: every metric per RGB channel of the fused image, averaged;
  their SF, PSNR and MI formulas. Reproduces the VIFB reference values (EN, SD, SF, AG, MI, Qabf, PSNR, SSIM)
  to the 5 significant digits of the published table.

Additive metrics (``evaluate(fused, image_a, image_b, convention)``; all on the 0–255 scale)

========== ============================ ============================== =====================================
key        standard                     cddfuse                        vifb
========== ============================ ============================== =====================================
en         luma, rounded, bits          rounded grey, bits             per channel, floored, bits
sd         population std of luma       same on rounded grey           per channel
sf         √(mean Δx² + mean Δy²)       same                           H×(C·W) matrix, sums / (H·C·W)
ag         Σ√((gx²+gy²)/2)/((H−1)(W−1)) mean over H·W                  as standard, per channel
mi         MI(A,F)+MI(B,F), bits        same levels, nats              per channel, min–max stretched, nats
scd        r(F−B,A) + r(F−A,B)          same                           per channel
cc         (r(A,F) + r(B,F)) / 2        same                           per channel
vif        VIFp(A,F)+VIFp(B,F) (sum)    same                           per channel
qabf       Xydeas–Petrović, Sobel       same                           per channel (= VIFB metricsQabf)
nabf       Kumar's modified N^{AB/F}    same                           per channel
ssim       mean of Wang SSIMs           sum, 7×7 box, data_range 2     sum of Wang SSIMs, per channel
ms_ssim    mean of MS-SSIMs (5 scales)  same                           per channel
psnr       10·log10(255²/MSE), MSE avg  10·log10(max(F)²/MSE)          20·log10(255/√((√SSE_A+√SSE_B)/2N))
========== ============================ ============================== =====================================

Units: EN bits; SD, SF, AG grey levels (0–255); MI bits or nats as above; PSNR dB; the rest unitless.
FMI is not implemented.

Multiplicative (pansharpening / HS–MS) metrics, inputs in unit range (see
:mod:`.spectral` and :mod:`.no_reference`):

* ``evaluate_reduced(fused, reference, ratio)`` → ``sam`` (degrees), ``ergas`` (100/ratio factor), ``q2n``
  (Garzelli–Nencini hypercomplex index, 32×32 blocks), ``q`` (Wang–Bovik UQI, 32×32 sliding windows, averaged
  over bands), ``psnr`` (dB, peak 1 in unit range).
* ``evaluate_full(fused, ms, pan, ratio)`` → ``qnr``, ``d_lambda``, ``d_s`` (Alparone et al. 2008: UQI on
  non-overlapping 32×32 blocks at full and (32/ratio)² at MS resolution; PAN degraded by a Gaussian with gain
  0.3 at the MS Nyquist frequency, then decimated).

Bad inputs raise the typed errors of :mod:`maugif_core.errors` (``DTypeError``, ``ShapeError``,
``NonFiniteError``, ``BandCountError``, ``RatioError``); an unknown convention raises ``UnknownMethodError``.
"""

from __future__ import annotations

from maugif_core.metrics._common import CONVENTIONS, Convention
from maugif_core.metrics.additive import (
    average_gradient,
    correlation_coefficient,
    nabf,
    psnr_fusion,
    qabf,
    scd,
    spatial_frequency,
    standard_deviation,
)
from maugif_core.metrics.evaluate import (
    ADDITIVE_KEYS,
    FULL_KEYS,
    REDUCED_KEYS,
    evaluate,
    evaluate_full,
    evaluate_reduced,
)
from maugif_core.metrics.information import entropy, mutual_information
from maugif_core.metrics.no_reference import d_lambda, d_s, degrade_pan, full_resolution_distortions, qnr
from maugif_core.metrics.spectral import ergas, psnr, q2n, q_index, sam
from maugif_core.metrics.structural import MS_SSIM_WEIGHTS, ms_ssim, ssim, vif

__all__ = [
    "ADDITIVE_KEYS",
    "CONVENTIONS",
    "FULL_KEYS",
    "MS_SSIM_WEIGHTS",
    "REDUCED_KEYS",
    "Convention",
    "average_gradient",
    "correlation_coefficient",
    "d_lambda",
    "d_s",
    "degrade_pan",
    "entropy",
    "ergas",
    "evaluate",
    "evaluate_full",
    "evaluate_reduced",
    "full_resolution_distortions",
    "ms_ssim",
    "mutual_information",
    "nabf",
    "psnr",
    "psnr_fusion",
    "q2n",
    "q_index",
    "qabf",
    "qnr",
    "sam",
    "scd",
    "spatial_frequency",
    "ssim",
    "standard_deviation",
    "vif",
]
