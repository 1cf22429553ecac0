"""Model construction: task presets → modules, and the bundled pretrained checkpoints."""

from __future__ import annotations

from importlib import resources

import torch

from maugif_core.config import AdditiveConfig, ModelConfig, MultiplicativeConfig, preset
from maugif_core.errors import CheckpointError, UnknownTaskError

__all__ = ["build_model", "build_model_from_config", "pretrained", "pretrained_tasks"]


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


def pretrained_tasks() -> tuple[str, ...]:
    """Tasks that have a bundled pretrained checkpoint."""
    folder = resources.files("maugif_core") / "pretrained"
    if not folder.is_dir():
        return ()
    return tuple(
        sorted(p.name.removesuffix(".safetensors") for p in folder.iterdir() if p.name.endswith(".safetensors"))
    )


def pretrained(task: str) -> torch.nn.Module:
    """Load the bundled pretrained model of an additive task (multiplicative models are fitted per scene:
    ``build_model("pansharpen")`` is their starting point).

    Raises:
        UnknownTaskError: no bundled checkpoint for ``task``.
    """
    from maugif_core.checkpoint import load_checkpoint

    available = pretrained_tasks()
    if task not in available:
        raise UnknownTaskError(f"no pretrained checkpoint for task {task!r}; bundled: {', '.join(available) or 'none'}")
    data = (resources.files("maugif_core") / "pretrained" / f"{task}.safetensors").read_bytes()
    try:
        return load_checkpoint(data, expect_task=task)
    except CheckpointError as e:
        raise CheckpointError(f"bundled checkpoint for {task!r} is broken: {e}") from e
