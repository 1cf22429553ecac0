"""MAUGIF: mechanism-aware unsupervised image fusion with dual cross-image autoencoders (pure PyTorch + NumPy).

Public API::

    model = maugif_core.build_model("vif")            # or maugif_core.pretrained("vif")
    fused = model.fuse(image_a, image_b)              # NumPy in, NumPy out (A's dtype and layout)
    maugif_core.save_checkpoint(model, "ckpt/")       # safetensors + config JSON + format version
    model = maugif_core.load_checkpoint("ckpt/")
    maugif_core.metrics.evaluate(fused, image_a, image_b)
    maugif_core.baselines.fuse("laplacian", image_a, image_b)

This package never imports Ray, rasterio or fsspec.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from maugif_core.api import build_model, build_model_from_config
from maugif_core.bundled import pretrained, pretrained_tasks
from maugif_core.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from maugif_core.config import (
    ADDITIVE_TASKS,
    MULTIPLICATIVE_TASKS,
    TASKS,
    AdditiveConfig,
    MultiplicativeConfig,
    preset,
)
from maugif_core.errors import (
    BandCountError,
    CheckpointError,
    DTypeError,
    MaugifError,
    NonFiniteError,
    RatioError,
    ShapeError,
    UnknownMethodError,
    UnknownTaskError,
)

if TYPE_CHECKING:
    from maugif_core import baselines, metrics

__version__ = "0.1.0"

__all__ = [
    "ADDITIVE_TASKS",
    "MULTIPLICATIVE_TASKS",
    "TASKS",
    "AdditiveConfig",
    "BandCountError",
    "CheckpointError",
    "DTypeError",
    "MaugifError",
    "MultiplicativeConfig",
    "NonFiniteError",
    "RatioError",
    "ShapeError",
    "UnknownMethodError",
    "UnknownTaskError",
    "baselines",
    "build_model",
    "build_model_from_config",
    "load_checkpoint",
    "metrics",
    "preset",
    "pretrained",
    "pretrained_tasks",
    "read_checkpoint_config",
    "save_checkpoint",
]

_LAZY_SUBMODULES = ("metrics", "baselines")


def __getattr__(name: str):
    # metrics and baselines pull in SciPy / PyWavelets: import them on first use, still as package attributes.
    if name in _LAZY_SUBMODULES:
        module = import_module(f"maugif_core.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'maugif_core' has no attribute {name!r}")
