"""Regenerate docs/RESULTS.md: test-set manifests, held-out training, evaluation runs and the result tables.

Every number in docs/RESULTS.md comes out of this script, in four steps that can be run one at a time::

    python scripts/make_results.py manifests --work /tmp/maugif_eval
    python scripts/make_results.py train     --work /tmp/maugif_eval --ckpts /tmp/maugif_ckpts
    python scripts/make_results.py evaluate  --work /tmp/maugif_eval --ckpts /tmp/maugif_ckpts --rs-dir /tmp/rs_pairs
    python scripts/make_results.py report    --work /tmp/maugif_eval            # writes docs/RESULTS.md

(``all`` runs the four in order.) The datasets are read in place from ``../shared/datasets``; manifests,
checkpoints and evaluation outputs live in the work/checkpoint folders, outside the repository. Remote-sensing
pairs come from ``scripts/convert_remote_sensing.py`` (``--rs-dir``).

Splits (docs/EVALUATION.md explains them): every test image is scored by a model that never saw it.
Additive test sets that have a sibling set of the same task are evaluated with a model trained on the siblings
(leave-one-dataset-out); MEFB, the only multi-exposure set, is split in two folds by scene (even / odd position in
name order), each fold scored by the model trained on the other. The ``general`` model is trained on one set per
task and evaluated on the sets it did not see.

Training runs ``jobs/train.py`` (Ray Train, one local worker) with a short schedule for 2-core machines, the same
number of samples per stage for every model (:class:`Schedule`); the command, epochs and losses are recorded next
to each checkpoint (``<ckpts>/<task>/<fold>/train_record.json``), the model in ``.../final/model.safetensors``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATASETS = REPO.parent / "shared" / "datasets"
RESULTS_MD = REPO / "docs" / "RESULTS.md"
ADDITIVE_BASELINES = ("average", "maxabs", "dwt", "laplacian")
SPECTRAL_BASELINES = ("bicubic", "brovey", "gihs", "gsa", "rio_brovey")

# ----------------------------------------------------------------------------------------------------------------
# Test sets
# ----------------------------------------------------------------------------------------------------------------

Pair = tuple[str, str, str]  # pair_id, uri_a, uri_b


def _same_name(folder_a: str, folder_b: str, root: str) -> Callable[[], list[Pair]]:
    def pairs() -> list[Pair]:
        base = DATASETS / root
        out = []
        for path_a in sorted((base / folder_a).iterdir()):
            path_b = base / folder_b / path_a.name
            if path_b.is_file():
                out.append((path_a.stem, str(path_a), str(path_b)))
        return out

    return pairs


def _lytro() -> list[Pair]:
    base = DATASETS / "Lytro"
    return [
        (p.name[: -len("-A.jpg")], str(p), str(p.with_name(p.name.replace("-A.jpg", "-B.jpg"))))
        for p in sorted(base.glob("lytro-*-A.jpg"))
    ]


def _mefb() -> list[Pair]:
    """MEFB scenes in name order; ``<scene>/<scene>_A.*`` (under-exposed) = A, ``_B.*`` = B, case-insensitive."""
    out = []
    for scene in sorted((DATASETS / "MEFB").iterdir(), key=lambda p: p.name.lower()):
        if not scene.is_dir():
            continue
        files = {p.stem.lower(): p for p in scene.iterdir()}
        a, b = files.get(f"{scene.name.lower()}_a"), files.get(f"{scene.name.lower()}_b")
        if a is not None and b is not None:
            out.append((scene.name, str(a), str(b)))
    return out


def _mefb_fold(parity: int) -> Callable[[], list[Pair]]:
    return lambda: [p for i, p in enumerate(_mefb()) if i % 2 == parity]


@dataclass(frozen=True)
class TestSet:
    """One evaluated set. ``published``: where its published numbers come from (``metrics_md`` = the CDDFuse-
    lineage rows of METRICS.md, ``vifb``/``mefb`` = the toolboxes' per-image tables, None = none comparable)."""

    key: str
    title: str
    task: str
    convention: str
    list_pairs: Callable[[], list[Pair]]
    published: str | None = None


ADDITIVE_SETS: dict[str, TestSet] = {
    s.key: s
    for s in (
        TestSet("tno", "TNO", "vif", "cddfuse", _same_name("vi", "ir", "TNO"), "metrics_md"),
        TestSet(
            "roadscene", "RoadScene", "vif", "cddfuse", _same_name("vi", "ir", "RoadScene"), "metrics_md"
        ),
        TestSet("vifb", "VIFB", "vif", "vifb", _same_name("input/VI", "input/IR", "VIFB"), "vifb"),
        TestSet(
            "mri_ct", "MRI-CT", "medical", "cddfuse", _same_name("CT", "MRI", "Harvard_MRI_CT"), "metrics_md"
        ),
        TestSet(
            "mri_pet",
            "MRI-PET",
            "medical",
            "cddfuse",
            _same_name("PET", "MRI", "Harvard_MRI_PET"),
            "metrics_md",
        ),
        TestSet(
            "mri_spect",
            "MRI-SPECT",
            "medical",
            "cddfuse",
            _same_name("SPECT", "MRI", "Harvard_MRI_SPECT"),
            "metrics_md",
        ),
        TestSet("lytro", "Lytro", "mff", "vifb", _lytro),
        TestSet("mfiwhu", "MFI-WHU", "mff", "vifb", _same_name("source1", "source2", "MFI-WHU")),
        TestSet("mefb_even", "MEFB (even fold)", "mef", "vifb", _mefb_fold(0), "mefb"),
        TestSet("mefb_odd", "MEFB (odd fold)", "mef", "vifb", _mefb_fold(1), "mefb"),
    )
}

# Model key -> (task, training sets). Held-out models are named after the set they leave out.
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vif/heldout-tno": ("vif", ("roadscene", "vifb")),
    "vif/heldout-roadscene": ("vif", ("tno", "vifb")),
    "vif/heldout-vifb": ("vif", ("tno", "roadscene")),
    "medical/heldout-mri_ct": ("medical", ("mri_pet", "mri_spect")),
    "medical/heldout-mri_pet": ("medical", ("mri_ct", "mri_spect")),
    "medical/heldout-mri_spect": ("medical", ("mri_ct", "mri_pet")),
    "mff/heldout-lytro": ("mff", ("mfiwhu",)),
    "mff/heldout-mfiwhu": ("mff", ("lytro",)),
    "mef/heldout-mefb_even": ("mef", ("mefb_odd",)),
    "mef/heldout-mefb_odd": ("mef", ("mefb_even",)),
    "general/mixed": ("general", ("vifb", "mri_pet", "mfiwhu", "mefb_odd")),
}
# Test set -> the task model that scores it.
TASK_MODEL = {key: f"{s.task}/heldout-{key}" for key, s in ADDITIVE_SETS.items()}
GENERAL_SETS = tuple(k for k in ADDITIVE_SETS if k not in MODELS["general/mixed"][1])
# The checkpoint proposed for bundling per task (the held-out model trained on the most data).
BUNDLE = {
    "vif": "vif/heldout-vifb",
    "medical": "medical/heldout-mri_ct",
    "mff": "mff/heldout-lytro",
    "mef": "mef/heldout-mefb_even",
    "general": "general/mixed",
}

