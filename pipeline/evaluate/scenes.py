"""What the methods of an evaluation see and what they are compared with: the pair cropped to an integer ratio, and
for remote-sensing tasks under Wald's protocol the degraded inputs with the original as reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.config.eval_config import EvalJobConfig

__all__ = ["Scene", "crop_to_ratio", "prepare_scene", "wald_degrade"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scene:
    """One prepared pair.

    Attributes:
        image_a, image_b: what every method fuses: the decoded sources (additive), or unit-float ``(h, w, L)``
            / ``(H, W, l)`` spectral images (degraded ones under the Wald protocol).
        reference: Wald protocol: the unit-float original A the fused image is compared with; else None.
        ratio: spectral tasks: the resolution ratio between ``image_b`` and ``image_a``; additive: None.
        source_a, source_b: what the full-resolution scores compare with (the original A and B); additive: the
            sources.
    """

    image_a: np.ndarray
    image_b: np.ndarray
    reference: np.ndarray | None = None
    ratio: int | None = None
    source_a: np.ndarray | None = None
    source_b: np.ndarray | None = None


def _as_cube(image: np.ndarray) -> np.ndarray:
    from maugif_core.imaging import to_unit_float

    unit = to_unit_float(np.asarray(image))
    return unit[..., None] if unit.ndim == 2 else unit


def _integer_ratio(low: np.ndarray, high: np.ndarray) -> int:
    (h, w), (H, W) = low.shape[:2], high.shape[:2]
    if H % h or W % w or H // h != W // w:
        raise ValueError(
            f"image_b {H}x{W} is not an integer multiple of image_a {h}x{w} (ratios {H / h:.4g}, {W / w:.4g})"
        )
    return H // h


def crop_to_ratio(image_a: np.ndarray, image_b: np.ndarray, ratio: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop A (low-res) so that its sides are multiples of ``factor``, and B (``ratio`` × A) to match.

    Raises:
        ValueError: A is smaller than ``factor`` in a side.
    """
    h, w = (image_a.shape[0] // factor) * factor, (image_a.shape[1] // factor) * factor
    if h == 0 or w == 0:
        raise ValueError(f"image_a {image_a.shape[0]}x{image_a.shape[1]} is smaller than the ratio {factor}")
    return image_a[:h, :w], image_b[: h * ratio, : w * ratio]


def wald_degrade(image: np.ndarray, ratio: int, nyquist_gain: float) -> np.ndarray:
    """Wald-protocol degradation of a ``(H, W, C)`` unit-float image: per band, a Gaussian low-pass with gain
    ``nyquist_gain`` at the low-resolution Nyquist frequency, then one pixel per ``ratio`` × ``ratio`` cell
    (:func:`maugif_core.metrics.degrade_pan`). H and W must be multiples of ``ratio``.

    Returns:
        ``(H / ratio, W / ratio, C)`` float32.
    """
    from maugif_core.metrics import degrade_pan

    cube = _as_cube(image)
    bands = [degrade_pan(cube[..., c].astype(np.float64), ratio, nyquist_gain) for c in range(cube.shape[2])]
    return np.stack(bands, axis=2).astype(np.float32)


def prepare_scene(image_a: np.ndarray, image_b: np.ndarray, config: EvalJobConfig) -> Scene:
    """The :class:`Scene` of a decoded pair under the configured task and protocol.

    Raises:
        ValueError: a spectral pair without an integer ratio, a same-grid pair without ``same_grid_ratio``
            (Wald) or under the full-resolution protocol, or an image too small for the ratio.
    """
    if config.mechanism == "additive":
        return Scene(image_a, image_b, source_a=image_a, source_b=image_b)
    low, high = _as_cube(image_a), _as_cube(image_b)
    ratio = _integer_ratio(low, high)
    if config.protocol == "full":
        if ratio < 2:
            raise ValueError(
                f"full-resolution protocol needs image_b at an integer ratio >= 2 of image_a, got ratio "
                f"{ratio} ({low.shape[0]}x{low.shape[1]} and {high.shape[0]}x{high.shape[1]})"
            )
        return Scene(low, high, ratio=ratio, source_a=low, source_b=high)
    if ratio == 1:
        if config.same_grid_ratio is None:
            raise ValueError(
                "image_a and image_b share one grid (ratio 1): set same_grid_ratio to degrade image_a by it "
                "(Wald protocol), or use a pair at an integer ratio >= 2"
            )
        factor = config.same_grid_ratio
        low, high = crop_to_ratio(low, high, 1, factor)
        degraded_a = wald_degrade(low, factor, config.nyquist_gain_a)
        return Scene(degraded_a, high, reference=low, ratio=factor, source_a=low, source_b=high)
    low, high = crop_to_ratio(low, high, ratio, ratio)
    degraded_a = wald_degrade(low, ratio, config.nyquist_gain_a)
    degraded_b = wald_degrade(high, ratio, config.nyquist_gain_b)
    return Scene(degraded_a, degraded_b, reference=low, ratio=ratio, source_a=low, source_b=high)
