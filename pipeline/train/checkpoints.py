"""Training checkpoints and metrics: the files of a checkpoint folder, its score, and the metric history."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.io_config import StorageConfig
from pipeline.config.loading import config_to_yaml
from pipeline.config.train_config import TrainJobConfig

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "TrainState",
    "checkpoint_score",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
TRACE_DIR = "trace"
SCORE = "score"
_FIXED_COLUMNS = (
    "global_epoch",
    "stage",
    "epoch",
    "loss",
    "samples",
    "steps",
    "seconds",
    "samples_per_s",
    SCORE,
)
_TERM_COLUMNS = ("shared", "content_b", "content_a", "recon_b", "grad_b", "recon_a", "grad_a")


def checkpoint_score(stage: int, loss: float) -> float:
    """Score Ray Train ranks checkpoints by (higher is better): ``stage - loss / (1 + loss)``.

    Stage-1 and stage-2 losses measure different things, so they are never compared: every stage-2 checkpoint
    (score in (1, 2]) outranks every stage-1 one (score in (0, 1]); within a stage a lower loss scores higher.
    "Best" is therefore the best epoch of the latest stage reached.
    """
    if not math.isfinite(loss) or loss < 0:
        return float(stage - 1)
    return float(stage) - loss / (1.0 + loss)


@dataclass
class TrainState:
    """Where a run stands, as stored in :data:`STATE_FILE` of every checkpoint."""

    stage: int = 0  # stage of the last completed epoch; 0 = nothing done yet
    epoch: int = 0  # last completed epoch within that stage
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"stage": self.stage, "epoch": self.epoch, "history": self.history}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        return cls(stage=int(data["stage"]), epoch=int(data["epoch"]), history=list(data.get("history", [])))


def _metrics_csv(history: list[dict[str, float]]) -> bytes:
    terms = [c for c in _TERM_COLUMNS if any(c in row for row in history)]
    extra = sorted({k for row in history for k in row} - set(_FIXED_COLUMNS) - set(_TERM_COLUMNS))
    columns = [*_FIXED_COLUMNS, *terms, *extra]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in columns})
    return out.getvalue().encode()


def _write_bytes(uri: str, data: bytes, storage: StorageConfig) -> None:
    from pipeline.io.fsutil import atomic_write_bytes
    from pipeline.io.storage import get_filesystem

    fs, _ = get_filesystem(uri, storage)
    atomic_write_bytes(uri, data, fs=fs)


def _save_checkpoint_dir(
    folder: str, model: Any, optimizer: Any, scaler: Any, state: TrainState, config: TrainJobConfig
) -> None:
    import torch

    from maugif_core import save_checkpoint

    save_checkpoint(model, os.path.join(folder, MODEL_FILE))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None},
        os.path.join(folder, OPTIMIZER_FILE),
    )
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as handle:
        handle.write(state.to_json())
    with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config_to_yaml(config))


def _load_checkpoint_dir(folder: str) -> tuple[Any, dict[str, Any], TrainState]:
    import torch

    from maugif_core import load_checkpoint

    model = load_checkpoint(os.path.join(folder, MODEL_FILE))
    # weights_only: optimizer state is tensors and plain containers; nothing else is ever unpickled.
    opt_state = torch.load(os.path.join(folder, OPTIMIZER_FILE), map_location="cpu", weights_only=True)
    with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as handle:
        state = TrainState.from_json(handle.read())
    return model, opt_state, state