# Remote-sensing sets: pair ids of the manifest written by scripts/convert_remote_sensing.py.
RS_SETS = {
    "wv2": ("WorldView-2 (PAN + 8-band MS, r = 4)", "pansharpen", ("wv2",)),
    "landsat": (
        "Landsat-7 ETM+ scenes 1-7 (PAN + 6-band MS, r = 2)",
        "pansharpen",
        tuple(f"landsat7_{i}" for i in range(1, 8)),
    ),
    "paris_hs_pan": ("EO-1 Paris, Hyperion HS + ALI PAN (r = 3)", "pansharpen", ("paris_hs_pan",)),
    "paris_hs_ms": (
        "EO-1 Paris, Hyperion HS + ALI MS (same grid; HS degraded by 3)",
        "hsi_msi",
        ("paris_hs_ms",),
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# manifests
# ----------------------------------------------------------------------------------------------------------------


def write_manifest(path: Path, pairs: list[Pair], task: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair_id", "uri_a", "uri_b", "task"])
        for pair_id, uri_a, uri_b in pairs:
            writer.writerow([pair_id, uri_a, uri_b, task])


def cmd_manifests(work: Path) -> None:
    for key, test_set in ADDITIVE_SETS.items():
        pairs = test_set.list_pairs()
        write_manifest(work / "manifests" / f"{key}.csv", pairs, test_set.task)
        print(f"{key}: {len(pairs)} pairs")
    for model_key, (task, train_sets) in MODELS.items():
        pairs = [p for s in train_sets for p in ADDITIVE_SETS[s].list_pairs()]
        write_manifest(work / "manifests" / "train" / f"{model_key.replace('/', '__')}.csv", pairs, task)
        print(f"train {model_key}: {len(pairs)} pairs from {', '.join(train_sets)}")


# ----------------------------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------------------------


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


def cmd_train(work: Path, ckpts: Path, only: list[str] | None, schedule: Schedule, force: bool) -> None:
    """Train every held-out model with jobs/train.py (one local Ray Train worker; see docs/EVALUATION.md)."""
    for model_key, (task, train_sets) in MODELS.items():
        if only and not any(model_key.startswith(o) for o in only):
            continue
        out_dir = ckpts / model_key
        if (out_dir / "final" / "model.safetensors").is_file() and not force:
            print(f"{model_key}: exists, skipped")
            continue
        manifest = work / "manifests" / "train" / f"{model_key.replace('/', '__')}.csv"
        pairs = _count_rows(manifest)
        epochs1, epochs2 = schedule.epochs(pairs)
        command = [
            "jobs/train.py", "--config", "configs/train_default.yaml", "--input", str(manifest), "--task", task,
            "--output", str(out_dir),
            "--set", "train.num_workers=1", "--set", "train.cpus_per_worker=1",
            "--set", f"train.batch_size={schedule.batch}", "--set", f"train.crop_size={schedule.crop}",
            "--set", f"data.crops_per_pair={schedule.crops_per_pair}", "--set", f"train.seed={schedule.seed}",
            "--set", f"train.epochs_stage1={epochs1}", "--set", f"train.epochs_stage2={epochs2}",
        ]  # fmt: skip
        print(f"training {model_key} on {', '.join(train_sets)} ({pairs} pairs):\n$ python " + " ".join(command),
              flush=True)  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *command], cwd=REPO, check=True)
        record = {
            "model": model_key,
            "task": task,
            "train_sets": list(train_sets),
            "pairs": pairs,
            "epochs_stage1": epochs1,
            "epochs_stage2": epochs2,
            "samples_stage1": epochs1 * pairs * schedule.crops_per_pair,
            "samples_stage2": epochs2 * pairs * schedule.crops_per_pair,
            "crop": schedule.crop,
            "batch": schedule.batch,
            "seconds": round(time.perf_counter() - t0, 1),
            "command": "python " + " ".join(command),
            "loss": _last_losses(out_dir / "maugif-train" / "metrics.csv"),
        }
        (out_dir / "train_record.json").write_text(json.dumps(record, indent=2))
        print(f"{model_key}: {record['seconds']} s, {record['loss']}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------------------


def _run_evaluate(argv: list[str]) -> None:
    print("$ python jobs/evaluate.py " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, str(REPO / "jobs" / "evaluate.py"), *argv], check=True)


def cmd_evaluate(work: Path, ckpts: Path, rs_dir: Path | None, only: list[str] | None, limit: int | None,
                 rs_steps: int) -> None:  # fmt: skip
    extra = ["--limit", str(limit)] if limit else []
    for key, test_set in ADDITIVE_SETS.items():
        if only and key not in only:
            continue
        manifest = str(work / "manifests" / f"{key}.csv")
        checkpoint = ckpts / TASK_MODEL[key] / "final" / "model.safetensors"
        methods = ["maugif", "maugif:running", *ADDITIVE_BASELINES]
        _run_evaluate([
            "--input", manifest, "--task", test_set.task, "--output", str(work / "eval" / key),
            "--checkpoint", str(checkpoint), "--convention", test_set.convention,
            "--methods", ",".join(methods), *extra,
        ])  # fmt: skip
        if key in GENERAL_SETS:
            _run_evaluate([
                "--input", manifest, "--task", "general", "--output", str(work / "eval_general" / key),
                "--checkpoint", str(ckpts / "general/mixed/final/model.safetensors"),
                "--convention", test_set.convention, "--methods", "maugif,maugif:running", "--grid-pairs", "0",
                *extra,
            ])  # fmt: skip
    if rs_dir is None:
        return
    manifest = rs_dir / "manifest.csv"
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for key, (_title, task, ids) in RS_SETS.items():
        if only and key not in only:
            continue
        subset = [(r["pair_id"], r["uri_a"], r["uri_b"]) for r in rows if r["pair_id"] in ids]
        sub_manifest = work / "manifests" / f"{key}.csv"
        write_manifest(sub_manifest, subset, task)
        for protocol in ("wald", "full"):
            if protocol == "full" and key == "paris_hs_ms":
                continue  # same grid: no full-resolution protocol
            _run_evaluate([
                "--input", str(sub_manifest), "--task", task, "--protocol", protocol,
                "--output", str(work / "eval" / f"{key}_{protocol}"),
                "--methods", ",".join(["maugif", *SPECTRAL_BASELINES]),
                "--set", f"multiplicative.steps={rs_steps}", "--set", "same_grid_ratio=3", *extra,
            ])  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["manifests", "train", "evaluate", "report", "all"])
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/maugif_eval"), help="Work folder (manifests, outputs)."
    )
    parser.add_argument("--ckpts", type=Path, default=Path("/tmp/maugif_ckpts"), help="Checkpoint folder.")
    parser.add_argument("--rs-dir", type=Path, help="Output folder of scripts/convert_remote_sensing.py.")
    parser.add_argument("--only", help="Comma-separated model keys (train) or set keys (evaluate).")
    parser.add_argument(
        "--limit", type=int, help="Evaluate only the first N pairs of each set (a quick look)."
    )
    parser.add_argument("--stage1-samples", type=int, default=Schedule.stage1_samples)
    parser.add_argument("--stage2-samples", type=int, default=Schedule.stage2_samples)
    parser.add_argument("--crop", type=int, default=Schedule.crop)
    parser.add_argument("--batch", type=int, default=Schedule.batch)
    parser.add_argument(
        "--rs-steps", type=int, default=300, help="Per-scene fitting steps of multiplicative MAUGIF."
    )
    parser.add_argument("--force", action="store_true", help="Retrain models whose checkpoint exists.")
    parser.add_argument("--out", type=Path, default=RESULTS_MD, help="Where report writes the Markdown.")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    schedule = Schedule(args.stage1_samples, args.stage2_samples, args.crop, args.batch)
    if args.command in ("manifests", "all"):
        cmd_manifests(args.work)
    if args.command in ("train", "all"):
        cmd_train(args.work, args.ckpts, only, schedule, args.force)
    if args.command in ("evaluate", "all"):
        cmd_evaluate(args.work, args.ckpts, args.rs_dir, only, args.limit, args.rs_steps)
    if args.command in ("report", "all"):
        cmd_report(args.work, args.ckpts, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
