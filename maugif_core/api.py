"""Model construction: task presets and configs → modules."""

from __future__ import annotations

import torch

from maugif_core.config import AdditiveConfig, ModelConfig, MultiplicativeConfig, preset

__all__ = ["build_model", "build_model_from_config"]


def build_model_from_config(config: ModelConfig) -> torch.nn.Module:
    """Build an untrained model from a validated config."""
    if isinstance(config, AdditiveConfig):
        from maugif_core.additive import AdditiveMAUGIF

        return AdditiveMAUGIF(config)
    if isinstance(config, MultiplicativeConfig):
        from maugif_core.multiplicative import MultiplicativeMAUGIF

        return MultiplicativeMAUGIF(config)
    raise TypeError(f"expected an AdditiveConfig or MultiplicativeConfig, got {type(config).__name__}")


def build_model(task: str, **overrides) -> torch.nn.Module:
    """Build an untrained model for a task preset (``vif``, ``medical``, ``mff``, ``mef``, ``general``,
    ``hsi_msi``, ``pansharpen``), with config fields overridden by keyword.

    Raises:
        UnknownTaskError: unknown task.
        pydantic.ValidationError: an override that is not a config field or has a bad value.
    """
    return build_model_from_config(preset(task, **overrides))
