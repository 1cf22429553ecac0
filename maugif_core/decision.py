"""A per-pixel source decision for additive fusion (multi-focus, multi-exposure), inside MAUGIF's frame.

A regressed detail map is not a focus decision: where the two focus planes meet, ``Y_A + tau(d_B)`` adds B's
detail on top of A's blur and leaves halos. For tasks where, at each pixel, one source is simply *the better
one* (in focus, well exposed), this module turns the model's two contribution maps into a decision and
composes the output from the sources themselves:

1. **Evidence** per source, from the model and from the images: the local energy of each direction's detail map
   (``D_B``: what B holds beyond A; ``D_A``: the reverse) and a local activity of the source (energy of its
   Laplacian for focus; well-exposedness for exposure). Each is turned into a normalised contrast in
   ``[-1, 1]`` (positive: B is the better source) and the two are mixed by ``detail_weight``.
2. **Decision** ``m = 1[evidence > 0]``, refined by small-region removal (a morphological opening then
   closing with a square of radius ``region_radius``: islands and holes narrower than it disappear) and a
   consistency check (majority vote over a ``(2 * vote_radius + 1)^2`` window, Li et al.'s consistency
   verification).
3. **Boundary**: an edge-aware guided filter (He et al.) of the refined decision, guided by the mean of the two
   sources, so the transition follows image edges: weight ``w`` in ``[0, 1]``.
4. **Composition** (``composition="linear"``): ``F_dec = w * Y_B + (1 - w) * Y_A``. Where the decision is
   uncertain (``w`` near 1/2, within ``uncertain_band`` of it) the learned fusion ``Y_A + tau(d)`` is kept,
   blended linearly. ``composition="pyramid"`` blends the two sources' undecimated Laplacian pyramids level by
   level with the weight's Gaussian pyramid (Burt and Adelson's multiresolution spline, without decimation so
   that it stays shift-invariant and tile-exact) and takes, where a level's weight is uncertain, the
   coefficient of larger magnitude (the classical max-abs rule, only where the decision does not decide).
   With ``inject_gain`` > 0 each side carries the learned injection of the other direction's detail.

Every step is a local operation (box filters, max pools) whose border handling depends only on whether the
window meets the image edge, so the whole rule has a finite receptive-field radius
(:func:`decision_radius`): a tile with that halo (plus the decoders') gives the same output as the whole image.
Every image of a batch is processed on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maugif_core.config import AdditiveConfig

__all__ = ["DecisionMaps", "box_mean", "decide", "decision_radius", "guided_filter", "pyramid_radius"]

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_EPS = 1e-12


def decision_radius(config: AdditiveConfig) -> int:
    """Receptive-field radius (pixels) of :func:`decide` given its inputs (detail maps, lumas).

    Laplacian (1) + activity window + opening and closing (4 x region radius) + vote + guided filter (2 x its
    radius: two box filters in sequence); the pyramid composition adds its coarsest blur's radius
    (:func:`pyramid_radius`), for the weight's Gaussian pyramid.
    """
    if config.decision == "none":
        return 0
    radius = 1 + config.activity_radius + 4 * config.region_radius + config.vote_radius + 2 * config.guide_radius
    if config.composition == "pyramid":
        radius += pyramid_radius(config.pyramid_levels)
    return radius


def pyramid_radius(levels: int) -> int:
    """Radius of the coarsest level of :func:`_gaussian_pyramid`: 5-tap kernels dilated 1, 2, 4, ... ."""
    return 2 * (2**levels - 1)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2r+1)^2`` window clipped to the image (no padding counted). ``(B, C, H, W)``."""
    if radius <= 0:
        return x
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def _dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else x


