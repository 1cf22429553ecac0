"""Additive-mechanism MAUGIF (SPEC §1.1): dual content encoders and dual injector decoders.

Two co-registered sources share a scene and differ by additive, modality-specific components. A content encoder per
source maps it to a shared one-channel content map; an injector decoder predicts what one source has beyond that
shared content (its signed *detail* map), and fusion adds the thresholded detail to the other source's luma::

    F_Y = Y_A + tau(d_B),   tau(d) = d * 1[d >= t],   d_B = D_B(B, Y_A)

``D_B`` injects B's detail into A (the default direction, as the reference trains it); ``D_A`` does the reverse.
Both detail maps are returned as the "modality contribution" maps.

Only the decoders run at fusion time. Their receptive-field radius is :data:`DECODER_RADIUS` pixels, so an image can
be fused in tiles with a halo of that radius and stitched back, provided every tile uses the same BatchNorm
statistics (see :class:`NormStats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maugif_core.config import AdditiveConfig
from maugif_core.decision import decide, decision_radius
from maugif_core.imaging import (
    check_image,
    check_same_size,
    from_unit_float,
    is_grey,
    rgb_to_ycbcr,
    saturation_weighted_chroma,
    to_unit_float,
    ycbcr_to_rgb,
)
from maugif_core.losses import norm_loss, sobel_max_gradient_loss

__all__ = [
    "DECODER_RADIUS",
    "ENCODER_RADIUS",
    "AdditiveMAUGIF",
    "ContentEncoder",
    "FusionResult",
    "InjectorDecoder",
    "NormStats",
    "threshold_detail",
]

ENCODER_RADIUS = 5 + 4  # 11x11 then 9x9
DECODER_RADIUS = 1 + 1 + 1  # 3x3 in the first branch, then two 3x3 layers

# Per-image statistics: one (mean, var) pair per BatchNorm layer, each of shape (B, C).
NormStats = list[tuple[torch.Tensor, torch.Tensor]]


def threshold_detail(detail: torch.Tensor, threshold: float) -> torch.Tensor:
    """``tau(d) = d * 1[d >= t]``: keep detail at or above the threshold, zero elsewhere.

    Args:
        detail: signed detail map, any shape.
        threshold: t, in unit-float luma.
    """
    return detail * (detail >= threshold).to(detail.dtype)


class ContentEncoder(nn.Module):
    """Content encoder E: conv 11x11 1→c + ReLU, concat with the input, conv 9x9 (1+c)→1 + ReLU.

    Shapes: ``(B, 1, H, W)`` → ``(B, 1, H, W)``. 691 parameters at the reference width c = 3.
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, kernel_size=11, padding=5)
        self.conv2 = nn.Conv2d(1 + channels, 1, kernel_size=9, padding=4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.conv1(image))
        return F.relu(self.conv2(torch.cat([image, features], dim=1)))


class _Norm(nn.BatchNorm2d):
    """BatchNorm with a per-image inference mode and freezable statistics.

    * training: ordinary BatchNorm over the (worker-local) batch, updating the running statistics;
    * ``mode == "running"`` at inference: the running statistics (``eval()`` BatchNorm);
    * ``mode == "per_image"`` at inference: each image normalised with its own per-channel spatial statistics
      (what the reference computes at batch size 1), or with statistics handed in (``frozen``) so that the tiles of
      one image share the statistics of the whole image.
    """

    def normalise(
        self,
        x: torch.Tensor,
        mode: str,
        frozen: tuple[torch.Tensor, torch.Tensor] | None,
        record: NormStats | None,
    ) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        if mode == "running":
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        batch, channels, height, width = x.shape
        # Per-image statistics with the fused BatchNorm kernel: fold the batch into channels, so each
        # (image, channel) plane is normalised on its own. Far faster on CPU than mean/var/affine as separate ops.
        folded = x.reshape(1, batch * channels, height, width)
        weight = self.weight.repeat(batch).to(x.dtype) if self.weight is not None else None
        bias = self.bias.repeat(batch).to(x.dtype) if self.bias is not None else None
        if frozen is None:
            mean = torch.zeros(batch * channels, device=x.device, dtype=torch.float32)
            var = torch.ones(batch * channels, device=x.device, dtype=torch.float32)
            out = F.batch_norm(folded, mean, var, weight, bias, True, 1.0, self.eps)
            # momentum 1.0 leaves the batch statistics in mean/var; var is stored unbiased: undo that.
            n = height * width
            var = var * ((n - 1) / n) if n > 1 else torch.zeros_like(var)
            mean, var = mean.view(batch, channels), var.view(batch, channels)
        else:
            mean, var = frozen
            if mean.shape[0] != batch:
                raise ValueError(f"frozen BatchNorm statistics are for {mean.shape[0]} images, the batch has {batch}")
            out = F.batch_norm(
                folded, mean.reshape(-1).float(), var.reshape(-1).float(), weight, bias, False, 0.0, self.eps
            )
        if record is not None:
            record.append((mean.detach(), var.detach()))
        return out.view(batch, channels, height, width)


