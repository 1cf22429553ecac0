"""Training of the held-out models and ablations (``make_results.py train``).

Training runs ``jobs/train.py`` (Ray Train, one local worker) with a short schedule for 2-core machines, the
same number of samples per stage for every model (:class:`Schedule`); the command, epochs and losses are
recorded next to each checkpoint (``<ckpts>/<task>/<fold>/train_record.json``), the model in
``.../final/model.safetensors``."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluate.results.paths import REPO
from pipeline.evaluate.results.testsets import ABLATION_SCHEDULES, ABLATIONS, MODELS, ablation_prefix


@dataclass(frozen=True)
class Schedule:
    """A short schedule for 2-core machines, in samples so that sets of different sizes get the same number of
    steps (SPEC reference: 100 + 100 epochs at crop 480)."""

    stage1_samples: int = 1200
    stage2_samples: int = 2400
    crop: int = 128
    batch: int = 8
    crops_per_pair: int = 4
    seed: int = 0
    cpus: int = 1  # CPUs (and torch threads) of the one Ray Train worker

    def epochs(self, pairs: int) -> tuple[int, int]:
        per_epoch = pairs * self.crops_per_pair
        return (
            max(1, math.ceil(self.stage1_samples / per_epoch)),
            max(1, math.ceil(self.stage2_samples / per_epoch)),
        )


def _count_rows(manifest: Path) -> int:
    with manifest.open(newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _last_losses(metrics_csv: Path) -> dict:
    """First and last epoch losses of each stage, from the run's metrics.csv."""
    if not metrics_csv.is_file():
        return {}
    with metrics_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for stage in ("1", "2"):
        losses = [float(r["loss"]) for r in rows if str(r.get("stage", "")).split(".")[0] == stage]
        if losses:
            out[f"stage{stage}"] = {
                "first_epoch_loss": round(losses[0], 4),
                "last_epoch_loss": round(losses[-1], 4),
            }
    return out


def _training_jobs() -> list[tuple[str, str, tuple[str, ...], str, dict, dict]]:
    """(model key, task, training sets, manifest key, model overrides, schedule changes) of every model and
    ablation."""
    jobs = [(key, task, sets, key, {}, {}) for key, (task, sets) in MODELS.items()]
    for key, (base, overrides) in ABLATIONS.items():
        task, sets = MODELS[base]
        jobs.append((key, task, sets, base, overrides, ABLATION_SCHEDULES.get(ablation_prefix(key), {})))
    return jobs


def train_command(work: Path, ckpts: Path, job: tuple, schedule: Schedule) -> tuple[list[str], dict]:
    """The jobs/train.py arguments of one training job, and the facts its record keeps."""
    model_key, task, train_sets, manifest_key, model_overrides, schedule_changes = job
    schedule = dataclasses.replace(schedule, **schedule_changes)
    manifest = work / "manifests" / "train" / f"{manifest_key.replace('/', '__')}.csv"
    pairs = _count_rows(manifest)
    epochs1, epochs2 = schedule.epochs(pairs)
    overrides = {
        "train.num_workers": 1,
        "train.cpus_per_worker": schedule.cpus,
        "train.batch_size": schedule.batch,
        "train.crop_size": schedule.crop,
        "data.crops_per_pair": schedule.crops_per_pair,
        "train.seed": schedule.seed,
        "train.epochs_stage1": epochs1,
        "train.epochs_stage2": epochs2,
    }
    if model_overrides:
        overrides["model.overrides"] = "{" + ", ".join(f"{k}: {v}" for k, v in model_overrides.items()) + "}"
    command = [
        *("jobs/train.py", "--config", "configs/train_default.yaml", "--input", str(manifest)),
        *("--task", task, "--output", str(ckpts / model_key), "--address", "local"),
        *(x for key, value in overrides.items() for x in ("--set", f"{key}={value}")),
    ]
    facts = {
        "model": model_key,
        "task": task,
        "train_sets": list(train_sets),
        "model_overrides": model_overrides,
        "pairs": pairs,
        "epochs_stage1": epochs1,
        "epochs_stage2": epochs2,
        "samples_stage1": epochs1 * pairs * schedule.crops_per_pair,
        "samples_stage2": epochs2 * pairs * schedule.crops_per_pair,
        "crop": schedule.crop,
        "batch": schedule.batch,
    }
    return command, facts


def write_train_record(out_dir: Path, command: list[str], facts: dict, seconds: float) -> dict:
    """``<out_dir>/train_record.json``: the command, schedule, wall time and first/last epoch losses."""
    import shlex

    record = {
        **facts,
        "seconds": round(seconds, 1),
        "command": "python " + shlex.join(command),
        "loss": _last_losses(out_dir / "maugif-train" / "metrics.csv"),
    }
    (out_dir / "train_record.json").write_text(json.dumps(record, indent=2))
    return record


def cmd_train(work: Path, ckpts: Path, only: list[str] | None, schedule: Schedule, force: bool) -> None:
    """Train every held-out model and ablation with jobs/train.py (one local Ray Train worker; see
    docs/EVALUATION.md)."""
    for job in _training_jobs():
        model_key = job[0]
        if only and not any(model_key.startswith(o) for o in only):
            continue
        out_dir = ckpts / model_key
        if (out_dir / "final" / "model.safetensors").is_file() and not force:
            print(f"{model_key}: exists, skipped")
            continue
        command, facts = train_command(work, ckpts, job, schedule)
        print(
            f"training {model_key} on {', '.join(facts['train_sets'])} ({facts['pairs']} pairs):\n$ python "
            + " ".join(command),
            flush=True,
        )
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *command], cwd=REPO, check=True)
        record = write_train_record(out_dir, command, facts, time.perf_counter() - t0)
        print(f"{model_key}: {record['seconds']} s, {record['loss']}", flush=True)