def _erode(x: torch.Tensor, radius: int) -> torch.Tensor:
    return -F.max_pool2d(-x, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else x


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Grey guided filter (He, Sun, Tang 2013) with edge-clipped box means. ``(B, 1, H, W)`` each.

    Radius of influence: ``2 * radius`` (box means of the coefficients of box means).
    """
    if radius <= 0:
        return source
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(source, radius)
    cov_ip = box_mean(guide * source, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor, step: int) -> torch.Tensor:
    """Separable 5-tap binomial blur with taps ``step`` apart (a trous), normalised by the weight inside the image
    (edge-clipped like :func:`box_mean`). Radius ``2 * step``. ``(B, 1, H, W)``."""
    kernel = _BINOMIAL.to(x)
    out, norm = x, torch.ones_like(x[:1])
    for k in (kernel.view(1, 1, 1, 5), kernel.view(1, 1, 5, 1)):
        pad = (0, 2 * step) if k.shape[-1] == 5 else (2 * step, 0)
        out = F.conv2d(out, k, padding=pad, dilation=step)
        norm = F.conv2d(norm, k, padding=pad, dilation=step)
    return out / norm


def _gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[G_0 = x, G_1, ..., G_levels]``, undecimated (each level blurred with twice the previous dilation)."""
    out = [x]
    for k in range(levels):
        out.append(_blur(out[-1], 2**k))
    return out


def _pyramid_compose(
    base_a: torch.Tensor, base_b: torch.Tensor, weight: torch.Tensor, levels: int, band: float
) -> torch.Tensor:
    """Blend the Laplacian pyramids of ``base_a`` and ``base_b`` with the Gaussian pyramid of ``weight`` (of B);
    where a level's weight is within ``band`` of 1/2, blend towards the coefficient of larger magnitude."""
    gauss_a, gauss_b = _gaussian_pyramid(base_a, levels), _gaussian_pyramid(base_b, levels)
    gauss_w = _gaussian_pyramid(weight, levels)
    fused = gauss_w[levels] * gauss_b[levels] + (1 - gauss_w[levels]) * gauss_a[levels]
    for k in range(levels):
        lap_a, lap_b, w = gauss_a[k] - gauss_a[k + 1], gauss_b[k] - gauss_b[k + 1], gauss_w[k]
        level = w * lap_b + (1 - w) * lap_a
        if band > 0:
            maxabs = torch.where(lap_b.abs() > lap_a.abs(), lap_b, lap_a)
            confidence = ((2 * w - 1).abs() / band).clamp(max=1.0)
            level = confidence * level + (1 - confidence) * maxabs
        fused = fused + level
    return fused


def _threshold(detail: torch.Tensor, threshold: float) -> torch.Tensor:
    """tau(d) = d * 1[d >= t] (as maugif_core.additive.threshold_detail, which imports this module)."""
    return detail * (detail >= threshold).to(detail.dtype)


def _contrast(evidence_b: torch.Tensor, evidence_a: torch.Tensor) -> torch.Tensor:
    """``(e_B - e_A) / (e_B + e_A)`` in [-1, 1]; 0 where both are zero."""
    return (evidence_b - evidence_a) / (evidence_b + evidence_a + _EPS)


def _activity(luma: torch.Tensor, config: AdditiveConfig) -> torch.Tensor:
    if config.decision == "exposure":
        # Well-exposedness (Mertens et al.): closeness to mid-grey, times local contrast.
        well = torch.exp(-((luma - 0.5) ** 2) / (2 * 0.2**2))
        lap = F.conv2d(luma, _LAPLACIAN.to(luma)[None, None], padding=1).abs()
        return box_mean(well * (lap + 1.0 / 255.0), config.activity_radius)
    lap = F.conv2d(luma, _LAPLACIAN.to(luma)[None, None], padding=1)
    return box_mean(lap * lap, config.activity_radius)


@dataclass(frozen=True)
class DecisionMaps:
    """Result of :func:`decide`; each field ``(B, 1, H, W)``.

    Attributes:
        fused_y: the composed fused luma.
        weight: refined weight of B in [0, 1] (1: take B).
        evidence: raw evidence in [-1, 1] (positive: B is the better source), before the decision.
    """

    fused_y: torch.Tensor
    weight: torch.Tensor
    evidence: torch.Tensor


def decide(
    luma_a: torch.Tensor,
    luma_b: torch.Tensor,
    detail_b: torch.Tensor,
    detail_a: torch.Tensor,
    learned_y: torch.Tensor,
    config: AdditiveConfig,
) -> DecisionMaps:
    """Decide, per pixel, which source to take, refine the decision and compose the fused luma.

    Args:
        luma_a, luma_b: ``(B, 1, H, W)`` source lumas in [0, 1].
        detail_b: ``(B, 1, H, W)`` D_B's output (B's detail beyond A).
        detail_a: ``(B, 1, H, W)`` D_A's output (A's detail beyond B).
        learned_y: ``(B, 1, H, W)`` the learned fusion, kept where the decision is uncertain.
        config: the model config (``decision`` and its parameters).

    Returns:
        :class:`DecisionMaps`; with ``config.decision == "none"`` the learned fusion, weight and evidence 1/2 and 0.
    """
    if config.decision == "none":
        return DecisionMaps(learned_y, torch.full_like(learned_y, 0.5), torch.zeros_like(learned_y))
    radius = config.activity_radius
    compute = torch.float32 if luma_a.dtype in (torch.float16, torch.bfloat16) else luma_a.dtype
    luma_a, luma_b = luma_a.to(compute), luma_b.to(compute)
    evidence = _contrast(_activity(luma_b, config), _activity(luma_a, config))
    if config.detail_weight > 0:
        detail = _contrast(box_mean(detail_b.to(compute) ** 2, radius), box_mean(detail_a.to(compute) ** 2, radius))
        evidence = (1 - config.detail_weight) * evidence + config.detail_weight * detail
    mask = (evidence > 0).to(compute)
    # Small-region removal: opening removes B-islands, closing fills B-holes (A-islands) narrower than the square.
    mask = _dilate(_erode(mask, config.region_radius), config.region_radius)
    mask = _erode(_dilate(mask, config.region_radius), config.region_radius)
    if config.vote_radius > 0:
        mask = (box_mean(mask, config.vote_radius) > 0.5).to(compute)
    guide = 0.5 * (luma_a + luma_b)
    weight = guided_filter(guide, mask, config.guide_radius, config.guide_eps).clamp(0.0, 1.0)
    base_a, base_b = luma_a, luma_b
    if config.inject_gain > 0:
        # Each side of the decision keeps the learned injection of the other source's detail (MAUGIF's two
        # directions, chosen per pixel): Y_A + g tau(d_B) where A is taken, Y_B + g tau(d_A) where B is.
        gain = config.inject_gain
        base_a = luma_a + gain * _threshold(detail_b.to(compute), config.threshold)
        base_b = luma_b + gain * _threshold(detail_a.to(compute), config.threshold)
    if config.composition == "pyramid":
        composed = _pyramid_compose(base_a, base_b, weight, config.pyramid_levels, config.uncertain_band)
        return DecisionMaps(composed.to(learned_y.dtype), weight, evidence)
    composed = weight * base_b + (1 - weight) * base_a
    if config.uncertain_band > 0:
        confidence = ((2 * weight - 1).abs() / config.uncertain_band).clamp(max=1.0)
        composed = confidence * composed + (1 - confidence) * learned_y.to(compute)
    return DecisionMaps(composed.to(learned_y.dtype), weight, evidence)
