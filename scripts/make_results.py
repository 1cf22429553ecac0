"""Regenerate docs/RESULTS.md and the bundled checkpoints: test-set manifests, held-out training, evaluation runs,
the bundled models with their cards, and the result tables.

Every number in docs/RESULTS.md and in the model cards comes out of this script, in five steps that can be run
one at a time::

    python scripts/make_results.py manifests --work /tmp/maugif_eval
    python scripts/make_results.py train     --work /tmp/maugif_eval --ckpts /tmp/maugif_ckpts
    python scripts/make_results.py evaluate  --work /tmp/maugif_eval --ckpts /tmp/maugif_ckpts --rs-dir /tmp/rs_pairs
    python scripts/make_results.py bundle    --work /tmp/maugif_eval --ckpts /tmp/maugif_ckpts  # maugif_core/pretrained
    python scripts/make_results.py report    --work /tmp/maugif_eval --ckpts /tmp/maugif_ckpts  # docs/RESULTS.md

(``all`` runs the five in order.) The datasets are read in place from ``../shared/datasets``; manifests,
checkpoints and evaluation outputs live in the work/checkpoint folders, outside the repository. Remote-sensing
pairs come from ``scripts/convert_remote_sensing.py`` (``--rs-dir``).

Splits (docs/EVALUATION.md explains them): every test image is scored by a model that never saw it.
Additive test sets that have a sibling set of the same task are evaluated with a model trained on the siblings
(leave-one-dataset-out); MEFB, the only multi-exposure set, is split in two folds by scene (even / odd
position in name order), each fold scored by the model trained on the other. The ``general`` model is trained
on one set per task and evaluated on the sets it did not see.

Training runs ``jobs/train.py`` (Ray Train, one local worker) with a short schedule for 2-core machines, the
same number of samples per stage for every model (:class:`Schedule`); the command, epochs and losses are
recorded next to each checkpoint (``<ckpts>/<task>/<fold>/train_record.json``), the model in
``.../final/model.safetensors``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATASETS = REPO.parent / "shared" / "datasets"
RESULTS_MD = REPO / "docs" / "RESULTS.md"
ADDITIVE_BASELINES = ("average", "maxabs", "dwt", "laplacian")
SPECTRAL_BASELINES = ("bicubic", "brovey", "gihs", "gsa", "rio_brovey")

# ------------------------------------------------------------------------------------------------------------
# Test sets
# ------------------------------------------------------------------------------------------------------------

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
    """MEFB scenes in name order; ``<scene>/<scene>_A.*`` (under-exposed) = A, ``_B.*`` = B,
    case-insensitive."""
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
    lineage rows of METRICS.md, ``vifb``/``mefb`` = the toolboxes' per-image tables, None = none
    comparable)."""

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
        TestSet("roadscene", "RoadScene", "vif", "cddfuse", _same_name("vi", "ir", "RoadScene"), "metrics_md"),
        TestSet("vifb", "VIFB", "vif", "vifb", _same_name("input/VI", "input/IR", "VIFB"), "vifb"),
        TestSet("mri_ct", "MRI-CT", "medical", "cddfuse", _same_name("CT", "MRI", "Harvard_MRI_CT"), "metrics_md"),
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
# The checkpoint bundled per task (``bundle`` step): a held-out model, so that its own held-out set stays a clean
# test set of the bundled weights. vif, medical: the fold trained on the most pairs. mff: the model trained on
# Lytro, so that the bundled MFI-WHU sample pairs (samples/mff, the embedded default's input) stay unseen too.
# mef: either fold (25 pairs each); the one that leaves the even fold out.
BUNDLE = {
    "vif": "vif/heldout-vifb",
    "medical": "medical/heldout-mri_ct",
    "mff": "mff/heldout-mfiwhu",
    "mef": "mef/heldout-mefb_even",
    "general": "general/mixed",
}
PRETRAINED = REPO / "maugif_core" / "pretrained"

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


# ------------------------------------------------------------------------------------------------------------
# manifests
# ------------------------------------------------------------------------------------------------------------


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
        # Set-prefixed ids: the Harvard sets (and MFI-WHU) reuse file names such as 11.png across sets.
        pairs = [(f"{s}_{i}", a, b) for s in train_sets for i, a, b in ADDITIVE_SETS[s].list_pairs()]
        write_manifest(work / "manifests" / "train" / f"{model_key.replace('/', '__')}.csv", pairs, task)
        print(f"train {model_key}: {len(pairs)} pairs from {', '.join(train_sets)}")


# ------------------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------------------


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


# Ablations: a held-out model retrained with model-config overrides, scored on the same held-out set.
# name -> (base model key, AdditiveConfig overrides). vif-t0: SPEC §1.1's vif threshold t = -0.5 vs t = 0 (the
# preset of every other task), prompted by the general model (t = 0) beating the vif models on TNO.
ABLATIONS: dict[str, tuple[str, dict[str, float]]] = {
    "vif-t0/heldout-tno": ("vif/heldout-tno", {"threshold": 0.0}),
    "vif-t0/heldout-roadscene": ("vif/heldout-roadscene", {"threshold": 0.0}),
    "vif-t0/heldout-vifb": ("vif/heldout-vifb", {"threshold": 0.0}),
    "vif-t0-long/heldout-tno": ("vif/heldout-tno", {"threshold": 0.0}),
    "vif-t0-long/heldout-roadscene": ("vif/heldout-roadscene", {"threshold": 0.0}),
    "vif-t0-long/heldout-vifb": ("vif/heldout-vifb", {"threshold": 0.0}),
}
# Schedule changes of an ablation family (Schedule fields), keyed by family. vif-t0-long: vif-t0 with three times
# the stage-2 samples (its stage-2 loss was still falling at the end of the short schedule), on two CPUs.
ABLATION_SCHEDULES: dict[str, dict[str, int]] = {
    "vif-t0-long": {"stage2_samples": 7200, "cpus": 2},
}


def _training_jobs() -> list[tuple[str, str, tuple[str, ...], str, dict, dict]]:
    """(model key, task, training sets, manifest key, model overrides, schedule changes) of every model and
    ablation."""
    jobs = [(key, task, sets, key, {}, {}) for key, (task, sets) in MODELS.items()]
    for key, (base, overrides) in ABLATIONS.items():
        task, sets = MODELS[base]
        jobs.append((key, task, sets, base, overrides, ABLATION_SCHEDULES.get(_ablation_prefix(key), {})))
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


# ------------------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------------------


# MAUGIF method keys in the report: per-image BatchNorm statistics, running statistics (both without the
# envelope; run as MODEL_METHODS and read back under these keys: see _read_rows), and running statistics with the
# fused luma capped at the brighter source (jobs/evaluate.py method names, pipeline.config.eval_config).
PER_IMAGE, RUNNING, ENVELOPED = "maugif", "maugif:running", "maugif:running+envelope"
VARIANT_TITLES = {
    PER_IMAGE: "per-image BN, no envelope",
    RUNNING: "running BN, no envelope",
    ENVELOPED: "running BN + envelope",
}
# What jobs/evaluate.py is asked to run for PER_IMAGE and RUNNING: explicit about the envelope too.
MODEL_METHODS = ("maugif:per_image+no_envelope", "maugif:running+no_envelope")
MAUGIF_PREFIX = "maugif"


def ablation_dir(work: Path, name: str) -> Path:
    return work / "eval_ablation" / name.replace("/", "__")


def _run_evaluate(argv: list[str], force: bool = False) -> bool:
    """Run jobs/evaluate.py unless its output is complete (or ``force``); True if it ran."""
    output = Path(argv[argv.index("--output") + 1])
    if (output / "summary.json").is_file() and not force:
        print(f"{output}: done already, skipped (--force reruns)")
        return False
    print("$ python jobs/evaluate.py " + " ".join(argv), flush=True)
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "evaluate.py"), *argv], check=False)
    if done.returncode == 2:
        raise SystemExit(f"jobs/evaluate.py rejected its arguments: {argv}")
    if done.returncode:
        print(f"warning: jobs/evaluate.py exited {done.returncode} (some runs failed: see failures.csv)")
    return True


def _run_model_evaluation(argv: list[str], output: Path, methods: list[str], force: bool) -> None:
    """Score a checkpoint (``argv``: input, task, checkpoint, ... flags) into ``output`` with ``methods`` plus the
    three model variants (MODEL_METHODS and ENVELOPED) in one run. An output made before the envelope variant
    existed is kept and gets only that variant, from a second run into :func:`envelope_dir` (read back together
    by :func:`_rows`)."""
    summary = output / "summary.json"
    if summary.is_file() and not force and ENVELOPED not in json.loads(summary.read_text()).get("methods", []):
        _run_evaluate(argv + _flags(output=envelope_dir(output), methods=ENVELOPED, grid_pairs=0))
        return
    _run_evaluate(argv + _flags(output=output, methods=",".join([*MODEL_METHODS, ENVELOPED, *methods])), force)


MULTIPLICATIVE_CODE = ("maugif_core/multiplicative/*.py",)


