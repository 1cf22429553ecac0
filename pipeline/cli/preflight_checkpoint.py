"""Pre-flight check of a checkpoint: it loads safely and was trained for the task it is given for.

Every problem an actor would otherwise hit after all pairs were decoded (a pickle, a file that is not a MAUGIF
safetensors checkpoint, a truncated file, an invalid stored config or unknown task, weights of the wrong shapes,
another task or mechanism) is found here, on the driver, before Ray starts.
"""

from __future__ import annotations

from typing import Any

from pipeline.cli.preflight import PreflightError, check_bucket, is_s3_uri
from pipeline.config.io_config import StorageConfig

__all__ = ["check_checkpoint"]


def _checkpoint_bytes(uri: str, storage: StorageConfig | None) -> tuple[bytes, str]:
    from pipeline.io.storage import get_filesystem

    fs, path = get_filesystem(uri, storage)
    if is_s3_uri(uri):
        check_bucket(fs, uri, "checkpoint")
    candidates = (
        [path] if path.endswith(".safetensors") else [path, f"{path.rstrip('/')}/model.safetensors",
                                                      f"{path.rstrip('/')}/final/model.safetensors"]
    )  # fmt: skip
    for candidate in candidates:
        if fs.isfile(candidate):
            with fs.open(candidate, "rb") as handle:
                return handle.read(), candidate
    raise PreflightError(
        f"checkpoint {uri!r} does not exist: expected a .safetensors file, a folder holding model.safetensors, or a "
        "training output (final/model.safetensors)"
    )


def check_checkpoint(uri: str, task: str, *, allow_task_mismatch: bool = False, storage: Any = None) -> str:
    """The checkpoint loads safely (no pickle; weights fit the stored config) and was trained for ``task``.

    A ``general`` checkpoint fits every additive task. Any other task mismatch is an error unless
    ``allow_task_mismatch``; a mechanism mismatch (additive vs multiplicative) always is.

    Raises:
        PreflightError, CheckpointError: naming the checkpoint and what was expected.
    """
    from maugif_core.checkpoint import load_checkpoint
    from maugif_core.config import ADDITIVE_TASKS
    from maugif_core.errors import CheckpointError

    data, found = _checkpoint_bytes(uri, storage)
    try:
        model = load_checkpoint(data)
    except CheckpointError as e:
        message = str(e).replace("checkpoint <bytes>", f"checkpoint {uri!r}")
        if "expected" not in message:
            message += "; expected a MAUGIF .safetensors checkpoint written by save_checkpoint or jobs/train.py"
        raise PreflightError(message) from e
    except Exception as e:  # safetensors raises its own error for a truncated body (header intact)
        raise PreflightError(
            f"checkpoint {uri!r} cannot be loaded ({type(e).__name__}: {e}): truncated or corrupt? expected a "
            "complete MAUGIF .safetensors checkpoint"
        ) from e
    stored = model.config.task
    kind = "additive" if task in ADDITIVE_TASKS else "multiplicative"
    if model.mechanism != kind:
        raise PreflightError(
            f"checkpoint {uri!r} holds a {model.mechanism} {stored!r} model, but it is given for the {kind} task "
            f"{task!r}: expected a checkpoint trained for {task!r}"
        )
    card = f"{found}: task {stored!r}, {sum(p.numel() for p in model.parameters())} parameters"
    if stored == task or (stored == "general" and task in ADDITIVE_TASKS):
        return card
    if allow_task_mismatch:
        return f"{card}; used for {task!r} although trained for {stored!r} (allowed by allow_task_mismatch)"
    raise PreflightError(
        f"checkpoint {uri!r} was trained for task {stored!r} but is given for task {task!r}: expected a {task!r} "
        f"(or 'general') checkpoint; pass --allow-task-mismatch (allow_task_mismatch=true) to use it anyway"
    )
