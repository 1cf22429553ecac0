"""The pre-flight checklist of each job (batch fusion, training, evaluation), built from its config.

Each function returns the :class:`~pipeline.cli.preflight.Step` s that :func:`~pipeline.cli.preflight.run_checks`
runs on the driver before ``ray.init``; a failed step makes the job exit 2 with the step's one-line message.
"""

from __future__ import annotations

from typing import Any

from pipeline.cli.preflight import (
    DiscoverySeen,
    Step,
    check_input,
    check_output_outside,
    check_output_writable,
    probe_pairs,
)
from pipeline.cli.preflight_checkpoint import check_checkpoint
from pipeline.config.io_config import PairsConfig, StorageConfig

__all__ = ["check_output_method", "eval_steps", "fuse_steps", "io_steps", "train_steps"]


def io_steps(
    source: str,
    output: str,
    *,
    task: str | None,
    pairs: PairsConfig | None,
    storage: StorageConfig | None,
    input_name: str = "input",
) -> list[Step]:
    """Steps every job shares: input exists, yields pairs; output outside the input, writable."""
    seen = DiscoverySeen()
    return [
        Step("input", lambda: check_input(source, storage, what=input_name)),
        Step(
            "pairs",
            # PairsConfig() is built only here: its validator imports maugif_core (torch, seconds)
            lambda: probe_pairs(source, task=task, config=pairs or PairsConfig(), storage=storage, seen=seen),
            needs=("input",),
        ),
        Step("output location", lambda: check_output_outside(output, source, seen.locations), needs=("pairs",)),
        Step("output writable", lambda: check_output_writable(output, storage), needs=("output location",)),
    ]


def check_output_method(output: str, method: str, storage: StorageConfig | None = None) -> str:
    """Refuse to resume into an output whose earlier runs used another fusion method: its ``ok`` pairs would be
    skipped as done and the output would mix methods. The runs' methods come from their saved configs
    (``_manifest/config-<run>.json``; a config without ``method`` is from before methods existed: ``maugif``).

    Raises:
        PreflightError: earlier runs at ``output`` used another method.
    """
    import json

    from pipeline.cli.preflight import PreflightError
    from pipeline.io.storage import get_filesystem
    from pipeline.schema import MANIFEST_DIR

    fs, path = get_filesystem(output, storage)
    try:
        configs = sorted(fs.glob(f"{path.rstrip('/')}/{MANIFEST_DIR}/config-*.json"))
    except FileNotFoundError:
        configs = []
    used: set[str] = set()
    for name in configs:
        try:
            with fs.open(name, "rb") as handle:
                used.add(json.loads(handle.read()).get("method") or "maugif")
        except (OSError, ValueError):
            continue  # an unreadable config says nothing about the method; the manifest checks come later
    others = sorted(used - {method})
    if others:
        raise PreflightError(
            f"output {output!r} holds results of method {', '.join(map(repr, others))}: a run with method "
            f"{method!r} would skip those pairs as done and mix methods; expected a new output location for "
            f"{method!r} (or --set resume=false to fuse every pair again with it)"
        )
    return f"{len(configs)} earlier run(s), method {method}" if configs else "no earlier runs"


def _check_key_shards(output: str, key_shards: int, storage: StorageConfig | None) -> str:
    from pipeline.io.key_shards import check_key_shards

    return check_key_shards(output, key_shards, storage)


def fuse_steps(config: Any) -> list[Step]:
    """``jobs/batch_fuse.py``: the shared steps, the output's earlier method and key layout
    (:func:`pipeline.io.key_shards.check_key_shards`), and every checkpoint (loaded, task checked)."""
    steps = io_steps(config.input, config.output.uri, task=config.task, pairs=config.pairs, storage=config.storage)
    if config.resume and config.dry_run is None:
        steps.append(
            Step(
                "output method",
                lambda: check_output_method(config.output.uri, config.method, config.storage),
                needs=("output writable",),
            )
        )
    steps.append(
        Step(
            "output key layout",  # whatever resume says: one output never mixes two key layouts
            lambda: _check_key_shards(config.output.uri, config.output.key_shards, config.storage),
            needs=("output writable",),
        )
    )
    for task, uri in sorted(config.checkpoint_map().items()):
        steps.append(
            Step(
                f"checkpoint {task}",
                lambda uri=uri, task=task: check_checkpoint(
                    uri, task, allow_task_mismatch=config.allow_task_mismatch, storage=config.storage
                ),
            )
        )
    return steps


def train_steps(config: Any) -> list[Step]:
    """``jobs/train.py``: the shared steps on ``data.input`` and ``storage.path``."""
    return io_steps(
        config.data.input or "",
        config.storage.path,
        task=config.model.task,
        pairs=config.data.pairs,
        storage=config.storage.s3,
        input_name="input (data.input)",
    )


def eval_steps(config: Any) -> list[Step]:
    """``jobs/evaluate.py``: the shared steps, the checkpoint, and every folder of already-fused images."""
    steps = io_steps(config.input, config.output, task=config.task, pairs=config.pairs, storage=config.storage)
    if config.checkpoint is not None:
        steps.append(
            Step(
                f"checkpoint {config.task}",
                lambda: check_checkpoint(
                    config.checkpoint,
                    config.task,
                    allow_task_mismatch=getattr(config, "allow_task_mismatch", False),
                    storage=config.storage,
                ),
            )
        )
    for source in config.fused:
        steps.append(
            Step(
                f"fused {source.name}",
                lambda source=source: check_input(source.uri, config.storage, what=f"fused folder {source.name!r}"),
            )
        )
    return steps