def multiplicative_fingerprint() -> str:
    """A hash of the multiplicative model's source and of its config schema (fields, defaults), stored with each
    remote-sensing evaluation so that the report can tell whether its MAUGIF rows still describe the current
    code. The additive model's config does not enter it."""
    import hashlib

    from maugif_core.config import MultiplicativeConfig

    digest = hashlib.sha256()
    for pattern in MULTIPLICATIVE_CODE:
        for path in sorted(REPO.glob(pattern)):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    digest.update(json.dumps(MultiplicativeConfig.model_json_schema(), sort_keys=True).encode())
    return digest.hexdigest()[:12]


def _flags(**options: object) -> list[str]:
    """``--key value`` pairs for jobs/evaluate.py (None skipped; ``_`` in keys becomes ``-``)."""
    return [x for k, v in options.items() if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]


VIFB_FUSED = "U2Fusion"  # one published method whose fused images are in VIFB/reference_fused: scored by us too


def cmd_evaluate(
    work: Path,
    ckpts: Path,
    rs_dir: Path | None,
    only: list[str] | None,
    limit: int | None,
    rs_steps: int,
    force: bool = False,
) -> None:
    """Run jobs/evaluate.py on every test set (``only``: set keys) into ``work/eval/<set>``."""
    for key, test_set in ADDITIVE_SETS.items():
        if only and key not in only:
            continue
        common = _flags(input=work / "manifests" / f"{key}.csv", convention=test_set.convention, limit=limit)
        methods = list(ADDITIVE_BASELINES)
        extra: list[str] = []
        if key == "vifb":  # cross-check of our VIFB-convention scoring against the published table
            methods.append(VIFB_FUSED)
            extra = _flags(
                fused_dir=f"{VIFB_FUSED}={DATASETS / 'VIFB' / 'reference_fused'}",
                fused_pattern=f"{{pair_id}}_{VIFB_FUSED}.jpg",
            )
        checkpoint = ckpts / TASK_MODEL[key] / "final" / "model.safetensors"
        if not checkpoint.is_file():
            print(f"{key}: skipped, {checkpoint} not trained yet (make_results.py train)")
            continue
        _run_model_evaluation(
            common + _flags(task=test_set.task, checkpoint=checkpoint) + extra, work / "eval" / key, methods, force
        )
        if test_set.task == "mef":  # OpenCV's Mertens: the multi-exposure peer of SPEC §1.3 (needs no model)
            _run_evaluate(
                common + _flags(task="mef", output=work / "eval_peers" / key, methods="mertens", grid_pairs=0), force
            )
        if key in GENERAL_SETS:
            general = ckpts / "general" / "mixed" / "final" / "model.safetensors"
            if not general.is_file():
                print(f"{key}: general model skipped, {general} not trained yet")
                continue
            general_argv = common + _flags(task="general", checkpoint=general, grid_pairs=0)
            _run_model_evaluation(general_argv, work / "eval_general" / key, [], force)
    for name, (base, _overrides) in ABLATIONS.items():
        key = _heldout_set(base)
        if only and key not in only and not any(name.startswith(o) for o in only):
            continue
        checkpoint = ckpts / name / "final" / "model.safetensors"
        if not checkpoint.is_file():
            print(f"ablation {name}: skipped, {checkpoint} not trained yet (make_results.py train --only {name})")
            continue
        test_set = ADDITIVE_SETS[key]
        argv = _flags(input=work / "manifests" / f"{key}.csv", convention=test_set.convention, limit=limit)
        argv += _flags(task=test_set.task, checkpoint=checkpoint, grid_pairs=0)
        _run_model_evaluation(argv, ablation_dir(work, name) / key, [], force)
    if rs_dir is None:
        return
    with (rs_dir / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for key, (_title, task, ids) in RS_SETS.items():
        if only and key not in only:
            continue
        manifest = work / "manifests" / f"{key}.csv"
        write_manifest(manifest, [(r["pair_id"], r["uri_a"], r["uri_b"]) for r in rows if r["pair_id"] in ids], task)
        for protocol in ("wald", "full"):
            if protocol == "full" and key == "paris_hs_ms":
                continue  # one grid: no full-resolution protocol
            output = work / "eval" / f"{key}_{protocol}"
            code = multiplicative_fingerprint()
            if _run_evaluate(
                _flags(input=manifest, task=task, protocol=protocol, output=output)
                + _flags(methods=",".join(["maugif", *SPECTRAL_BASELINES]), limit=limit)
                + ["--set", f"multiplicative.steps={rs_steps}", "--set", "same_grid_ratio=3"],
                force,
            ):
                (output / "code.json").write_text(json.dumps({"multiplicative_fingerprint": code}))


# ------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------

TARGET_METRICS = ("en", "sd", "sf", "mi", "scd", "vif", "qabf", "ssim")
LOWER = {"nabf", "sam", "ergas", "d_lambda", "d_s", "seconds"}
# METRICS.md, CDDFuse-lineage published rows: set -> method -> (EN, SD, SF, MI, SCD, VIF, Qabf, SSIM).
PUBLISHED_MD = {
    "tno": {
        "U2Fusion": (6.83, 34.55, 11.52, 1.37, 1.71, 0.58, 0.44, 0.99),
        "DeFusion": (6.95, 38.41, 8.21, 1.78, 1.64, 0.60, 0.41, 0.96),
        "CDDFuse": (7.12, 46.00, 13.15, 2.19, 1.76, 0.77, 0.54, 1.03),
    },
    "roadscene": {
        "U2Fusion": (7.09, 38.12, 13.25, 1.87, 1.70, 0.60, 0.51, 0.97),
        "DeFusion": (7.23, 44.44, 10.22, 2.25, 1.69, 0.63, 0.48, 0.89),
        "CDDFuse": (7.44, 54.67, 16.36, 2.30, 1.81, 0.69, 0.52, 0.98),
    },
    "mri_ct": {
        "DeFusion": (4.63, 66.38, 21.56, 2.20, 1.12, 0.47, 0.44, 1.29),
        "CDDFuse": (4.88, 79.17, 38.14, 2.61, 1.41, 0.61, 0.68, 1.34),
    },
    "mri_pet": {
        "DeFusion": (4.17, 64.65, 22.35, 1.74, 1.48, 0.58, 0.56, 1.45),
        "CDDFuse": (4.23, 70.73, 29.57, 2.03, 1.69, 0.71, 0.71, 1.49),
    },
    "mri_spect": {
        "DeFusion": (3.81, 56.65, 15.45, 1.80, 1.27, 0.61, 0.56, 1.46),
        "CDDFuse": (3.90, 58.31, 20.87, 2.49, 1.35, 0.97, 0.78, 1.48),
    },
}
# Toolbox metric names -> ours (vifb convention; VIFB's "Variance" is the standard deviation).
VIFB_NAMES = {
    "Entropy": "en",
    "Variance": "sd",
    "Spatial_frequency": "sf",
    "Avg_gradient": "ag",
    "Mutinf": "mi",
    "Qabf": "qabf",
    "Ssim": "ssim",
    "Psnr": "psnr",
}
MEFB_NAMES = {
    "Entropy": "en",
    "SD": "sd",
    "Spatial_frequency": "sf",
    "Avg_gradient": "ag",
    "Qabf": "qabf",
    "Psnr": "psnr",
}


def _read_rows(folder: Path):
    import pandas as pd

    path = folder / "metrics_per_image.csv"
    if not path.is_file():
        return None
    rows = pd.read_csv(path, dtype={"pair_id": str})
    # The runs name every inference option explicitly (MODEL_METHODS), so that a checkpoint's stored config cannot
    # change what a row means; read back under the report's keys. Older runs used ``maugif`` and
    # ``maugif:running`` (and ``maugif:per_image``) for the same things: every checkpoint they scored stored no
    # envelope, and ``maugif`` was per-image BN for each of them.
    renames = {**dict(zip(MODEL_METHODS, (PER_IMAGE, RUNNING), strict=True)), "maugif:per_image": PER_IMAGE}
    rows["method"] = rows["method"].replace(renames)
    return rows


def envelope_dir(folder: Path) -> Path:
    """Where the ``maugif:running+envelope`` rows of an additive evaluation folder live: a sibling tree
    ``<parent>_envelope/<name>`` (``eval/tno`` → ``eval_envelope/tno``), so that adding the variant reruns
    nothing else."""
    return folder.parent.with_name(folder.parent.name + "_envelope") / folder.name


def _rows(folder: Path):
    """An additive evaluation folder's rows together with those of its envelope variant."""
    import pandas as pd

    frames = [f for f in (_read_rows(folder), _read_rows(envelope_dir(folder))) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def _means(rows) -> dict[str, dict[str, float]]:
    """method -> metric -> mean."""
    out: dict[str, dict[str, float]] = {}
    for (method, metric), value in rows.groupby(["method", "metric"])["value"].mean().items():
        out.setdefault(method, {})[metric] = float(value)
    return out


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _table(rows: list[tuple[str, dict[str, float]]], metrics: tuple[str, ...], bold_over: int | None = None) -> str:
    """Markdown table; the best value per metric among the first ``bold_over`` rows (default all) in bold."""
    candidates = [r for r in rows[: bold_over or len(rows)] if r[1]]
    rows = [r for r in rows if r[1]]  # runs that did not happen
    head = "| method | " + " | ".join(f"{m}{' ↓' if m in LOWER else ''}" for m in metrics) + " |"
    lines = [head, "|---|" + "---|" * len(metrics)]
    best = {}
    for m in metrics:
        values = [r[1].get(m) for r in candidates if r[1].get(m) is not None and math.isfinite(r[1].get(m))]
        if values and m != "seconds":
            best[m] = min(values) if m in LOWER else max(values)
    for name, values in rows:
        cells = []
        for m in metrics:
            v = values.get(m)
            text = _fmt(v)
            cells.append(f"**{text}**" if v is not None and m in best and math.isclose(v, best[m]) else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _wins(ours: dict[str, float], other: dict[str, float], metrics: tuple[str, ...]) -> list[str]:
    return [
        m
        for m in metrics
        if m in ours and m in other and ((ours[m] < other[m]) if m in LOWER else (ours[m] > other[m]))
    ]


def _gap(ours: float, other: float, metric: str) -> str:
    diff = ours - other
    rel = diff / abs(other) * 100 if other else float("nan")
    return f"{metric} {_fmt(ours)} vs {_fmt(other)} ({diff:+.3g}, {rel:+.1f} %)"


def _baseline_verdict(means: dict, baselines: tuple[str, ...], ours_key: str) -> tuple[bool, str]:
    """Target 1: ours beats every classical baseline on at least 5 of TARGET_METRICS."""
    ours = means.get(ours_key, {})
    parts, ok = [], True
    for base in baselines:
        if base not in means:
            continue
        won = _wins(ours, means[base], TARGET_METRICS)
        ok &= len(won) >= 5
        lost = [m for m in TARGET_METRICS if m not in won]
        parts.append(f"{base}: {len(won)}/8 (behind on {', '.join(lost) or 'none'})")
    return ok, "; ".join(parts)


def _defusion_verdict(ours: dict[str, float], defusion: tuple[float, ...]) -> tuple[bool, str]:
    """Target 2: at DeFusion's published level, read as: at least its value on >= 5 of the 8 metrics."""
    ref = dict(zip(TARGET_METRICS, defusion, strict=True))
    reached = [m for m in TARGET_METRICS if m in ours and ours[m] >= ref[m]]
    missed = [_gap(ours[m], ref[m], m) for m in TARGET_METRICS if m in ours and ours[m] < ref[m]]
    return len(reached) >= 5, f"{len(reached)}/8 at or above DeFusion" + (
        f"; short on {'; '.join(missed)}" if missed else ""
    )


def _published_toolbox(table: Path, names: dict[str, str], images: set[str]) -> dict[str, dict[str, float]]:
    """Per-method means of a toolbox's per-image table over ``images`` (case-insensitive), in our metric
    names."""
    import pandas as pd

    frame = pd.read_csv(table)
    frame = frame[frame["image"].str.lower().isin({i.lower() for i in images}) & frame["metric"].isin(names)]
    frame = frame.assign(metric=frame["metric"].map(names))
    return _means(frame)


def _additive_section(
    work: Path,
    key: str,
    lines: list[str],
    verdicts: list[tuple[str, str, bool, str]],
    bn_rows: list,
    ours: str,
    general_key: str,
) -> None:
    test_set = ADDITIVE_SETS[key]
    rows = _set_rows(work, key)
    if rows is None:
        lines.append(f"### {test_set.title}\n\nNot evaluated yet (`make_results.py evaluate --only {key}`).\n")
        return
    general = _rows(work / "eval_general" / key)
    means = _means(rows)
    n = rows["pair_id"].nunique()
    table_rows = [
        (f"MAUGIF ({judged_model(work, key)}, per-image BN)", means.get(PER_IMAGE, {})),
        ("MAUGIF, running BN", means.get(RUNNING, {})),
        ("MAUGIF, running BN + envelope", means.get(ENVELOPED, {})),
    ]
    if general is not None:
        gm = _means(general)
        table_rows.append((f"MAUGIF general/mixed, `{general_key}`", gm.get(general_key, {})))
    table_rows += [(b, means[b]) for b in ADDITIVE_BASELINES if b in means]
    ours_n = len(table_rows)
    if test_set.published == "metrics_md":
        table_rows += [
            (f"{m} (published)", dict(zip(TARGET_METRICS, v, strict=True))) for m, v in PUBLISHED_MD[key].items()
        ]
    metrics = (*TARGET_METRICS, "ag", "psnr", "seconds") if test_set.published != "metrics_md" else TARGET_METRICS
    lines.append(f"### {test_set.title} ({n} pairs, {test_set.convention} convention)\n")
    lines.append(_table(table_rows, metrics, bold_over=ours_n) + "\n")
    ok, text = _baseline_verdict(means, ADDITIVE_BASELINES, ours)
    verdicts.append((test_set.title, "beats every classical baseline on >= 5 of 8", ok, text))
    if test_set.published == "metrics_md":
        ok2, text2 = _defusion_verdict(means.get(ours, {}), PUBLISHED_MD[key]["DeFusion"])
        verdicts.append((test_set.title, "DeFusion's published level", ok2, text2))
    per, run = means.get("maugif", {}), means.get("maugif:running", {})
    if per and run:
        bn_rows.append((test_set.title, per, run))


def _toolbox_section(
    work: Path,
    keys: tuple[str, ...],
    title: str,
    table: Path,
    names: dict[str, str],
    lines: list[str],
    verdicts: list,
    bn_rows: list,
    stretch: bool,
    ours_key: str,
) -> None:
    import pandas as pd

    frames = [f for f in (_set_rows(work, k) for k in keys) if f is not None]
    if not frames:
        lines.append(f"### {title}\n\nNot evaluated yet.\n")
        return
    frames += [f for f in (_read_rows(work / "eval_peers" / k) for k in keys) if f is not None]
    rows = pd.concat(frames, ignore_index=True)
    means = _means(rows)
    images = set(rows["pair_id"].astype(str))
    published = _published_toolbox(table, names, images)
    metrics = tuple(dict.fromkeys(names.values()))
    ours_rows = [
        (f"MAUGIF ({', '.join(judged_model(work, k) for k in keys)}, per-image BN)", means.get(PER_IMAGE, {})),
        ("MAUGIF, running BN", means.get(RUNNING, {})),
        ("MAUGIF, running BN + envelope", means.get(ENVELOPED, {})),
    ]
    ours_rows += [(b, means[b]) for b in ADDITIVE_BASELINES if b in means]
    ours_rows += [(f"{p} (peer)", means[p]) for p in ("mertens",) if p in means]
    median = {m: float(np.median([v[m] for v in published.values() if m in v])) for m in metrics}
    rank_rows = [("median of published methods", median)]
    if VIFB_FUSED in means and VIFB_FUSED in published:
        rank_rows = [
            (f"{VIFB_FUSED}: its published images scored here", means[VIFB_FUSED]),
            (f"{VIFB_FUSED}: published table", published[VIFB_FUSED]),
            *rank_rows,
        ]
    lines.append(f"### {title} ({len(images)} images, vifb convention, {len(published)} published methods)\n")
    lines.append(_table(ours_rows + rank_rows, metrics, bold_over=len(ours_rows)) + "\n")
    ours = means.get(ours_key, {})
    ranks = []
    for m in metrics:
        if m in ours:
            better = sum(1 for v in published.values() if m in v and (v[m] < ours[m] if m in LOWER else v[m] > ours[m]))
            ranks.append(f"{m} {better + 1}/{len(published) + 1}")
    lines.append(f"Rank of MAUGIF ({ours_key}) among the published methods plus ours (1 = best): {', '.join(ranks)}.\n")
    ok, text = _baseline_verdict(means, ADDITIVE_BASELINES, ours_key)
    verdicts.append((title, "beats every classical baseline on >= 5 of 8", ok, text))
    if stretch:
        parts, ok = [], True
        for m in ("qabf", "mi"):
            if m in ours:
                ok &= ours[m] >= median[m]
                parts.append(_gap(ours[m], median[m], m))
        verdicts.append((title, "stretch: Qabf and MI >= median published method", ok, "; ".join(parts)))
    per, run = means.get("maugif", {}), means.get("maugif:running", {})
    if per and run:
        bn_rows.append((title, per, run))


def _code_note(work: Path, key: str) -> str:
    """Which multiplicative code the MAUGIF rows of one remote-sensing set were fitted with."""
    current = multiplicative_fingerprint()
    stored = []
    for protocol in ("wald", "full"):
        path = work / "eval" / f"{key}_{protocol}" / "code.json"
        if (work / "eval" / f"{key}_{protocol}" / "summary.json").is_file():
            stored.append(json.loads(path.read_text())["multiplicative_fingerprint"] if path.is_file() else None)
    if stored and all(s == current for s in stored):
        return f"MAUGIF rows fitted with the current multiplicative code (source fingerprint `{current}`)."
    return (
        f"**Stale:** the MAUGIF rows were fitted with other multiplicative code than the current one (`{current}`; "
        f"stored: {', '.join(f'`{s}`' if s else 'unrecorded' for s in stored)}); rerun "
        f"`make_results.py evaluate --only {key} --force`."
    )


def _spectral_section(work: Path, lines: list[str], verdicts: list) -> None:
    for key, (title, _task, _ids) in RS_SETS.items():
        wald = _read_rows(work / "eval" / f"{key}_wald")
        full = _read_rows(work / "eval" / f"{key}_full")
        if wald is None:
            lines.append(f"### {title}\n\nNot evaluated yet.\n")
            continue
        means = _means(wald)
        full_means = _means(full) if full is not None else {}
        methods = ["maugif", *SPECTRAL_BASELINES]
        rows = [
            (m, {**means.get(m, {}), **{k: v for k, v in full_means.get(m, {}).items() if k != "seconds"}})
            for m in methods
            if m in means
        ]
        metrics = ("sam", "ergas", "q2n", "psnr", "qnr", "d_lambda", "d_s", "seconds")
        lines.append(f"### {title} ({wald['pair_id'].nunique()} scene(s))\n")
        lines.append(_table(rows, metrics) + "\n")
        lines.append(_code_note(work, key) + "\n")
        ours = means.get("maugif", {})
        parts, ok = [], True
        for base in ("bicubic", "brovey", "gihs", "gsa"):
            if base in means and ours:
                for m in ("sam", "ergas"):
                    ok &= ours[m] < means[base][m]
                    if ours[m] >= means[base][m]:
                        parts.append(f"{base} {_gap(ours[m], means[base][m], m)}")
        verdicts.append(
            (
                title,
                "lower SAM and ERGAS than bicubic, Brovey, GIHS, GSA (Wald)",
                ok,
                "met" if ok else "behind: " + "; ".join(parts),
            )
        )


def _bn_section(bn_rows: list, lines: list[str], per_cells: int, run_cells: int) -> None:
    """The per-set table (the judged models of each set) and the decision of :func:`bn_choice` (counted on the
    preset held-out models, which every set has)."""
    if not bn_rows:
        lines.append("Not evaluated yet.\n")
        return
    metrics = DECISION_METRICS
    lines.append(
        "| set | per-image better on | running better on | Qabf per-image / running | SSIM per-image / running |"
    )
    lines.append("|---|---|---|---|---|")
    for title, per, run in bn_rows:
        per_wins = _wins(per, run, metrics)
        run_wins = _wins(run, per, metrics)
        lines.append(
            f"| {title} | {len(per_wins)}/{len(metrics)} ({', '.join(per_wins)}) | "
            f"{len(run_wins)}/{len(metrics)} ({', '.join(run_wins)}) | "
            f"{_fmt(per.get('qabf'))} / {_fmt(run.get('qabf'))} | "
            f"{_fmt(per.get('ssim'))} / {_fmt(run.get('ssim'))} |"
        )
    lines.append("")
    choice = "per_image" if per_cells >= run_cells else "running"
    lines.append(
        f"Over all sets, counted on the preset held-out models: per-image statistics better on {per_cells} "
        f"set-metric cells, running statistics on {run_cells}. **Decision from these numbers: "
        f"`bn_mode={choice}`.** Either mode makes a fused result independent of batch size, batch composition and "
        "tiling.\n"
    )
    import maugif_core

    bundled = {}
    for task in BUNDLE:
        path = PRETRAINED / f"{task}.safetensors"
        if path.is_file():
            bundled[task] = maugif_core.read_checkpoint_config(path).bn_mode
    preset_mode = maugif_core.preset("vif").bn_mode
    stored = ", ".join(f"`{t}` {m}" for t, m in bundled.items()) or "none bundled yet"
    lines.append(
        f"Applied: the bundled checkpoints store `bn_mode` ({stored}); `maugif_core.pretrained(task)` and every "
        "job that uses the bundled weights fuse in that mode. A model built from a preset "
        f"(`maugif_core.build_model(task)`, the training job's export) has `bn_mode={preset_mode}` "
        + (
            "(the library default)."
            if preset_mode == choice
            else f"(the library default in `maugif_core/config.py`, which these numbers say should become `{choice}`)."
        )
        + "\n"
    )


def _envelope_section(envelope: dict[str, tuple[bool, int, int]], lines: list[str]) -> None:
    if not envelope:
        lines.append("Not evaluated (the envelope is compared with running BatchNorm statistics only).\n")
        return
    lines.append(
        "`maugif:running+envelope` against `maugif:running`: the same weights, the fused luma of SPEC §1.1 "
        '(`F_Y = Y_A + τ(d)`) capped pointwise at `max(Y_A, B)` (`AdditiveConfig.envelope = "max"`; '
        "inference only, training unchanged; tile-exact). Set-metric cells won over TARGET_METRICS + AG + PSNR "
        "on each task's held-out sets (general: the sets it did not see), the MEFB folds pooled:\n"
    )
    lines.append("| task | with envelope better on | without better on | decision |")
    lines.append("|---|---|---|---|")
    import maugif_core

    for task, (on, won, lost) in envelope.items():
        lines.append(f"| {task} | {won} | {lost} | {'envelope `max`' if on else 'no envelope (SPEC rule)'} |")
    presets = {t: maugif_core.preset(t).envelope for t in envelope}
    agree = all((presets[t] == "max") == on for t, (on, _, _) in envelope.items())
    lines.append(
        "\nApplied: the bundled checkpoints store the decision; the presets (`maugif_core.build_model(task)`) have "
        + ", ".join(f"{t} `{e}`" for t, e in presets.items())
        + (" (the same decisions)." if agree else " — **these differ from the decisions above**.")
        + "\n"
    )


def _training_section(work: Path, ckpts: Path, lines: list[str]) -> None:
    lines.append(
        "| model | trained on | pairs | epochs (stage 1 + 2) | samples | crop | wall time "
        "| last epoch loss (stage 1 / 2) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for model_key in MODELS:
        record_path = ckpts / model_key / "train_record.json"
        if not record_path.is_file():
            lines.append(f"| {model_key} | not trained yet | | | | | | |")
            continue
        r = json.loads(record_path.read_text())
        loss = r.get("loss", {})
        lines.append(
            f"| {model_key} | {', '.join(r['train_sets'])} | {r['pairs']} | "
            f"{r['epochs_stage1']} + {r['epochs_stage2']} | "
            f"{r['samples_stage1']} + {r['samples_stage2']} | {r['crop']} | {r['seconds']:.0f} s | "
            f"{loss.get('stage1', {}).get('last_epoch_loss', '–')} / "
            f"{loss.get('stage2', {}).get('last_epoch_loss', '–')} |"
        )
    lines.append("")
    lines.append(
        "Bundled in `maugif_core/pretrained/` (`make_results.py bundle`; per task a held-out model, so that its "
        "held-out set stays a clean test set of the bundled weights; model card `<task>.md` beside each):\n"
    )
    lines.append("| task | source | bytes | sha256 (first 12) | bn_mode | test sets these weights never saw |")
    lines.append("|---|---|---|---|---|---|")
    import maugif_core

    promoted = promotions(work)
    for task in BUNDLE:
        key = bundled_model(work, task, promoted)
        path = PRETRAINED / f"{task}.safetensors"
        if not path.is_file():
            lines.append(f"| {task} | not bundled yet | | | | |")
            continue
        record_path = ckpts / key / "train_record.json"
        seen = set(json.loads(record_path.read_text())["train_sets"]) if record_path.is_file() else set()
        clean = [s.title for k, s in ADDITIVE_SETS.items() if k not in seen and (task == "general" or s.task == task)]
        config = maugif_core.read_checkpoint_config(path)
        lines.append(
            f"| {task} | `{key}` | {path.stat().st_size:,} | `{_sha256(path)[:12]}` | {config.bn_mode} | "
            f"{', '.join(clean) or 'none'} |"
        )
    lines.append("")


def _rs_steps(work: Path) -> str:
    """The per-scene fitting steps the remote-sensing evaluations ran with (from their saved configs)."""
    import yaml

    steps = set()
    for key in RS_SETS:
        for protocol in ("wald", "full"):
            path = work / "eval" / f"{key}_{protocol}" / "config.yaml"
            if path.is_file():
                cfg = yaml.safe_load(path.read_text()) or {}
                steps.add(str((cfg.get("multiplicative") or {}).get("steps", "the config default")))
    return " / ".join(sorted(steps)) or "(not evaluated yet)"


def _caveats(work: Path) -> str:
    return (
        "**Read these numbers with the schedule in mind.** Every additive model here was trained on this 2-core "
        "machine with a short schedule (crop 128 instead of 480, about 1,200 + 2,400 samples, i.e. 3 to 30 epochs "
        "per stage depending on the training-set size, instead of 100 + 100 epochs: see *Trained checkpoints* "
        "below), and on small training sets (the shared datasets are test sets; each model only sees the other "
        "sets of its task). The multiplicative model is fitted per scene with "
        f"{_rs_steps(work)} steps (reference: 6,000) on centre crops of 200 x 200 low-resolution pixels "
        "(`convert_remote_sensing.py --crop-ms 200`); every method sees the same crops. A missed target below is "
        "a measured fact about these checkpoints, not about the method at its reference schedule."
    )


def _background_lift(ckpts: Path, methods: tuple[str, ...], pairs_per_set: int = 5) -> list[str]:
    """Diagnostic of the medical SSIM gap: how much the injected detail lifts the black background.

    For the first pairs of each Harvard set: the mean fused grey level where both sources are black (< 3 on
    0-255), the CDDFuse-convention SSIM before and after setting that background to 0, and, as a check of our
    convention, the same SSIM from ``skimage.metrics.structural_similarity`` run the way CDDFuse runs it (float32
    grey images on 0-255 from OpenCV's BGR2GRAY, ``data_range=2``, the float default of skimage < 0.19).
    """
    from PIL import Image

    import maugif_core
    from maugif_core import metrics

    try:
        import cv2
        from skimage.metrics import structural_similarity
    except ImportError:  # the oracle column is optional
        cv2 = structural_similarity = None

    def grey(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(image[..., ::-1], dtype=np.float32), cv2.COLOR_BGR2GRAY)

    from pipeline.config.eval_config import maugif_overrides, split_method

    out = ["| set | method | pairs | background share | fused level there (0-255) | SSIM | SSIM, background zeroed "
           "| SSIM by skimage (oracle) |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, method in ((k, m) for k in ("mri_ct", "mri_pet", "mri_spect") for m in methods):
        path = ckpts / TASK_MODEL[key] / "final" / "model.safetensors"
        if not path.is_file():
            continue
        trained = maugif_core.load_checkpoint(path)
        overrides = maugif_overrides(split_method(method)[1])
        model = maugif_core.build_model_from_config(trained.config.model_copy(update=overrides))
        model.load_state_dict(trained.state_dict())
        share, level, before, after, oracle = [], [], [], [], []
        for _, uri_a, uri_b in ADDITIVE_SETS[key].list_pairs()[:pairs_per_set]:
            a, b = (np.asarray(Image.open(u).convert("RGB")) for u in (uri_a, uri_b))
            fused = model.fuse(a, b)
            black = (a.max(axis=2) < 3) & (b.max(axis=2) < 3)
            zeroed = fused.copy()
            zeroed[black] = 0
            share.append(black.mean())
            level.append(fused[black].mean() if black.any() else 0.0)
            before.append(metrics.ssim(fused, a, b, "cddfuse"))
            after.append(metrics.ssim(zeroed, a, b, "cddfuse"))
            if structural_similarity is not None:
                f = grey(fused)
                oracle.append(sum(structural_similarity(f, grey(x), data_range=2) for x in (a, b)))
        out.append(
            f"| {ADDITIVE_SETS[key].title} | `{method}` | {len(share)} | {np.mean(share):.0%} | {np.mean(level):.1f} | "
            f"{np.mean(before):.3f} | {np.mean(after):.3f} | {f'{np.mean(oracle):.3f}' if oracle else '–'} |"
        )
    return out


def _task_vs_general(work: Path, ckpts: Path, ours: dict[str, str]) -> list[str]:
    """On every set held out from both its task model and the general model: on how many of the 8 target
    metrics each is ahead, with the two models' thresholds and training-set sizes (the presets differ in t)."""
    import maugif_core

    out = [
        "Each model with its judged variant (task models: "
        + ", ".join(f"{t} `{k}`" for t, k in ours.items() if t != "general")
        + f"; general `{ours['general']}`), same set, both models held out from it; each model's threshold t and "
        "training-set size are in the table.\n",
        "| set | task model (t, pairs) | general (t, pairs) | task model ahead on | general ahead on |",
        "|---|---|---|---|---|",
    ]
    general_path = ckpts / "general" / "mixed" / "final" / "model.safetensors"
    if not general_path.is_file():
        return ["Not trained yet."]
    general_t = maugif_core.read_checkpoint_config(general_path).threshold
    general_pairs = json.loads((ckpts / "general" / "mixed" / "train_record.json").read_text())["pairs"]
    for key in GENERAL_SETS:
        task_rows, general_rows = _set_rows(work, key), _rows(work / "eval_general" / key)
        if task_rows is None or general_rows is None:
            continue
        task_key = ours[ADDITIVE_SETS[key].task]
        task, general = _means(task_rows).get(task_key, {}), _means(general_rows).get(ours["general"], {})
        model_key = judged_model(work, key)
        model_dir = ckpts / model_key
        task_t = maugif_core.read_checkpoint_config(model_dir / "final" / "model.safetensors").threshold
        task_pairs = json.loads((model_dir / "train_record.json").read_text())["pairs"]
        task_wins, general_wins = _wins(task, general, TARGET_METRICS), _wins(general, task, TARGET_METRICS)
        out.append(
            f"| {SET_TITLES[key]} | `{model_key}` ({task_t:g}, {task_pairs}) | {general_t:g}, "
            f"{general_pairs} | {len(task_wins)}/8 ({', '.join(task_wins)}) | "
            f"{len(general_wins)}/8 ({', '.join(general_wins)}) |"
        )
    return out


def _ablation_section(work: Path, ckpts: Path, ours_by_task: dict[str, str]) -> list[str]:
    """Each ablation next to its base model on the base model's held-out set (same training data, same
    schedule, same BatchNorm mode), with the baselines and the published rows, and the two targets' verdicts."""
    out: list[str] = []
    for name, (base, overrides) in ABLATIONS.items():
        key = _heldout_set(base)
        test_set = ADDITIVE_SETS[key]
        ours = ours_by_task[test_set.task]
        ablation, base_rows = _rows(ablation_dir(work, name) / key), _rows(work / "eval" / key)
        schedule = ABLATION_SCHEDULES.get(_ablation_prefix(name), {})
        change = ", ".join(f"{k} = {v:g}" for k, v in {**overrides, **schedule}.items())
        if ablation is None or base_rows is None:
            out.append(f"`{name}` ({change}): not evaluated yet (`make_results.py train/evaluate --only {name}`).\n")
            continue
        means = _means(base_rows)
        ablated = _means(ablation).get(ours, {})
        record = json.loads((ckpts / name / "train_record.json").read_text())
        out.append(
            f"**`{name}`**: `{base}` retrained with {change} (same {record['pairs']} training pairs, schedule and "
            f"seed; {record['seconds']:.0f} s), scored on {test_set.title} ({ablation['pair_id'].nunique()} pairs, "
            f"{test_set.convention} convention), both with `{ours}`. Command: `{record['command']}`.\n"
        )
        rows = [(f"{base} (preset)", means.get(ours, {})), (f"{name} ({change})", ablated)]
        rows += [(b, means[b]) for b in ADDITIVE_BASELINES if b in means]
        bold = len(rows)
        if test_set.published == "metrics_md":
            rows += [
                (f"{m} (published)", dict(zip(TARGET_METRICS, v, strict=True))) for m, v in PUBLISHED_MD[key].items()
            ]
        out.append(_table(rows, TARGET_METRICS, bold_over=bold) + "\n")
        ok, text = _baseline_verdict({**means, ours: ablated}, ADDITIVE_BASELINES, ours)
        wins = _wins(ablated, means.get(ours, {}), TARGET_METRICS)
        out.append(f"- Ahead of the preset model on {len(wins)}/8 ({', '.join(wins)}).")
        out.append(f"- Beats every classical baseline on >= 5 of 8: {'yes' if ok else 'no'} ({text}).")
        if test_set.published == "metrics_md":
            ok2, text2 = _defusion_verdict(ablated, PUBLISHED_MD[key]["DeFusion"])
            out.append(f"- DeFusion's published level: {'yes' if ok2 else 'no'} ({text2}).")
        out.append("")
    promoted = promotions(work)
    for prefix in dict.fromkeys(_ablation_prefix(name) for name in ABLATIONS):
        task = next(
            ADDITIVE_SETS[_heldout_set(b)].task for n, (b, _) in ABLATIONS.items() if _ablation_prefix(n) == prefix
        )
        if promoted.get(task, ("",))[0] == prefix:
            _, won, lost = promoted[task]
            out.append(
                f"**`{prefix}` is promoted**: over every `{task}` fold it is ahead of the preset models on {won} "
                f"set-metric cells and behind on {lost}, so the `{task}` sets' targets above are judged on the "
                f"`{prefix}` models and the bundled `{task}` checkpoint is `{bundled_model(work, task, promoted)}` "
                f"(it stores its own config). The preset (`maugif_core.preset('{task}')`) keeps SPEC §1.1's "
                "values.\n"
            )
        else:
            chosen = f"`{promoted[task][0]}`" if task in promoted else "the preset"
            versus = ""
            if task in promoted:
                per_fold = _head_to_head(work, prefix, promoted[task][0], task)
                won, lost = sum(w for _, w, _ in per_fold), sum(v for _, _, v in per_fold)
                folds = ", ".join(f"{SET_TITLES[k]} {w}/{v}" for k, w, v in per_fold)
                versus = (
                    f" Head to head against `{promoted[task][0]}` it is ahead on {won} set-metric cells and behind "
                    f"on {lost} (ahead/behind per fold: {folds}); promotion counts the lead over the presets, "
                    "decided before these runs, and is not re-chosen on this comparison."
                )
            out.append(
                f"`{prefix}` is not promoted (the judged `{task}` models are {chosen}'s; promotion needs every "
                f"`{task}` fold evaluated, more cells ahead of the presets than behind, and the largest lead of its "
                f"task).{versus}\n"
            )
    return out


DECISION_METRICS = (*TARGET_METRICS, "ag", "psnr")


def _cells(a: dict[str, float], b: dict[str, float], metrics: tuple[str, ...]) -> tuple[int, int]:
    """``(metrics on which a is ahead of b, metrics on which b is ahead of a)``; ties count for neither."""
    return len(_wins(a, b, metrics)), len(_wins(b, a, metrics))


def _pooled_cells(work: Path, folder: str, keys: list[str], key_a: str, key_b: str) -> tuple[int, int]:
    """Set-metric cells (DECISION_METRICS) won by method ``key_a`` and by ``key_b`` over the sets ``keys`` of
    ``work/folder``, the MEFB folds pooled as one set (as in the tables); sets missing either method count for
    neither."""
    import pandas as pd

    groups = [[k for k in keys if k.startswith("mefb")]] + [[k] for k in keys if not k.startswith("mefb")]
    won_a = won_b = 0
    for group in groups:
        frames = [f for f in (_rows(work / folder / key) for key in group) if f is not None]
        if not frames:
            continue
        means = _means(pd.concat(frames, ignore_index=True))
        if key_a in means and key_b in means:
            a, b = _cells(means[key_a], means[key_b], DECISION_METRICS)
            won_a, won_b = won_a + a, won_b + b
    return won_a, won_b


def bn_choice(work: Path) -> tuple[str, int, int]:
    """The BatchNorm mode the measurements favour: ``(method key, cells won by per-image, cells won by
    running)`` over every additive set's means of TARGET_METRICS + ag + psnr (:func:`_pooled_cells`)."""
    per_wins, run_wins = _pooled_cells(work, "eval", list(ADDITIVE_SETS), PER_IMAGE, RUNNING)
    return (PER_IMAGE if per_wins >= run_wins else RUNNING), per_wins, run_wins


ENVELOPE_TASKS = ("vif", "medical", "mff", "mef", "general")


def envelope_choice(work: Path) -> dict[str, tuple[bool, int, int]]:
    """Per additive task: ``(envelope on, cells won with it, cells won without)``, comparing
    ``maugif:running+envelope`` with ``maugif:running`` (same weights) on the task's held-out sets — the general
    model on every set it did not see — over TARGET_METRICS + ag + psnr, the MEFB folds pooled as one set. The
    envelope is on where it wins more cells; a tie keeps SPEC §1.1's rule (off)."""
    out: dict[str, tuple[bool, int, int]] = {}
    for task in ENVELOPE_TASKS:
        if task == "general":
            folder, keys = "eval_general", list(GENERAL_SETS)
        else:
            folder, keys = "eval", [k for k, s in ADDITIVE_SETS.items() if s.task == task]
        on, off = _pooled_cells(work, folder, keys, ENVELOPED, RUNNING)
        out[task] = (on > off, on, off)
    return out


@functools.cache  # read-only over finished evaluations (bundle, report): computed once per run
def ours_keys(work: Path) -> tuple[dict[str, str], int, int, dict[str, tuple[bool, int, int]]]:
    """The MAUGIF method key each additive task is judged (and bundled) with: the BatchNorm mode of
    :func:`bn_choice`, plus the envelope where :func:`envelope_choice` turns it on. Also returns the BatchNorm
    cell counts and the envelope choice."""
    bn, per_cells, run_cells = bn_choice(work)
    envelope = envelope_choice(work) if bn == RUNNING else {}
    keys = {task: ENVELOPED if envelope.get(task, (False,))[0] else bn for task in ENVELOPE_TASKS}
    return keys, per_cells, run_cells, envelope


def _ablation_prefix(name: str) -> str:
    return name.split("/heldout-", 1)[0]


@functools.cache  # read-only over finished evaluations (bundle, report): computed once per run
def promotions(work: Path) -> dict[str, tuple[str, int, int]]:
    """Ablations that replace their task's models: ``task -> (prefix, cells won, cells lost)``.

    An ablation family (``vif-t0/heldout-<set>`` for every held-out set of its task) qualifies when it covers
    every fold of the task and, summed over the folds, the retrained models are ahead of the preset models on more
    of the 8 target metrics than behind, each scored with the task's judged variant (:func:`ours_keys`); of several
    qualifying families of one task, the one with the largest lead is promoted. A promoted family's models are
    then the ones judged in the targets and bundled."""
    ours = ours_keys(work)[0]
    families: dict[str, list[str]] = {}
    for name in ABLATIONS:
        families.setdefault(_ablation_prefix(name), []).append(name)
    out: dict[str, tuple[str, int, int]] = {}
    for prefix, names in families.items():
        task = ADDITIVE_SETS[_heldout_set(ABLATIONS[names[0]][0])].task
        folds = {k for k, s in ADDITIVE_SETS.items() if s.task == task}
        if {_heldout_set(n) for n in names} != folds:
            continue
        won = lost = 0
        for name in names:
            key = _heldout_set(name)
            ablated, base = _rows(ablation_dir(work, name) / key), _rows(work / "eval" / key)
            if ablated is None or base is None:
                break
            ahead, behind = _cells(
                _means(ablated).get(ours[task], {}), _means(base).get(ours[task], {}), TARGET_METRICS
            )
            won, lost = won + ahead, lost + behind
        else:
            best = out.get(task)
            if won > lost and (best is None or won - lost > best[1] - best[2]):
                out[task] = (prefix, won, lost)  # several qualify: the one furthest ahead of the presets
    return out


def _head_to_head(work: Path, prefix: str, other: str, task: str) -> list[tuple[str, int, int]]:
    """Per fold of ``task``: ``(set, cells where family prefix is ahead of family other, cells behind)``, each
    scored with the task's judged variant."""
    ours = ours_keys(work)[0][task]
    out = []
    for key in (k for k, s in ADDITIVE_SETS.items() if s.task == task):
        a, b = (_rows(ablation_dir(work, f"{p}/heldout-{key}") / key) for p in (prefix, other))
        if a is None or b is None:
            continue
        out.append((key, *_cells(_means(a).get(ours, {}), _means(b).get(ours, {}), TARGET_METRICS)))
    return out


def judged_model(work: Path, key: str, promoted: dict[str, tuple[str, int, int]] | None = None) -> str:
    """The model key judged on additive set ``key``: its held-out preset model, or the promoted ablation's."""
    promoted = promotions(work) if promoted is None else promoted
    task = ADDITIVE_SETS[key].task
    return f"{promoted[task][0]}/heldout-{key}" if task in promoted else TASK_MODEL[key]


def bundled_model(work: Path, task: str, promoted: dict[str, tuple[str, int, int]] | None = None) -> str:
    """The model key bundled for ``task``: :data:`BUNDLE`'s, or the same fold of the promoted ablation."""
    promoted = promotions(work) if promoted is None else promoted
    key = BUNDLE[task]
    return f"{promoted[task][0]}/heldout-{_heldout_set(key)}" if task in promoted else key


def _set_rows(work: Path, key: str):
    """The rows of additive set ``key``: baselines and peers from ``eval/<key>``, the MAUGIF rows of the judged
    model (:func:`judged_model`; a promoted ablation's come from its own evaluation folder)."""
    import pandas as pd

    rows = _rows(work / "eval" / key)
    model = judged_model(work, key)
    if rows is None or model == TASK_MODEL[key]:
        return rows
    model_rows = _rows(ablation_dir(work, model) / key)
    if model_rows is None:
        return rows
    keep = ~rows["method"].astype(str).str.startswith(MAUGIF_PREFIX)
    return pd.concat([rows[keep], model_rows], ignore_index=True)


# ------------------------------------------------------------------------------------------------------------
# bundle
# ------------------------------------------------------------------------------------------------------------

TASK_TITLES = {
    "vif": "visible-infrared",
    "medical": "medical (CT / PET / SPECT + MRI)",
    "mff": "multi-focus",
    "mef": "multi-exposure",
    "general": "one model for every additive task",
}
SET_TITLES = {key: s.title for key, s in ADDITIVE_SETS.items()}


def _bundle_mode(work: Path) -> str:
    """The BatchNorm inference mode the bundled checkpoints store: the one the evaluations favour."""
    return "running" if bn_choice(work)[0] == "maugif:running" else "per_image"


def _eval_means(work: Path, folder: str, key: str) -> dict[str, dict[str, float]]:
    rows = _rows(work / folder / key)
    return _means(rows) if rows is not None else {}


def _heldout_set(model_key: str) -> str | None:
    return model_key.split("heldout-", 1)[1] if "heldout-" in model_key else None


def _card_evaluation(work: Path, model_key: str, mode_key: str) -> tuple[list[str], list[str]]:
    """The card's evaluation section (held-out scores of exactly these weights) and the targets it misses."""
    lines: list[str] = []
    missed: list[str] = []
    mode_name = f"`{mode_key}`"
    held = _heldout_set(model_key)
    if held is not None:
        test_set = ADDITIVE_SETS[held]
        held_rows = _set_rows(work, held)
        means = _means(held_rows) if held_rows is not None else {}
        means.update(_eval_means(work, "eval_peers", held))
        if not means:
            return [f"Not evaluated yet (`make_results.py evaluate --only {held}`).", ""], missed
        n = len(held_rows["pair_id"].unique())
        rows = [
            (f"this model as bundled ({mode_name})", means.get(mode_key, {})),
            *[
                (f"same weights, {VARIANT_TITLES[k]}", means[k])
                for k in (PER_IMAGE, RUNNING, ENVELOPED)
                if k != mode_key and k in means
            ],
            *[(b, means[b]) for b in (*ADDITIVE_BASELINES, "mertens") if b in means],
        ]
        bold = len(rows)
        if test_set.published == "metrics_md":
            rows += [
                (f"{m} (published)", dict(zip(TARGET_METRICS, v, strict=True))) for m, v in PUBLISHED_MD[held].items()
            ]
        metrics = (*TARGET_METRICS, "ag", "psnr") if test_set.published != "metrics_md" else TARGET_METRICS
        lines += [
            f"Held-out set **{test_set.title}** ({n} pairs, never seen in training), `{test_set.convention}` "
            "metric convention (docs/EVALUATION.md), means over the pairs; bold = best among our rows and the "
            "classical baselines:",
            "",
            _table(rows, metrics, bold_over=bold),
            "",
        ]
        ok, text = _baseline_verdict(means, ADDITIVE_BASELINES, mode_key)
        lines.append(
            f"- Target *beats every classical baseline on >= 5 of 8*: {'met' if ok else '**missed**'} ({text})."
        )
        if not ok:
            missed.append(f"does not beat every classical baseline on {test_set.title} ({text})")
        if test_set.published == "metrics_md":
            ok2, text2 = _defusion_verdict(means.get(mode_key, {}), PUBLISHED_MD[held]["DeFusion"])
            lines.append(f"- Target *DeFusion's published level*: {'met' if ok2 else '**missed**'} ({text2}).")
            if not ok2:
                missed.append(f"below DeFusion's published level on {test_set.title} ({text2})")
        lines.append("")
        return lines, missed
    # The general model: every set it did not see, next to that set's baselines.
    lines += [
        "Held-out sets (the sets of every task it did not see), means over the pairs, each in its set's metric "
        f"convention; this model as bundled ({mode_name}):",
        "",
        "| set | pairs | " + " | ".join(TARGET_METRICS) + " | beats every classical baseline on >= 5 of 8 |",
        "|---|---|" + "---|" * len(TARGET_METRICS) + "---|",
    ]
    for key in GENERAL_SETS:
        rows = _rows(work / "eval_general" / key)
        if rows is None:
            lines.append(f"| {SET_TITLES[key]} | not evaluated yet | " + "| " * len(TARGET_METRICS) + "|")
            continue
        ours = _means(rows).get(mode_key, {})
        means = {**_eval_means(work, "eval", key), mode_key: ours}
        ok, text = _baseline_verdict(means, ADDITIVE_BASELINES, mode_key)
        if not ok:
            missed.append(f"does not beat every classical baseline on {SET_TITLES[key]}")
        lines.append(
            f"| {SET_TITLES[key]} ({ADDITIVE_SETS[key].convention}) | {rows['pair_id'].nunique()} | "
            + " | ".join(_fmt(ours.get(m)) for m in TARGET_METRICS)
            + f" | {'yes' if ok else 'no'}: {text} |"
        )
    lines += ["", "The baselines' own numbers on these sets are in docs/RESULTS.md.", ""]
    return lines, missed


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_card(task: str, model_key: str, target: Path, work: Path, ckpts: Path, mode_key: str) -> str:
    """The Markdown model card of one bundled checkpoint (``mode_key``: the evaluation method key that matches
    its stored config); every number from the records and evaluations."""
    import maugif_core

    record = json.loads((ckpts / model_key / "train_record.json").read_text())
    config = maugif_core.read_checkpoint_config(target)
    evaluation, missed = _card_evaluation(work, model_key, mode_key)
    held = _heldout_set(model_key)
    train_pairs = ", ".join(
        f"{SET_TITLES[s]} ({len(ADDITIVE_SETS[s].list_pairs())} pairs)" for s in record["train_sets"]
    )
    loss = record.get("loss", {})
    losses = "; ".join(
        f"stage {i}: {loss[f'stage{i}']['first_epoch_loss']} → {loss[f'stage{i}']['last_epoch_loss']}"
        for i in (1, 2)
        if f"stage{i}" in loss
    )
    if held is not None:
        held_text = f"{SET_TITLES[held]} was held out (the test set below)"
    else:
        held_text = "held out: " + ", ".join(SET_TITLES[k] for k in GENERAL_SETS) + " (the test sets below)"
    untouched = [SET_TITLES[k] for k in ADDITIVE_SETS if k not in record["train_sets"]]
    lines = [
        "<!-- Generated by scripts/make_results.py bundle; do not edit by hand. -->",
        f"# Model card: `{task}` ({TASK_TITLES[task]}), bundled",
        "",
        f"- **File**: `maugif_core/pretrained/{task}.safetensors`, {target.stat().st_size:,} bytes, sha256 "
        f'`{_sha256(target)}`. Load with `maugif_core.pretrained("{task}")`.',
        f"- **Source**: `{model_key}` of `scripts/make_results.py` (trained with `jobs/train.py`), weights unchanged; "
        f"the stored config's `bn_mode` is set to `{config.bn_mode}` and its `envelope` to `{config.envelope}`, "
        "the inference options the evaluations favour (docs/RESULTS.md, *BatchNorm at inference* and "
        "*Envelope*).",
        f"- **Model**: additive MAUGIF (SPEC §1.1), reference widths (encoders {config.encoder_channels} channels, "
        f"decoders {config.decoder_width} / {config.decoder_width2}); threshold t = {config.threshold}, "
        f"λ_Y = {config.lambda_y}, chroma `{config.chroma}`, direction `{config.direction}`, "
        f"bn_mode `{config.bn_mode}`, envelope `{config.envelope}`. Stored config: `{config.model_dump_json()}`.",
        f"- **Training data**: {train_pairs}, from `../shared/datasets` (read in place); {held_text}. Sets never "
        f"used in this model's training: {', '.join(untouched)}.",
        f"- **Schedule**: {record['epochs_stage1']} + {record['epochs_stage2']} epochs "
        f"({record['samples_stage1']:,} + {record['samples_stage2']:,} random crops), crop {record['crop']}, "
        f"batch {record['batch']}, Adam lr 5e-4, weight decay 1e-8, seed 0, one Ray Train worker on CPU, "
        f"{record['seconds']:.0f} s. SPEC reference: 100 + 100 epochs at crop 480. Epoch losses (first → last): "
        f"{losses}.",
        "- **Commands**:",
        "",
        "  ```bash",
        f"  {record['command'].replace('python ', '.venv/bin/python ', 1)}",
        f"  .venv/bin/python scripts/make_results.py bundle --work {work} --ckpts {ckpts}",
        "  ```",
        "",
        "## Evaluation",
        "",
        *evaluation,
        "## Limitations",
        "",
        "- A short schedule on a 2-core machine (about 1/10 to 1/30 of the reference's epochs, crop 128 instead of "
        "480) and small training sets: the shared datasets are test sets, so each model only saw the other sets "
        "of its task. These numbers describe these weights, not the method at its reference schedule.",
    ]
    lines += [f"- Measured gap: {m}." for m in missed]
    if held == "mfiwhu":
        lines.append(
            "- The bundled sample pairs (`samples/mff`, the embedded default's input) are MFI-WHU crops: this "
            "model never saw them."
        )
    if task in ("medical", "general"):
        lines.append(
            "- Where both sources are black, the injected detail can lift the background a few grey levels; the "
            "CDDFuse-lineage SSIM (C1, C2 practically 0) scores that as a structural mismatch over the whole "
            "background (docs/RESULTS.md, *Diagnostic*)."
        )
    lines.append(
        "- BatchNorm: with `running` statistics a result depends on nothing but the image itself (batch-, "
        "composition- and tiling-independent); `build_model_from_config(config.model_copy(update={'bn_mode': "
        "'per_image'}))` plus `load_state_dict` gives the reference's per-image behaviour."
    )
    return "\n".join(lines) + "\n"


def _same_checkpoint(path: Path, model) -> bool:
    """Whether ``path`` already holds ``model``: the same config and bit-identical tensors."""
    import torch
    from safetensors.torch import load_file

    import maugif_core

    if not path.is_file() or maugif_core.read_checkpoint_config(path) != model.config:
        return False
    stored, state = load_file(path), model.state_dict()
    return set(stored) == set(state) and all(torch.equal(stored[k], state[k]) for k in state)


def cmd_bundle(work: Path, ckpts: Path, out_dir: Path = PRETRAINED) -> None:
    """Copy each task's designated checkpoint (:data:`BUNDLE`) into ``maugif_core/pretrained/<task>.safetensors``
    with the BatchNorm mode the evaluations favour, and write its model card ``<task>.md``."""
    import maugif_core

    mode = _bundle_mode(work)
    keys, _, _, envelope = ours_keys(work)
    out_dir.mkdir(parents=True, exist_ok=True)
    promoted = promotions(work)
    for task in BUNDLE:
        model_key = bundled_model(work, task, promoted)
        source = ckpts / model_key / "final" / "model.safetensors"
        if not source.is_file():
            print(f"{task}: {source} not trained yet, not bundled")
            continue
        trained = maugif_core.load_checkpoint(source, expect_task=task)
        rule = "max" if envelope.get(task, (False,))[0] else "none"
        update = {"bn_mode": mode, "envelope": rule}
        bundled = maugif_core.build_model_from_config(trained.config.model_copy(update=update))
        bundled.load_state_dict(trained.state_dict())
        target = out_dir / f"{task}.safetensors"
        if not _same_checkpoint(target, bundled):  # safetensors orders its metadata at random: no needless churn
            maugif_core.save_checkpoint(bundled, target)
        card = write_model_card(task, model_key, target, work, ckpts, keys[task])
        (out_dir / f"{task}.md").write_text(card)
        print(f"{task}: {target} ({target.stat().st_size:,} bytes) from {model_key}, bn_mode={mode}, envelope={rule}")


def cmd_report(work: Path, ckpts: Path, out: Path) -> None:
    """Write docs/RESULTS.md from the evaluation outputs under ``work``."""
    lines: list[str] = []
    verdicts: list[tuple[str, str, bool, str]] = []
    bn_rows: list = []
    body: list[str] = []
    ours, per_cells, run_cells, envelope = ours_keys(work)
    body.append("## Additive tasks: CDDFuse convention, next to the published rows of METRICS.md\n")
    body.append(
        "MI in nats, SSIM a sum over both sources, VIF a sum (METRICS.md). Bold: best among our runs and "
        "the classical baselines (published rows excluded).\n"
    )
    for key in ("tno", "roadscene", "mri_ct", "mri_pet", "mri_spect"):
        _additive_section(work, key, body, verdicts, bn_rows, ours[ADDITIVE_SETS[key].task], ours["general"])
    body.append("## Additive tasks: toolbox conventions\n")
    _toolbox_section(
        work,
        ("vifb",),
        "VIFB",
        DATASETS / "VIFB" / "vifb_reference_metrics_per_image.csv",
        VIFB_NAMES,
        body,
        verdicts,
        bn_rows,
        stretch=True,
        ours_key=ours["vif"],
    )
    _toolbox_section(
        work,
        ("mefb_even", "mefb_odd"),
        "MEFB (both folds)",
        DATASETS / "MEFB" / "mefb_reference_metrics_per_image.csv",
        MEFB_NAMES,
        body,
        verdicts,
        bn_rows,
        stretch=False,
        ours_key=ours["mef"],
    )
    body.append(
        "MEFB reports NMI, not MI, and its VIF/SSIM variants differ from ours: only the six metrics that "
        "share the VIFB toolbox code are compared with its published means.\n"
    )
    body.append("## Multi-focus (no published numbers on these exact files; VIFB convention)\n")
    for key in ("lytro", "mfiwhu"):
        _additive_section(work, key, body, verdicts, bn_rows, ours["mff"], ours["general"])
    body.append("## Multiplicative tasks (per-scene fits): Wald reduced resolution and full resolution\n")
    _spectral_section(work, body, verdicts)

    met = sum(1 for v in verdicts if v[2])
    lines += [
        "<!-- Generated by scripts/make_results.py report; do not edit by hand. -->",
        "# Results",
        "",
        "Fusion quality of MAUGIF next to the classical baselines and the published methods. How the numbers "
        "are made (splits, training, protocols, conventions): docs/EVALUATION.md. Regenerate with "
        "`python scripts/make_results.py all --rs-dir /tmp/rs_pairs` (manifests, training, evaluation, "
        "the bundled checkpoints and their cards, this file).",
        "",
        f"## Targets ({met} of {len(verdicts)} met)",
        "",
        "Additive targets are judged per task on the MAUGIF variant the measurements on this page favour: "
        f"the BatchNorm mode of the comparison at the end ({per_cells} set-metric cells for per-image "
        f"statistics, {run_cells} for running statistics, counted on the preset held-out models; one mode for "
        "every set), with the envelope "
        "(`AdditiveConfig.envelope`, fused luma capped at the brighter source) where it wins on that task's "
        "held-out sets (*Envelope* below). Judged with: "
        + ", ".join(f"{t} `{k}`" for t, k in ours.items())
        + ". Models: the held-out models of each task"
        + "".join(
            f"; for {t}, the promoted `{p}` family (*Ablations* below)" for t, (p, _, _) in promotions(work).items()
        )
        + ".",
        "",
        "| set | target | met | detail |",
        "|---|---|---|---|",
        *[f"| {s} | {t} | {'yes' if ok else '**no**'} | {d} |" for s, t, ok, d in verdicts],
        "",
        _caveats(work),
        "",
        *body,
        "## BatchNorm at inference: per-image vs running statistics (SPEC §1.1)\n",
    ]
    _bn_section(bn_rows, lines, per_cells, run_cells)
    lines.append("## Envelope: fused luma capped at the brighter source\n")
    _envelope_section(envelope, lines)
    lines.append("## Diagnostic: the SSIM gap on the medical sets\n")
    lines.append(
        "Without the envelope (`maugif:running`), MAUGIF adds a small positive detail where both sources are "
        "black, lifting the background. CDDFuse's SSIM (old-skimage defaults: data_range 2 on 0-255 data, so C1 "
        "and C2 are practically 0) scores such a lift as a structural mismatch over the whole background. The "
        "last column recomputes our SSIM with skimage itself, called as CDDFuse calls it: the low values are the "
        "model's background, not a convention mismatch. The rows with the envelope show what it removes.\n"
    )
    lines.extend(_background_lift(ckpts, (RUNNING, ENVELOPED)))
    lines.append("")
    lines.append("## Diagnostic: task models vs the general model on the sets neither saw\n")
    lines.extend(_task_vs_general(work, ckpts, ours))
    lines.append("")
    lines.append("## Ablations (a promoted family is judged in the targets above; the others are not)\n")
    lines.extend(_ablation_section(work, ckpts, ours))
    lines.append("")
    lines.append("## Trained checkpoints\n")
    _training_section(work, ckpts, lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({met}/{len(verdicts)} targets met)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["manifests", "train", "evaluate", "bundle", "report", "all"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/maugif_eval"), help="Work folder (manifests, outputs).")
    parser.add_argument("--ckpts", type=Path, default=Path("/tmp/maugif_ckpts"), help="Checkpoint folder.")
    parser.add_argument("--rs-dir", type=Path, help="Output folder of scripts/convert_remote_sensing.py.")
    parser.add_argument("--only", help="Comma-separated model keys (train) or set keys (evaluate).")
    parser.add_argument("--limit", type=int, help="Evaluate only the first N pairs of each set (a quick look).")
    parser.add_argument("--stage1-samples", type=int, default=Schedule.stage1_samples)
    parser.add_argument("--stage2-samples", type=int, default=Schedule.stage2_samples)
    parser.add_argument("--crop", type=int, default=Schedule.crop)
    parser.add_argument("--batch", type=int, default=Schedule.batch)
    parser.add_argument("--rs-steps", type=int, default=1000, help="Per-scene fitting steps of multiplicative MAUGIF.")
    parser.add_argument("--force", action="store_true", help="Retrain existing models / rerun finished evaluations.")
    parser.add_argument("--out", type=Path, default=RESULTS_MD, help="Where report writes the Markdown.")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    schedule = Schedule(args.stage1_samples, args.stage2_samples, args.crop, args.batch)
    if args.command in ("manifests", "all"):
        cmd_manifests(args.work)
    if args.command in ("train", "all"):
        cmd_train(args.work, args.ckpts, only, schedule, args.force)
    if args.command in ("evaluate", "all"):
        cmd_evaluate(args.work, args.ckpts, args.rs_dir, only, args.limit, args.rs_steps, args.force)
    if args.command in ("bundle", "all"):
        cmd_bundle(args.work, args.ckpts)
    if args.command in ("report", "all"):
        cmd_report(args.work, args.ckpts, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
