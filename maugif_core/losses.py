"""Loss functions of MAUGIF, each as a function and a matching ``nn.Module`` (Kornia style).

Norms follow the reference: ``||x||`` is the un-squared Frobenius norm of the whole (worker-local) batch, so the
loss scale grows with batch size and crop size exactly as the reference's does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NormLoss",
    "SobelMaxGradientLoss",
    "norm_loss",
    "sobel_magnitude",
    "sobel_max_gradient_loss",
]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.t().contiguous()


def norm_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||prediction - target||``: un-squared Frobenius norm over every element of the batch."""
    return torch.linalg.vector_norm((prediction - target).flatten())


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``S(x) = |Sobel_x * x| + |Sobel_y * x|`` with zero padding 1.

    Args:
        image: ``(B, 1, H, W)``.

    Returns:
        ``(B, 1, H, W)``, same dtype and device.
    """
    kernel = torch.stack([_SOBEL_X, _SOBEL_Y])[:, None].to(device=image.device, dtype=image.dtype)
    grad = F.conv2d(image, kernel, padding=1)
    return grad.abs().sum(dim=1, keepdim=True)


def sobel_max_gradient_loss(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """``mean |S(F) - max(S(A), S(B))|``: the fused gradient should follow the stronger source gradient.

    Args:
        fused, image_a, image_b: ``(B, 1, H, W)`` luma planes.
    """
    target = torch.maximum(sobel_magnitude(image_a), sobel_magnitude(image_b))
    return (sobel_magnitude(fused) - target).abs().mean()


class NormLoss(nn.Module):
    """Module form of :func:`norm_loss`."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return norm_loss(prediction, target)


class SobelMaxGradientLoss(nn.Module):
    """Module form of :func:`sobel_max_gradient_loss`."""

    def forward(self, fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        return sobel_max_gradient_loss(fused, image_a, image_b)
