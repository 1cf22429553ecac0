"""The evaluated test sets, the models trained for them (held-out splits, ablations), the bundled model per task,
and the test-set and training manifests (``make_results.py manifests``).

Splits (docs/EVALUATION.md explains them): every test image is scored by a model that never saw it.
Additive test sets that have a sibling set of the same task are evaluated with a model trained on the siblings
(leave-one-dataset-out); MEFB, the only multi-exposure set, is split in two folds by scene (even / odd
position in name order), each fold scored by the model trained on the other. The ``general`` model is trained
on one set per task and evaluated on the sets it did not see.

The datasets are read in place from ``../shared/datasets`` (:data:`DATASETS`, read at call time by the set
listers, so that a caller may point it elsewhere)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluate.results.paths import REPO

DATASETS = REPO.parent / "shared" / "datasets"

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

TASK_TITLES = {
    "vif": "visible-infrared",
    "medical": "medical (CT / PET / SPECT + MRI)",
    "mff": "multi-focus",
    "mef": "multi-exposure",
    "general": "one model for every additive task",
}

SET_TITLES = {key: s.title for key, s in ADDITIVE_SETS.items()}


def heldout_set(model_key: str) -> str | None:
    return model_key.split("heldout-", 1)[1] if "heldout-" in model_key else None


def ablation_prefix(name: str) -> str:
    return name.split("/heldout-", 1)[0]


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