class InjectorDecoder(nn.Module):
    """Injector decoder D(source, base) → signed detail map of ``source`` relative to ``base``.

    Layer table (SPEC §1.1), all convs stride 1, same zero padding, with bias::

        x  = concat[source, base]                               (2 ch)
        h  = 1x1 2→16, BN, ReLU; 3x3 16→16, BN, ReLU; 1x1 16→3
        x2 = concat[x, sin(h)]                                  (5 ch)
        d  = 3x3 5→32, BN, ReLU; 3x3 32→1

    Shapes: ``(B, 1, H, W)`` twice → ``(B, 1, H, W)``. 4,308 parameters at the reference widths.
    """

    def __init__(self, width: int = 16, width2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, width, kernel_size=1)
        self.bn1 = _Norm(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.bn2 = _Norm(width)
        self.conv3 = nn.Conv2d(width, 3, kernel_size=1)
        self.conv4 = nn.Conv2d(5, width2, kernel_size=3, padding=1)
        self.bn4 = _Norm(width2)
        self.conv5 = nn.Conv2d(width2, 1, kernel_size=3, padding=1)

    def forward(
        self,
        source: torch.Tensor,
        base: torch.Tensor,
        *,
        bn_mode: str = "per_image",
        norm_stats: NormStats | None = None,
        record: NormStats | None = None,
    ) -> torch.Tensor:
        """Predict the detail map.

        Args:
            source: ``(B, 1, H, W)`` the image whose specific detail is extracted.
            base: ``(B, 1, H, W)`` luma of the image the detail will be added to.
            bn_mode: ``"per_image"`` or ``"running"`` (inference only; training always uses batch statistics).
            norm_stats: frozen per-image statistics for the three BatchNorm layers (per_image mode).
            record: if given, the per-image statistics used are appended to it.
        """
        frozen = norm_stats if norm_stats is not None else [None, None, None]
        x = torch.cat([source, base], dim=1)
        h = F.relu(self.bn1.normalise(self.conv1(x), bn_mode, frozen[0], record))
        h = F.relu(self.bn2.normalise(self.conv2(h), bn_mode, frozen[1], record))
        h = torch.sin(self.conv3(h))
        h = F.relu(self.bn4.normalise(self.conv4(torch.cat([x, h], dim=1)), bn_mode, frozen[2], record))
        return self.conv5(h)


@dataclass(frozen=True)
class FusionResult:
    """Result of :meth:`AdditiveMAUGIF.fuse_with_details`.

    Attributes:
        fused: the fused image in image A's dtype and layout.
        detail_b: ``(H, W)`` float32 signed detail of B relative to A (D_B's output, before thresholding).
        detail_a: ``(H, W)`` float32 signed detail of A relative to B (D_A's output, before thresholding).
    """

    fused: np.ndarray
    detail_b: np.ndarray
    detail_a: np.ndarray


class AdditiveMAUGIF(nn.Module):
    """The additive MAUGIF model: encoders E_A, E_B and injector decoders D_B, D_A.

    ``forward(luma_a, image_b, stage=1|2)`` returns the training losses of that stage (so that a
    ``DistributedDataParallel`` wrapper sees the whole computation); :meth:`fuse` and :meth:`fuse_luma` are the
    inference paths.
    """

    def __init__(self, config: AdditiveConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else AdditiveConfig()
        cfg = self.config
        self.encoder_a = ContentEncoder(cfg.encoder_channels)
        self.encoder_b = ContentEncoder(cfg.encoder_channels)
        self.decoder_b = InjectorDecoder(cfg.decoder_width, cfg.decoder_width2)
        self.decoder_a = InjectorDecoder(cfg.decoder_width, cfg.decoder_width2)

    # ------------------------------------------------------------------ properties
    @property
    def receptive_field_radius(self) -> int:
        """Halo (pixels) a tile needs so that tiled fusion equals whole-image fusion: the decoders' radius plus,
        with a source decision, the decision's (:func:`maugif_core.decision.decision_radius`)."""
        return DECODER_RADIUS + decision_radius(self.config)

    @property
    def mechanism(self) -> str:
        return "additive"

    # ------------------------------------------------------------------ training
    def set_stage(self, stage: int) -> None:
        """Freeze what a stage does not train: stage 1 trains the encoders, stage 2 both decoders."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        for module, trainable in (
            (self.encoder_a, stage == 1),
            (self.encoder_b, stage == 1),
            (self.decoder_a, stage == 2),
            (self.decoder_b, stage == 2),
        ):
            module.requires_grad_(trainable)
            module.train(trainable)

    def forward(self, luma_a: torch.Tensor, image_b: torch.Tensor, stage: int = 1) -> dict[str, torch.Tensor]:
        """Training losses of one stage, as named terms plus ``"loss"`` (their weighted sum).

        Args:
            luma_a: ``(B, 1, H, W)`` Y_A in [0, 1].
            image_b: ``(B, 1, H, W)`` B (luma if B is colour) in [0, 1].
            stage: 1 (encoders) or 2 (decoders, encoders frozen).

        Returns:
            Stage 1: ``shared`` = ||C_B - C||, ``content_b`` = ||C - B||, ``content_a`` = ||C - Y_A||.
            Stage 2: ``recon_b`` = ||C + d_B - B||, ``grad_b`` (Sobel max-gradient of Y_A + tau(d_B)) and the
            mirror terms ``recon_a`` = ||C_B + d_A - Y_A||, ``grad_a`` for D_A. Unweighted terms; ``loss`` weighted.
        """
        cfg = self.config
        if stage == 1:
            content = self.encoder_a(luma_a)
            content_b = self.encoder_b(image_b)
            terms = {
                "shared": norm_loss(content_b, content),
                "content_b": norm_loss(content, image_b),
                "content_a": norm_loss(content, luma_a),
            }
            loss = (
                cfg.loss_w_shared * terms["shared"]
                + cfg.loss_w_b * terms["content_b"]
                + cfg.lambda_y * terms["content_a"]
            )
        elif stage == 2:
            with torch.no_grad():
                content = self.encoder_a(luma_a)
                content_b = self.encoder_b(image_b)
            detail_b = self.decoder_b(image_b, luma_a)
            detail_a = self.decoder_a(luma_a, image_b)
            fused_y = luma_a + threshold_detail(detail_b, cfg.threshold)
            fused_y_rev = image_b + threshold_detail(detail_a, cfg.threshold)
            terms = {
                "recon_b": norm_loss(content + detail_b, image_b),
                "grad_b": sobel_max_gradient_loss(fused_y, luma_a, image_b),
                "recon_a": norm_loss(content_b + detail_a, luma_a),
                "grad_a": sobel_max_gradient_loss(fused_y_rev, luma_a, image_b),
            }
            loss = (
                terms["recon_b"]
                + cfg.loss_w_grad * terms["grad_b"]
                + terms["recon_a"]
                + cfg.loss_w_grad * terms["grad_a"]
            )
        else:
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        terms["loss"] = loss
        return terms

    # ------------------------------------------------------------------ inference (tensors)
    def compute_norm_stats(
        self, luma_a: torch.Tensor, image_b: torch.Tensor, *, max_pixels: int | None = None
    ) -> tuple[NormStats, NormStats]:
        """Per-image BatchNorm statistics of both decoders, for fusing an image tile by tile.

        Args:
            luma_a, image_b: ``(B, 1, H, W)`` whole images in [0, 1].
            max_pixels: if ``H * W`` exceeds it, the statistics are taken from a decimated overview (every k-th
                pixel in both directions, k the smallest integer bringing it under the limit).

        Returns:
            ``(stats_b, stats_a)`` for ``decoder_b`` and ``decoder_a``.
        """
        if max_pixels is not None and luma_a.shape[-2] * luma_a.shape[-1] > max_pixels:
            step = int(np.ceil(np.sqrt(luma_a.shape[-2] * luma_a.shape[-1] / max_pixels)))
            luma_a, image_b = luma_a[..., ::step, ::step], image_b[..., ::step, ::step]
        stats_b: NormStats = []
        stats_a: NormStats = []
        with torch.no_grad():
            self.decoder_b(image_b, luma_a, bn_mode="per_image", record=stats_b)
            self.decoder_a(luma_a, image_b, bn_mode="per_image", record=stats_a)
        return stats_b, stats_a

    def fuse_luma(
        self,
        luma_a: torch.Tensor,
        image_b: torch.Tensor,
        *,
        norm_stats: tuple[NormStats, NormStats] | None = None,
        details: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Fuse luma planes in one forward pass (no gradients, decoders in inference mode).

        Args:
            luma_a, image_b: ``(B, 1, H, W)`` in [0, 1].
            norm_stats: frozen ``(stats_b, stats_a)`` from :meth:`compute_norm_stats` (tiled fusion); ``None``
                normalises each image with its own statistics (per_image mode) or uses running statistics.
            details: also compute the reverse detail map ``detail_a`` (one extra decoder pass).

        Returns:
            ``(fused_y, detail_b, detail_a)``, each ``(B, 1, H, W)``; fused_y is not clamped to [0, 1] (it is
            capped at max(Y_A, B) when ``envelope="max"``). With a source decision (``config.decision``) fused_y
            is composed from the sources by :func:`maugif_core.decision.decide`, the learned fusion kept where
            the decision is uncertain; both detail maps are then always computed. In the ``a_to_b`` direction
            the base is B and the injected detail is ``detail_a``.
        """
        cfg = self.config
        stats_b, stats_a = norm_stats if norm_stats is not None else (None, None)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                decides = cfg.decision != "none"
                need_b = details or decides or cfg.direction == "b_to_a"
                need_a = details or decides or cfg.direction == "a_to_b"
                detail_b = self.decoder_b(image_b, luma_a, bn_mode=cfg.bn_mode, norm_stats=stats_b) if need_b else None
                detail_a = self.decoder_a(luma_a, image_b, bn_mode=cfg.bn_mode, norm_stats=stats_a) if need_a else None
                if cfg.direction == "b_to_a":
                    fused_y = luma_a + threshold_detail(detail_b, cfg.threshold)
                else:
                    fused_y = image_b + threshold_detail(detail_a, cfg.threshold)
                if cfg.envelope == "max":
                    fused_y = torch.minimum(fused_y, torch.maximum(luma_a, image_b))
                if decides:
                    fused_y = decide(luma_a, image_b, detail_b, detail_a, fused_y, cfg).fused_y
        finally:
            self.train(was_training)
        return fused_y, detail_b, detail_a

    # ------------------------------------------------------------------ inference (NumPy)
    def fuse(self, image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
        """Fuse two co-registered images; the result has image A's dtype and layout.

        Args:
            image_a: ``(H, W)`` or ``(H, W, C)`` uint8 / uint16 / float32 in [0, 1]: the base image (C in 1, 3, 4:
                grey, RGB, RGBA; any other C: a band stack, see :func:`compose_colour`).
            image_b: same height and width: the source whose detail is injected.
        """
        return self.fuse_with_details(image_a, image_b, details=False).fused

    def fuse_with_details(self, image_a: np.ndarray, image_b: np.ndarray, *, details: bool = True) -> FusionResult:
        """Like :meth:`fuse`, also returning both detail ("modality contribution") maps."""
        prepared = prepare_pair(image_a, image_b)
        device = next(self.parameters()).device
        luma_a = torch.from_numpy(prepared.luma_a)[None, None].to(device)
        luma_b = torch.from_numpy(prepared.luma_b)[None, None].to(device)
        fused_y, detail_b, detail_a = self.fuse_luma(luma_a, luma_b, details=details)
        fused = compose_colour(fused_y[0, 0].float().cpu().numpy(), prepared, self.config.chroma)
        empty = np.zeros((0, 0), np.float32)
        return FusionResult(
            fused=fused,
            detail_b=detail_b[0, 0].float().cpu().numpy() if detail_b is not None else empty,
            detail_a=detail_a[0, 0].float().cpu().numpy() if detail_a is not None else empty,
        )


@dataclass(frozen=True)
class PreparedPair:
    """Two validated sources split into luma and chroma (unit float), plus what is needed to rebuild colour."""

    luma_a: np.ndarray  # (H, W) float32
    luma_b: np.ndarray  # (H, W) float32
    chroma_a: np.ndarray | None  # (H, W, 2) float32, None when A is grey
    chroma_b: np.ndarray | None  # (H, W, 2) float32, None when B is grey
    alpha_a: np.ndarray | None  # (H, W) float32 alpha of A, kept as is
    dtype: np.dtype
    shape: tuple[int, ...]
    bands_a: np.ndarray | None = None  # (H, W, C) float32 bands of an N-band A (C not 1, 3 or 4), else None


def is_multiband(image: np.ndarray) -> bool:
    """True for ``(H, W, C)`` images whose C is not 1 (grey), 3 (RGB) or 4 (RGBA): spectral band stacks."""
    return image.ndim == 3 and image.shape[2] not in (1, 3, 4)


def _split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    unit = to_unit_float(image)
    if unit.ndim == 2:
        return unit, None, None
    if is_multiband(unit):  # N bands: the intensity is their mean (see compose_colour)
        return np.ascontiguousarray(unit.mean(axis=2, dtype=np.float32)), None, None
    alpha = unit[..., 3] if unit.shape[2] == 4 else None
    if unit.shape[2] == 1 or is_grey(unit):
        return np.ascontiguousarray(unit[..., 0]), None, alpha
    ycc = rgb_to_ycbcr(unit[..., :3])
    return np.ascontiguousarray(ycc[..., 0]), np.ascontiguousarray(ycc[..., 1:]), alpha


def prepare_pair(image_a: np.ndarray, image_b: np.ndarray) -> PreparedPair:
    """Validate a pair and split both images into luma / chroma / alpha (see :func:`compose_colour`).

    Images with 1, 3 (RGB) or 4 (RGBA) channels give BT.601 luma (or the grey channel); any other channel count
    is a band stack whose intensity is the mean of its bands.
    """
    check_image(image_a, "image_a", allow_bands=True)
    check_image(image_b, "image_b", allow_bands=True)
    check_same_size(image_a, image_b)
    luma_a, chroma_a, alpha_a = _split(image_a)
    luma_b, chroma_b, _ = _split(image_b)
    bands_a = to_unit_float(image_a) if is_multiband(image_a) else None
    return PreparedPair(luma_a, luma_b, chroma_a, chroma_b, alpha_a, image_a.dtype, image_a.shape, bands_a)


def compose_colour(fused_y: np.ndarray, prepared: PreparedPair, chroma_rule: str) -> np.ndarray:
    """Rebuild the output image in A's dtype and layout from the fused luma.

    Chroma: ``from_a`` takes A's chroma (a grey A gives a grey result); ``saturation_weighted`` blends both
    sources' chroma by saturation. The result keeps A's layout: a 2-D A gives a 2-D result, a grey A stored as
    three equal channels gives three equal channels unless the chroma rule brings colour from B, and A's alpha
    channel is carried over unchanged.

    N bands (A with a channel count other than 1, 3 or 4): the change the fusion made to the intensity (the mean of
    A's bands) is added to every band, ``F_k = A_k + (F_Y - mean_k A_k)``, clamped to [0, 1]. This is the
    colour rule generalised (with BT.601 YCbCr, replacing Y while keeping Cb and Cr adds the same change to R, G
    and B): the differences between A's bands are kept exactly. The chroma rule does not apply to band stacks.
    """
    luma = np.clip(fused_y, 0.0, 1.0).astype(np.float32)
    shape = prepared.shape
    if len(shape) == 2:
        return from_unit_float(luma, prepared.dtype)
    if prepared.bands_a is not None:
        change = (luma - prepared.luma_a)[..., None]
        return from_unit_float(prepared.bands_a + change, prepared.dtype)
    if chroma_rule == "saturation_weighted" and (prepared.chroma_a is not None or prepared.chroma_b is not None):
        neutral = np.full(luma.shape + (2,), 0.5, np.float32)
        cbcr = saturation_weighted_chroma(
            prepared.chroma_a if prepared.chroma_a is not None else neutral,
            prepared.chroma_b if prepared.chroma_b is not None else neutral,
        )
    else:
        cbcr = prepared.chroma_a
    channels = shape[2]
    if channels == 1:
        out = luma[..., None]
    elif cbcr is None:
        out = np.repeat(luma[..., None], 3, axis=2)
    else:
        out = ycbcr_to_rgb(np.concatenate([luma[..., None], cbcr], axis=2))
    if channels == 4:
        alpha = prepared.alpha_a if prepared.alpha_a is not None else np.ones_like(luma)
        out = np.concatenate([out, alpha[..., None]], axis=2)
    return from_unit_float(out, prepared.dtype)
