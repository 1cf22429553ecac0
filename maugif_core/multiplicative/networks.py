"""Spectral encoder and decoder of the multiplicative mechanism, and their loss (SPEC §1.2).

Both networks are tiny, fully convolutional stacks (stride 1, "same" zero padding, with bias):

========  =========================  ==========================================
network   layer                      channels
========  =========================  ==========================================
E         conv 11x11 + sin -> x1     K -> l
E         conv 9x9 on [Z, x1] -> x3  K + l -> l
E         conv 7x7 on [Z, x1, x3]    K + 2l -> l
D         conv 1x1 + sin -> x1       l -> K
D         conv 3x3 on [M, x1]        l + K -> K
========  =========================  ==========================================

Besides the ``nn.Module`` forms used for fusion, this module holds a *stacked* functional form that runs S
independent copies of both networks (one per scene) as grouped convolutions, which is what lets
:func:`maugif_core.multiplicative.fit_many` take one optimiser step for many scenes at once.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvMode",
    "DECODER_RECEPTIVE_FIELD_RADIUS",
    "ENCODER_RECEPTIVE_FIELD_RADIUS",
    "MultiplicativeLoss",
    "SpectralDecoder",
    "SpectralEncoder",
    "init_stacked_parameters",
    "layer_shapes",
    "multiplicative_loss",
    "stacked_decoder",
    "stacked_encoder",
]

ENCODER_RECEPTIVE_FIELD_RADIUS = 5 + 4 + 3
"""Receptive-field radius of E, in low-resolution pixels (11x11, 9x9 and 7x7 in sequence)."""

DECODER_RECEPTIVE_FIELD_RADIUS = 1
"""Receptive-field radius of D, in pixels of its input (a 1x1 then a 3x3 convolution)."""


def layer_shapes(rank: int, bands_high: int) -> dict[str, tuple[int, int, int]]:
    """Return ``{parameter prefix: (out_channels, in_channels, kernel)}`` of every convolution.

    Args:
        rank: K, the number of spectral coefficients.
        bands_high: l, the band count of the high-resolution image.
    """
    K, l = rank, bands_high
    return {
        "encoder.conv1": (l, K, 11),
        "encoder.conv2": (l, K + l, 9),
        "encoder.conv3": (l, K + 2 * l, 7),
        "decoder.conv1": (K, l, 1),
        "decoder.conv2": (K, l + K, 3),
    }


class SpectralEncoder(nn.Module):
    """E: spectral coefficients Z ``(B, K, m, n)`` → an l-band image ``(B, l, m, n)`` at low resolution."""

    def __init__(self, rank: int, bands_high: int) -> None:
        super().__init__()
        K, l = rank, bands_high
        self.conv1 = nn.Conv2d(K, l, 11, padding=5)
        self.conv2 = nn.Conv2d(K + l, l, 9, padding=4)
        self.conv3 = nn.Conv2d(K + 2 * l, l, 7, padding=3)

    def forward(self, coeffs: Tensor) -> Tensor:
        """Map ``(B, K, m, n)`` coefficients to a ``(B, l, m, n)`` image."""
        x1 = torch.sin(self.conv1(coeffs))
        x2 = torch.cat([coeffs, x1], dim=1)
        x3 = self.conv2(x2)
        return self.conv3(torch.cat([x2, x3], dim=1))


class SpectralDecoder(nn.Module):
    """D: an l-band image ``(B, l, H, W)`` → spectral coefficients ``(B, K, H, W)``, at any resolution.

    Its receptive-field radius is :data:`DECODER_RECEPTIVE_FIELD_RADIUS` (1 pixel), so a tile fused with a
    halo of one pixel equals the same region of the whole image.
    """

    def __init__(self, rank: int, bands_high: int) -> None:
        super().__init__()
        K, l = rank, bands_high
        self.conv1 = nn.Conv2d(l, K, 1)
        self.conv2 = nn.Conv2d(l + K, K, 3, padding=1)

    def forward(self, image: Tensor) -> Tensor:
        """Map a ``(B, l, H, W)`` image to ``(B, K, H, W)`` coefficients."""
        x1 = torch.sin(self.conv1(image))
        return self.conv2(torch.cat([image, x1], dim=1))


def init_stacked_parameters(
    rank: int, bands_high: int, seeds: list[int], device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """Draw the initial weights of S scenes' networks, one seeded draw per scene, stacked on a leading axis.

    The draw is PyTorch's default ``nn.Conv2d`` initialisation (weights and biases uniform in ±1/√fan_in),
    made with a CPU generator so that a seed gives the same weights on every device.

    Args:
        rank: K.
        bands_high: l.
        seeds: one seed per scene (S = ``len(seeds)``).
        device: where the returned tensors live.

    Returns:
        ``{"encoder.conv1.weight": (S, out, in, k, k), "encoder.conv1.bias": (S, out), ...}``, float32.
    """
    shapes = layer_shapes(rank, bands_high)
    per_scene: list[dict[str, Tensor]] = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        params: dict[str, Tensor] = {}
        for prefix, (c_out, c_in, k) in shapes.items():
            bound = 1.0 / math.sqrt(c_in * k * k)
            params[f"{prefix}.weight"] = (torch.rand(c_out, c_in, k, k, generator=gen) * 2 - 1) * bound
            params[f"{prefix}.bias"] = (torch.rand(c_out, generator=gen) * 2 - 1) * bound
        per_scene.append(params)
    return {name: torch.stack([p[name] for p in per_scene]).to(device) for name in per_scene[0]}


ConvMode = Literal["grouped", "loop"]


def _stacked_conv(x: Tensor, weight: Tensor, bias: Tensor, mode: ConvMode) -> Tensor:
    """S independent convolutions, as one grouped convolution or as a loop of plain ones.

    ``grouped`` launches one kernel per layer for all scenes (what a GPU wants for such small convolutions);
    ``loop`` runs scene by scene, bit-identical to a solo fit (on CPU it is also the faster of the two:
    oneDNN's grouped kernels measured slower than S plain ones, see ``benchmarks/bench_multiplicative.py``).

    Args:
        x: ``(S, C_in, H, W)``, scene s's input in row s.
        weight: ``(S, C_out, C_in, k, k)``.
        bias: ``(S, C_out)``.
        mode: ``"grouped"`` or ``"loop"``.

    Returns:
        ``(S, C_out, H, W)``.
    """
    S, c_in, h, w = x.shape
    c_out, k = weight.shape[1], weight.shape[-1]
    if S == 1:
        return F.conv2d(x, weight[0], bias[0], padding=k // 2)
    if mode == "loop":
        return torch.cat([F.conv2d(x[s : s + 1], weight[s], bias[s], padding=k // 2) for s in range(S)])
    out = F.conv2d(
        x.reshape(1, S * c_in, h, w),
        weight.reshape(S * c_out, c_in, k, k),
        bias.reshape(-1),
        padding=k // 2,
        groups=S,
    )
    return out.reshape(S, c_out, h, w)


def stacked_encoder(params: dict[str, Tensor], coeffs: Tensor, mode: ConvMode = "grouped") -> Tensor:
    """E for S scenes at once: ``(S, K, m, n)`` → ``(S, l, m, n)``, scene s with weights ``params[..][s]``."""
    p = params
    x1 = torch.sin(_stacked_conv(coeffs, p["encoder.conv1.weight"], p["encoder.conv1.bias"], mode))
    x2 = torch.cat([coeffs, x1], dim=1)
    x3 = _stacked_conv(x2, p["encoder.conv2.weight"], p["encoder.conv2.bias"], mode)
    return _stacked_conv(torch.cat([x2, x3], dim=1), p["encoder.conv3.weight"], p["encoder.conv3.bias"], mode)


def stacked_decoder(params: dict[str, Tensor], image: Tensor, mode: ConvMode = "grouped") -> Tensor:
    """D for S scenes at once: ``(S, l, H, W)`` → ``(S, K, H, W)``."""
    p = params
    x1 = torch.sin(_stacked_conv(image, p["decoder.conv1.weight"], p["decoder.conv1.bias"], mode))
    return _stacked_conv(torch.cat([image, x1], dim=1), p["decoder.conv2.weight"], p["decoder.conv2.bias"], mode)


def multiplicative_loss(
    coeffs: Tensor, encoded: Tensor, reconstructed: Tensor, target_low: Tensor, w_recon: float = 0.2
) -> Tensor:
    """Per-scene loss ``w_recon·‖D(E(Z)) − Z‖ + ‖E(Z) − M↓‖``, un-squared Frobenius norms (reference).

    Args:
        coeffs: Z, ``(S, K, m, n)``.
        encoded: E(Z), ``(S, l, m, n)``.
        reconstructed: D(E(Z)), ``(S, K, m, n)``.
        target_low: M↓, ``(S, l, m, n)``, unit-float intensities.
        w_recon: weight of the reconstruction term.

    Returns:
        ``(S,)`` losses, one per scene (each norm is taken over one scene's whole tensor, so summing the
        vector gives every scene exactly the gradient of its own loss).
    """
    S = coeffs.shape[0]
    recon = torch.linalg.vector_norm((reconstructed - coeffs).reshape(S, -1), dim=1)
    match = torch.linalg.vector_norm((encoded - target_low).reshape(S, -1), dim=1)
    return w_recon * recon + match


class MultiplicativeLoss(nn.Module):
    """Module form of :func:`multiplicative_loss`; returns the ``(S,)`` per-scene losses."""

    def __init__(self, w_recon: float = 0.2) -> None:
        super().__init__()
        self.w_recon = w_recon

    def forward(self, coeffs: Tensor, encoded: Tensor, reconstructed: Tensor, target_low: Tensor) -> Tensor:
        """See :func:`multiplicative_loss`."""
        return multiplicative_loss(coeffs, encoded, reconstructed, target_low, self.w_recon)
