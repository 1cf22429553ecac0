"""One checkpoint format for every MAUGIF model: a single safetensors file.

Layout: the tensors of ``model.state_dict()``, and in the safetensors header metadata (strings only):
``format`` = ``"maugif"``, ``format_version``, ``config`` = the model config as JSON. Nothing is ever unpickled:
``torch.save`` payloads (zip or legacy pickle) are recognised and refused.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from pydantic import TypeAdapter, ValidationError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from maugif_core.api import build_model_from_config
from maugif_core.config import ModelConfig
from maugif_core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FILENAME",
    "FORMAT_VERSION",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]

FORMAT_NAME = "maugif"
FORMAT_VERSION = "1"
CHECKPOINT_FILENAME = "model.safetensors"
_MAX_HEADER = 16 * 1024 * 1024
_CONFIG_ADAPTER = TypeAdapter(ModelConfig)


def _checkpoint_bytes(model: torch.nn.Module) -> bytes:
    config = getattr(model, "config", None)
    if config is None:
        raise CheckpointError(f"{type(model).__name__} has no .config; only MAUGIF models can be saved")
    exporter = getattr(model, "fitted_config", None)
    if callable(exporter):
        config = exporter()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.model_dump_json()}
    return save_safetensors_bytes(state, metadata=metadata)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (a temp file then rename).

    Args:
        model: an additive or multiplicative MAUGIF model.
        path: a ``.safetensors`` file path, or a folder (the file is then ``<folder>/model.safetensors``).

    Returns:
        The path of the file written.
    """
    target = Path(path)
    if target.suffix != ".safetensors":
        target = target / CHECKPOINT_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(_checkpoint_bytes(model))
    os.replace(tmp, target)
    return target


def _read_source(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    path = Path(source)
    if path.is_dir():
        path = path / CHECKPOINT_FILENAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(source)!r}: no such file (expected a .safetensors file or folder)")
    return path.read_bytes(), str(path)


def _header(data: bytes, name: str) -> dict:
    if data[:2] == b"PK" or data[:1] == b"\x80":
        raise CheckpointError(
            f"checkpoint {name}: a pickled torch.save payload; refusing to unpickle it "
            "(expected a MAUGIF safetensors checkpoint written by save_checkpoint)"
        )
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {name}: {len(data)} bytes, too short for a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > _MAX_HEADER or 8 + size > len(data):
        raise CheckpointError(f"checkpoint {name}: not a safetensors file (header length {size} is invalid)")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {name}: not a safetensors file (header is not JSON)") from e
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"checkpoint {name}: safetensors file without MAUGIF metadata (format={meta.get('format')!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {name}: format version {meta.get('format_version')!r}, this library reads {FORMAT_VERSION!r}"
        )
    return meta


def read_checkpoint_config(source: str | os.PathLike | bytes) -> ModelConfig:
    """Return the model config stored in a checkpoint without building the model."""
    data, name = _read_source(source)
    meta = _header(data, name)
    try:
        return _CONFIG_ADAPTER.validate_json(meta.get("config", ""))
    except ValidationError as e:
        raise CheckpointError(f"checkpoint {name}: stored config is invalid: {e}") from e


def load_checkpoint(source: str | os.PathLike | bytes, *, expect_task: str | None = None) -> torch.nn.Module:
    """Build a model from a checkpoint file, folder, or the checkpoint's bytes.

    Args:
        source: path to a ``.safetensors`` file, a folder holding ``model.safetensors``, or the file's bytes.
        expect_task: if given, the checkpoint's task must be this one.

    Raises:
        CheckpointError: a pickled payload, a file that is not a MAUGIF checkpoint, an unknown format version, a
            config that does not validate, a task other than ``expect_task``, or weights that do not fit the config.
    """
    data, name = _read_source(source)
    meta = _header(data, name)
    try:
        config = _CONFIG_ADAPTER.validate_json(meta.get("config", ""))
    except ValidationError as e:
        raise CheckpointError(f"checkpoint {name}: stored config is invalid: {e}") from e
    if expect_task is not None and config.task != expect_task:
        raise CheckpointError(f"checkpoint {name}: holds a {config.task!r} model, expected {expect_task!r}")
    model = build_model_from_config(config)
    try:
        state = load_safetensors_bytes(data)
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError) on a truncated payload
        raise CheckpointError(
            f"checkpoint {name}: the weights cannot be read ({e}); expected a complete .safetensors file "
            "(truncated or corrupted download?)"
        ) from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {name}: weights do not match the stored config: {e}") from e
    model.eval()
    return model
