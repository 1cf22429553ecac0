"""The bundled pretrained checkpoints (``maugif_core/pretrained/*.safetensors``)."""

from __future__ import annotations

from importlib import resources

import torch

from maugif_core.checkpoint import load_checkpoint
from maugif_core.errors import CheckpointError, UnknownTaskError

__all__ = ["pretrained", "pretrained_tasks"]


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
    available = pretrained_tasks()
    if task not in available:
        raise UnknownTaskError(f"no pretrained checkpoint for task {task!r}; bundled: {', '.join(available) or 'none'}")
    data = (resources.files("maugif_core") / "pretrained" / f"{task}.safetensors").read_bytes()
    try:
        return load_checkpoint(data, expect_task=task)
    except CheckpointError as e:
        raise CheckpointError(f"bundled checkpoint for {task!r} is broken: {e}") from e
