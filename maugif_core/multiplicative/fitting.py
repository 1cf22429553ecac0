"""Per-scene fitting of the spectral encoder/decoder, for one scene or many scenes in one optimisation.

S scenes of the same shape are fitted together: their weights are stacked on a leading axis, both networks run
as grouped convolutions (:mod:`maugif_core.multiplicative.networks`), and the loss is the *sum* of the
per-scene losses, so each scene's weights receive exactly the gradient of its own loss and Adam — element-wise
— updates them exactly as a solo fit would. A scene whose loss plateaus is dropped from the stack (with its
Adam state) and the others go on. One scene (S = 1) is the same code path with plain convolutions.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from maugif_core.config import MultiplicativeConfig
from maugif_core.multiplicative.networks import (
    ConvMode,
    multiplicative_loss,
    stacked_decoder,
    stacked_encoder,
)

__all__ = ["HISTORY_POINTS", "STOP_CHECK_EVERY", "FitReport", "default_conv_mode", "fit_stacked"]

logger = logging.getLogger(__name__)

STOP_CHECK_EVERY = 25
"""Steps between early-stopping checks. Losses stay on the device in between (no host sync per step on GPUs),
so a fit may run up to this many steps past the point where the plateau criterion is first met."""

HISTORY_POINTS = 200
"""About how many points of the loss curve a :class:`FitReport` keeps."""


@dataclass(frozen=True)
class FitReport:
    """What one per-scene fit did.

    Attributes:
        steps: optimisation steps run.
        final_loss: loss at the last step (evaluated before that step's update).
        loss_history: the loss every ``history_stride`` steps (steps 0, stride, 2·stride, ...), plus the last
            one.
        history_stride: steps between entries of ``loss_history``.
        seconds: wall-clock seconds of the optimisation; for scenes fitted together by ``fit_many`` this is
            the time of the whole group (the scenes share it).
        stopped_early: the loss plateaued before ``config.steps``.
        scenes_in_batch: how many scenes were optimised together (1 for a solo fit).
    """

    steps: int
    final_loss: float
    loss_history: tuple[float, ...]
    history_stride: int
    seconds: float
    stopped_early: bool
    scenes_in_batch: int = 1


class _PlateauTracker:
    """Early stopping on one scene's loss: stop after ``patience`` steps without a relative improvement."""

    def __init__(self, patience: int, rel_tol: float, history_stride: int) -> None:
        self.patience = patience
        self.rel_tol = rel_tol
        self.stride = history_stride
        self.best = math.inf
        self.since_best = 0
        self.steps = 0
        self.last = math.nan
        self.history: list[float] = []

    def update(self, loss: float) -> bool:
        """Record the loss of the next step; return True when the plateau criterion is met."""
        if self.steps % self.stride == 0:
            self.history.append(loss)
        self.steps += 1
        self.last = loss
        if loss < self.best * (1.0 - self.rel_tol):
            self.best = loss
            self.since_best = 0
        else:
            self.since_best += 1
        return self.patience > 0 and self.since_best >= self.patience

    def report(self, seconds: float, stopped_early: bool, scenes: int) -> FitReport:
        history = list(self.history)
        if (self.steps - 1) % self.stride != 0:
            history.append(self.last)
        return FitReport(
            steps=self.steps,
            final_loss=float(self.last),
            loss_history=tuple(float(v) for v in history),
            history_stride=self.stride,
            seconds=seconds,
            stopped_early=stopped_early,
            scenes_in_batch=scenes,
        )


def default_conv_mode(device: torch.device) -> ConvMode:
    """``grouped`` on CUDA (one kernel launch per layer for all scenes), else ``loop`` (faster on CPU)."""
    return "grouped" if device.type == "cuda" else "loop"


def _rebuild_optimizer(
    params: list[Tensor], optimizer: torch.optim.Adam, keep: Tensor, config: MultiplicativeConfig
) -> tuple[list[Tensor], torch.optim.Adam]:
    """Drop stopped scenes (rows not in ``keep``) from the stacked parameters and from Adam's state."""
    new_params = [p.detach()[keep].clone().requires_grad_(True) for p in params]
    new_opt = torch.optim.Adam(new_params, lr=config.lr, weight_decay=config.weight_decay)
    for old, new in zip(params, new_params, strict=True):
        state = optimizer.state.get(old)
        if state:
            new_opt.state[new] = {
                key: (value.clone() if key == "step" else value[keep].clone()) for key, value in state.items()
            }
    return new_params, new_opt


def fit_stacked(
    init_params: dict[str, Tensor],
    coeffs: Tensor,
    target_low: Tensor,
    config: MultiplicativeConfig,
    conv_mode: ConvMode | None = None,
) -> tuple[list[dict[str, Tensor]], list[FitReport]]:
    """Fit S scenes' encoder/decoder pairs in one optimisation.

    Args:
        init_params: initial weights, ``{name: (S, ...)}`` (see :func:`init_stacked_parameters`), on the
            device to fit on.
        coeffs: Z of every scene, ``(S, K, m, n)``, same device.
        target_low: M↓ of every scene, ``(S, l, m, n)``, same device.
        config: training settings (steps, lr, weight_decay, loss_w_recon, early stopping); shared by all
            scenes.
        conv_mode: how the S scenes' convolutions run (see :func:`default_conv_mode`); None = that default.

    Returns:
        Per scene, its fitted weights ``{name: tensor without the S axis}`` (detached) and its
        :class:`FitReport`.
    """
    S = coeffs.shape[0]
    mode = conv_mode or default_conv_mode(coeffs.device)
    names = list(init_params)
    params = [init_params[n].detach().clone().requires_grad_(True) for n in names]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    stride = max(1, math.ceil(config.steps / HISTORY_POINTS))
    trackers = [_PlateauTracker(config.early_stop_patience, config.early_stop_rel_tol, stride) for _ in range(S)]
    results: list[dict[str, Tensor] | None] = [None] * S
    stopped = [False] * S
    active = list(range(S))  # scene index of each row of the stack
    z, target = coeffs, target_low
    pending: list[Tensor] = []
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        stack = dict(zip(names, params, strict=True))
        encoded = stacked_encoder(stack, z, mode)
        reconstructed = stacked_decoder(stack, encoded, mode)
        losses = multiplicative_loss(z, encoded, reconstructed, target, config.loss_w_recon)
        losses.sum().backward()
        optimizer.step()
        pending.append(losses.detach())
        if step % STOP_CHECK_EVERY and step != config.steps:
            continue
        values = torch.stack(pending).cpu().numpy()  # (steps since last check, rows)
        pending = []
        done_rows = []
        for row, scene in enumerate(active):
            hit = [trackers[scene].update(float(v)) for v in values[:, row]]
            finite = bool(np.isfinite(values[:, row]).all())
            if not finite:
                logger.warning("scene %d: non-finite loss at step %d; stopping its fit", scene, step)
            if any(hit) or not finite:
                stopped[scene] = step < config.steps
                done_rows.append(row)
        if step == config.steps:
            done_rows = list(range(len(active)))
        for row in done_rows:
            results[active[row]] = {n: p.detach()[row].clone() for n, p in zip(names, params, strict=True)}
        if done_rows and step < config.steps:
            keep_rows = [r for r in range(len(active)) if r not in done_rows]
            if not keep_rows:
                break
            keep = torch.tensor(keep_rows, device=z.device)
            params, optimizer = _rebuild_optimizer(params, optimizer, keep, config)
            z, target = z[keep], target[keep]
            active = [active[r] for r in keep_rows]
            logger.debug("step %d: %d scene(s) stopped, %d still fitting", step, len(done_rows), len(active))
    seconds = time.perf_counter() - start
    reports = [t.report(seconds, stopped[i], S) for i, t in enumerate(trackers)]
    return [r for r in results if r is not None], reports
