"""Fitting many scenes at once on one device (SPEC §1.2: "many scenes fitted at once")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maugif_core.config import MultiplicativeConfig
from maugif_core.errors import MaugifError
from maugif_core.multiplicative.fitting import fit_stacked
from maugif_core.multiplicative.model import MultiplicativeMAUGIF, to_chw
from maugif_core.multiplicative.networks import ConvMode, init_stacked_parameters

__all__ = ["fit_many"]

# Config fields that must agree between scenes fitted together (everything that shapes the optimisation).
_SHARED_FIT_FIELDS = (
    "rank",
    "ratio",
    "decimation",
    "decimation_offset",
    "steps",
    "lr",
    "weight_decay",
    "early_stop_patience",
    "early_stop_rel_tol",
    "loss_w_recon",
    "bands_low",
    "bands_high",
)


def _resolve_configs(
    config_or_model: MultiplicativeConfig | MultiplicativeMAUGIF | Sequence[MultiplicativeConfig], count: int
) -> list[MultiplicativeConfig]:
    if isinstance(config_or_model, MultiplicativeMAUGIF):
        return [config_or_model.config] * count
    if isinstance(config_or_model, MultiplicativeConfig):
        return [config_or_model] * count
    configs = list(config_or_model)
    if len(configs) != count:
        raise ValueError(f"configs: expected one config per scene ({count}), got {len(configs)}")
    for i, cfg in enumerate(configs):
        for field in _SHARED_FIT_FIELDS:
            if getattr(cfg, field) != getattr(configs[0], field):
                raise ValueError(
                    f"configs[{i}].{field}: scenes fitted together must share it, expected "
                    f"{getattr(configs[0], field)!r} (configs[0]), got {getattr(cfg, field)!r}"
                )
    return configs


def fit_many(
    config_or_model: MultiplicativeConfig | MultiplicativeMAUGIF | Sequence[MultiplicativeConfig],
    scenes: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    conv_mode: ConvMode | None = None,
    registration: tuple[float, float] | Sequence[tuple[float, float] | None] | None = None,
) -> list[MultiplicativeMAUGIF]:
    """Fit one model per scene, optimising scenes of the same shape together on one device.

    Each model also gets its scene's injection gains G (:meth:`MultiplicativeMAUGIF.calibrate_injection`).
    Scenes are grouped by shape (``image_a`` and ``image_b`` sizes and band counts); each group — split into
    chunks of at most ``max_batch`` scenes — is fitted as one stacked optimisation in which every scene keeps
    its own weights, its own gradient and Adam state, and its own early stopping. The result equals fitting
    each scene alone with :meth:`MultiplicativeMAUGIF.fit`: bit for bit with ``conv_mode="loop"``, up to float
    rounding with ``"grouped"``.

    Args:
        config_or_model: one config (or a model, whose config is used) for every scene, or one config per
            scene; per-scene configs may differ only in ``seed`` and ``task``.
        scenes: ``(image_a, image_b)`` NumPy pairs as accepted by :meth:`MultiplicativeMAUGIF.fit`.
        device: where to fit; default CPU, or the model's device when a model is given.
        max_batch: most scenes in one stacked optimisation (memory bound); None = no limit.
        conv_mode: ``"grouped"`` (one grouped convolution per layer for all scenes) or ``"loop"`` (scene by
            scene inside the shared step); None = grouped on CUDA, loop on CPU (measured faster there).
        registration: the registration of H on M as :meth:`MultiplicativeMAUGIF.fit` takes it: one ``(dy, dx)``
            for every scene, or one per scene (``None`` entries: estimated for that scene); None = estimated
            for every scene.

    Returns:
        Fitted models, in the order of ``scenes``, each with its ``fit_report``.
    """
    configs = _resolve_configs(config_or_model, len(scenes))
    registrations = _resolve_registrations(registration, len(scenes))
    if device is None:
        device = config_or_model.basis.device if isinstance(config_or_model, MultiplicativeMAUGIF) else "cpu"
    models = [MultiplicativeMAUGIF(cfg).to(device) for cfg in configs]
    groups: dict[tuple, list[int]] = {}
    ratios: list[int] = []
    for i, ((image_a, image_b), model) in enumerate(zip(scenes, models, strict=True)):
        try:
            _, _, r = model.check_scene(image_a, image_b)
        except MaugifError as e:
            raise type(e)(f"scenes[{i}]: {e}") from e
        ratios.append(r)
        groups.setdefault((image_a.shape, image_b.shape[:2], _band_count(image_b)), []).append(i)
    chunk = max_batch or len(scenes)
    for members in groups.values():
        for start in range(0, len(members), chunk):
            batch = members[start : start + chunk]
            # Scenes are prepared (Φ, Z, M↓) chunk by chunk, so memory scales with max_batch, not len(scenes).
            prepared = [
                models[i].prepare_scene(
                    to_chw(scenes[i][0]).to(device),
                    to_chw(scenes[i][1]).to(device),
                    ratios[i],
                    registration=registrations[i],
                )
                for i in batch
            ]
            K, l = prepared[0][1].shape[0], prepared[0][2].shape[0]
            init = init_stacked_parameters(K, l, [configs[i].seed for i in batch], device)
            coeffs = torch.stack([p[1] for p in prepared])
            target = torch.stack([p[2] for p in prepared])
            weights, reports = fit_stacked(init, coeffs, target, configs[batch[0]], conv_mode)
            for i, (basis, z, _), w, report in zip(batch, prepared, weights, reports, strict=True):
                models[i].install_fit(basis, w, ratios[i], l)
                models[i].calibrate_injection(z, to_chw(scenes[i][1]).to(device))
                models[i].remember_scene(*scenes[i])
                models[i].fit_report = report
    return models


def _resolve_registrations(
    registration: tuple[float, float] | Sequence[tuple[float, float] | None] | None, count: int
) -> list[tuple[float, float] | None]:
    """One registration (or None) per scene from ``fit_many``'s ``registration`` argument."""
    if registration is None:
        return [None] * count
    entries = list(registration)
    if len(entries) == 2 and all(isinstance(v, (int, float, np.floating, np.integer)) for v in entries):
        one = (float(entries[0]), float(entries[1]))
        return [one] * count
    if len(entries) != count:
        raise ValueError(
            f"registration: expected one (dy, dx) for every scene or one per scene ({count}), got {len(entries)} "
            f"entries: {registration!r}"
        )
    out: list[tuple[float, float] | None] = []
    for i, entry in enumerate(entries):
        if entry is None:
            out.append(None)
            continue
        pair = tuple(entry)
        if len(pair) != 2 or not all(isinstance(v, (int, float, np.floating, np.integer)) for v in pair):
            raise ValueError(f"registration[{i}]: expected (dy, dx) numbers or None, got {entry!r}")
        out.append((float(pair[0]), float(pair[1])))
    return out


def _band_count(image: np.ndarray) -> int:
    return image.shape[2] if image.ndim == 3 else 1
