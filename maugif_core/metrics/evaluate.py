"""One-call evaluation: every additive metric for a fused pair, or the reduced/full-resolution spectral
sets."""

from __future__ import annotations

import numpy as np

from maugif_core.metrics._common import check_ratio, planes_mean, triplet_planes
from maugif_core.metrics.additive import _ag, _cc, _nabf_plane, _psnr, _qabf_plane, _scd, _sd, _sf
from maugif_core.metrics.information import _entropy, _mutual_information
from maugif_core.metrics.no_reference import full_resolution_distortions
from maugif_core.metrics.spectral import ergas, psnr, q2n, q_index, sam
from maugif_core.metrics.structural import _ms_ssim, _ssim, _vif

__all__ = ["ADDITIVE_KEYS", "FULL_KEYS", "REDUCED_KEYS", "evaluate", "evaluate_full", "evaluate_reduced"]

#: Keys of :func:`evaluate`, in table order.
ADDITIVE_KEYS: tuple[str, ...] = (
    "en", "sd", "sf", "ag", "mi", "scd", "cc", "vif", "qabf", "nabf", "ssim", "ms_ssim", "psnr",
)  # fmt: skip
#: Keys of :func:`evaluate_reduced`.
REDUCED_KEYS: tuple[str, ...] = ("sam", "ergas", "q2n", "q", "psnr")
#: Keys of :func:`evaluate_full`.
FULL_KEYS: tuple[str, ...] = ("qnr", "d_lambda", "d_s")


def evaluate(
    fused: np.ndarray, image_a: np.ndarray, image_b: np.ndarray, convention: str = "standard"
) -> dict[str, float]:
    """All additive-fusion metrics of ``fused`` against its sources, under one convention.

    Args:
        fused: ``(H, W)`` or ``(H, W, C)`` fused image, uint8, uint16 or float in [0, 1].
        image_a, image_b: the two sources, same H and W (any of the accepted dtypes and layouts).
        convention: ``standard`` (ours, documented per metric), ``cddfuse`` or ``vifb`` (compatibility with
            those published tables); see the package docstring.

    Returns:
        ``{"en", "sd", "sf", "ag", "mi", "scd", "cc", "vif", "qabf", "nabf", "ssim", "ms_ssim", "psnr"}`` →
        float.

    Raises:
        UnknownMethodError: unknown convention.
        DTypeError, ShapeError, NonFiniteError: bad inputs (the message names the argument).
    """
    # Validate, scale and split once; every metric then works on the same planes (same numbers as the
    # functions).
    planes = triplet_planes(fused, image_a, image_b, convention)
    fused_planes = [f for f, _, _ in planes]
    out = {
        "en": _entropy(fused_planes, convention),
        "sd": _sd(fused_planes),
        "sf": _sf(fused_planes, convention),
        "ag": _ag(fused_planes, convention),
        "mi": _mutual_information(planes, convention),
        "scd": _scd(planes),
        "cc": _cc(planes),
        "vif": _vif(planes),
        "qabf": planes_mean(planes, _qabf_plane),
        "nabf": planes_mean(planes, _nabf_plane),
        "ssim": _ssim(planes, convention),
        "ms_ssim": _ms_ssim(planes),
        "psnr": _psnr(planes, convention),
    }
    return {key: float(out[key]) for key in ADDITIVE_KEYS}


def evaluate_reduced(
    fused: np.ndarray, reference: np.ndarray, ratio: int, block_size: int = 32, data_range: float = 1.0
) -> dict[str, float]:
    """Reduced-resolution (Wald protocol) quality of a spectral fusion result against the reference.

    Args:
        fused: ``(H, W, C)`` fused image at the reference resolution.
        reference: ``(H, W, C)`` ground truth (the original MS / HS image).
        ratio: integer resolution ratio >= 2 used to degrade the inputs (enters ERGAS).
        block_size: block side of Q2n and Q.
        data_range: PSNR peak in unit range (1.0 = the dtype's full range; 2047/65535 for 11-bit data in
            uint16).

    Returns:
        ``{"sam": degrees, "ergas": unitless, "q2n": unitless, "q": UQI averaged over bands, "psnr": dB}``.
    """
    ratio = check_ratio(ratio)
    return {
        "sam": sam(fused, reference),
        "ergas": ergas(fused, reference, ratio),
        "q2n": q2n(fused, reference, block_size),
        "q": q_index(fused, reference, block_size),
        "psnr": psnr(fused, reference, data_range),
    }


def evaluate_full(
    fused: np.ndarray,
    ms: np.ndarray,
    pan: np.ndarray,
    ratio: int,
    block_size: int = 32,
    registration: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Full-resolution (no-reference) quality of a pansharpened image: QNR, D_λ, D_s (Alparone et al. 2008).

    Args:
        fused: ``(H, W, C)`` pansharpened image, C >= 2.
        ms: ``(H / ratio, W / ratio, C)`` original multispectral image.
        pan: ``(H, W)`` or ``(H, W, 1)`` panchromatic image.
        ratio: integer resolution ratio >= 2.
        block_size: Q block side at full resolution (a multiple of ratio).
        registration: where the MS pixel 0 lies on the PAN grid, for the PAN's degradation in D_s
            (:func:`~maugif_core.metrics.degrade_pan`); None = ``ratio // 2``.

    Returns:
        ``{"qnr", "d_lambda", "d_s"}`` → float, QNR = (1 − D_λ)(1 − D_s).
    """
    dl, ds = full_resolution_distortions(fused, ms, pan, ratio, block_size, registration)
    return {"qnr": (1.0 - dl) * (1.0 - ds), "d_lambda": dl, "d_s": ds}
