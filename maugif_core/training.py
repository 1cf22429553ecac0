"""Training building blocks usable by any loop (the Ray Train loop in ``pipeline`` uses these).

* :func:`joint_random_resized_crop` — the same random-resized crop and horizontal flip applied to both images;
* :func:`train_step` — one optimisation step of a stage, returning its named loss terms as floats;
* :func:`make_optimizer` — Adam as in the reference (lr 5e-4, weight decay 1e-8) over what a stage trains.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["joint_random_resized_crop", "make_optimizer", "train_step"]


def _crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """Sample (top, left, h, w) like torchvision's RandomResizedCrop (10 tries, then a centre crop)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(3, generator=generator).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def joint_random_resized_crop(
    image_a: torch.Tensor,
    image_b: torch.Tensor,
    size: int,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random-resized crop (bilinear resize to ``size``) and one horizontal flip to both images.

    Args:
        image_a, image_b: ``(C, H, W)`` float tensors of the same H and W (channel counts may differ).
        size: output side length (square crop).
        generator: seeded generator; the same seed gives the same crops.

    Returns:
        The two crops, ``(C, size, size)`` each.
    """
    if image_a.shape[-2:] != image_b.shape[-2:]:
        raise ValueError(f"image_a and image_b differ in size: {tuple(image_a.shape)} vs {tuple(image_b.shape)}")
    top, left, h, w = _crop_box(image_a.shape[-2], image_a.shape[-1], scale, ratio, generator)
    flip = bool(torch.rand(1, generator=generator).item() < flip_p)
    out = []
    for image in (image_a, image_b):
        crop = image[None, :, top : top + h, left : left + w]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]
        out.append(crop.flip(-1) if flip else crop)
    return out[0], out[1]


def make_optimizer(model: nn.Module, lr: float = 5e-4, weight_decay: float = 1e-8) -> torch.optim.Optimizer:
    """Adam over the parameters that currently require gradients (call after ``set_stage``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: call model.set_stage(1 or 2) first")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    luma_a: torch.Tensor,
    image_b: torch.Tensor,
    stage: int,
    *,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One optimisation step of ``stage`` on a batch; works with the model itself or a DDP wrapper of it.

    Args:
        model: an :class:`~maugif_core.additive.AdditiveMAUGIF` (or ``DistributedDataParallel`` around one) whose
            ``set_stage(stage)`` has been called.
        optimizer: built by :func:`make_optimizer` after ``set_stage``.
        luma_a, image_b: ``(B, 1, H, W)`` in [0, 1].
        stage: 1 or 2.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the forward pass under autocast on GPU.
        scaler: a ``GradScaler`` for float16 autocast.

    Returns:
        The named loss terms of the step, as Python floats (``"loss"`` is the optimised total).
    """
    optimizer.zero_grad(set_to_none=True)
    device_type = luma_a.device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        terms = model(luma_a, image_b, stage=stage)
    loss = terms["loss"].float()
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}
