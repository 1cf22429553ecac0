"""Multi-focus / multi-exposure comparison of the source decision (maugif_core.decision) with the learned
fusion and the classical baselines, through jobs/evaluate.py; writes docs/RESULTS_MULTIFOCUS.md.

For each set, two evaluation runs on the same pairs: the task's bundled weights with ``decision="none"`` (the
learned fusion ``Y_A + tau(d)``, as bundled before the decision) plus the baselines, and the same weights with
the task preset's decision rule. The table counts, per baseline, on how many of the eight target metrics the
decision beats it::

    python scripts/multifocus_results.py --work /tmp/maugif_mf            # Lytro, MFI-WHU, MEFB (even fold)
    python scripts/multifocus_results.py --work /tmp/maugif_mf --limit 4  # a quick look (not written to docs)

It also writes docs/img/mff_decision_crop.png, a crop of a bundled multi-focus sample fused both ways. With
``--experiments sweep.json`` (the ``--out`` of scripts/tune_decision.py) it adds a section listing every decision
rule the sweep tried and how many of the eight metrics each beats DWT and Laplacian on, per set.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.evaluate.results import testsets  # noqa: E402
from pipeline.evaluate.results.bundle import DECISION_FIELDS  # noqa: E402
from pipeline.evaluate.results.compare import TARGET_METRICS  # noqa: E402
from pipeline.evaluate.results.methods import ADDITIVE_BASELINES  # noqa: E402
from pipeline.evaluate.results.testsets import ADDITIVE_SETS  # noqa: E402

OUT_MD = REPO / "docs" / "RESULTS_MULTIFOCUS.md"
OUT_IMG = REPO / "docs" / "img" / "mff_decision_crop.png"
SETS = ("lytro", "mfiwhu", "mefb_even")
EXTRA_METRICS = ("ag", "psnr")
# Where each set stands relative to the bundled weights' training data (the cards in maugif_core/pretrained).
PROVENANCE = {
    "lytro": "the bundled `mff` weights were trained on Lytro: **not held out** (no Lytro-held-out model exists yet)",
    "mfiwhu": "held out: the bundled `mff` weights never saw MFI-WHU",
    "mefb_even": "held out: the bundled `mef` weights were trained on the odd fold",
}
# The rule each task is measured with (maugif_core.config.DecisionRule); whether its preset adopts it is
# stated in the table.
RULES = {"mff": "focus", "mef": "exposure"}
LEARNED, DECISION = "maugif (learned, decision none)", "maugif (decision)"


def _save_variants(task: str, work: Path) -> tuple[Path, Path, dict]:
    import maugif_core

    bundled = maugif_core.pretrained(task)
    rule = RULES[task]
    out = []
    for decision in ("none", rule):
        model = maugif_core.build_model_from_config(bundled.config.model_copy(update={"decision": decision}))
        model.load_state_dict(bundled.state_dict())
        out.append(maugif_core.save_checkpoint(model, work / "ckpt" / f"{task}-{decision}.safetensors"))
    fields = maugif_core.preset(task, decision=rule).model_dump(include=set(DECISION_FIELDS))
    return out[0], out[1], fields


def _evaluate(argv: list[str]) -> float:
    print("$ python jobs/evaluate.py " + " ".join(argv), flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "evaluate.py"), *argv], check=False)
    if done.returncode == 2:
        raise SystemExit(f"jobs/evaluate.py rejected its arguments: {argv}")
    return time.perf_counter() - started


def _means(folder: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with (folder / "metrics_mean.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["method"], {})[row["metric"]] = float(row["mean"])
    return out


def _pairs_scored(folder: Path) -> int:
    with (folder / "metrics_per_image.csv").open(newline="") as fh:
        return len({row["pair_id"] for row in csv.DictReader(fh)})


def _table(rows: dict[str, dict[str, float]]) -> list[str]:
    metrics = (*TARGET_METRICS, *EXTRA_METRICS)
    best = {m: max(r[m] for r in rows.values()) for m in metrics}
    lines = ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"**{r[m]:.4g}**" if r[m] == best[m] else f"{r[m]:.4g}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _wins(ours: dict[str, float], theirs: dict[str, float]) -> tuple[int, list[str]]:
    behind = [m for m in TARGET_METRICS if not ours[m] > theirs[m]]
    return len(TARGET_METRICS) - len(behind), behind


def _experiments(path: Path, command: str) -> list[str]:
    """A section from scripts/tune_decision.py's ``--out`` JSON: each candidate's wins against DWT and Laplacian
    per set, and the margin on the metrics it loses."""
    import json

    results = json.loads(path.read_text())
    sets = list(results)
    rows: dict[str, list[str]] = {}
    for key in sets:
        reference = results[key]["baselines"]
        for entry in results[key]["candidates"]:
            label = json.dumps(entry["candidate"], separators=(", ", ": ")) if entry["candidate"] else "bundled rule"
            cells = []
            for base in ("dwt", "laplacian"):
                wins, behind = _wins(entry["means"], reference[base])
                margins = ", ".join(f"{m} {entry['means'][m] - reference[base][m]:+.3g}" for m in behind)
                cells.append(f"{wins} ({margins})" if behind else str(wins))
            rows.setdefault(label, []).extend(cells)
    titles = [ADDITIVE_SETS[k].title for k in sets]
    lines = [
        "## Experiments: decision rules tried against DWT and Laplacian",
        "",
        f"Command: `{command}` (in-process: the bundled weights' maps computed once per pair, each rule applied "
        "with `maugif_core.decision.decide` and scored with `maugif_core.metrics.evaluate`, `vifb` convention; "
        "its bundled-rule row reproduces the tables above). Each cell: wins of 8 against the baseline, then the "
        "margin (ours minus theirs) on the metrics not won. A rule is a set of `AdditiveConfig` fields on top of "
        "the bundled `mff` config.",
        "",
        "| rule | " + " | ".join(f"{t} vs {b}" for t in titles for b in ("DWT", "Laplacian")) + " |",
        "|---" * (1 + 2 * len(titles)) + "|",
    ]
    lines += [f"| `{label}` | " + " | ".join(cells) + " |" for label, cells in rows.items()]
    return [*lines, ""]


def _crop_figure(out: Path) -> None:
    """Sources, learned fusion and decision fusion of a bundled sample, side by side, cropped at the focus
    boundary."""
    from PIL import Image

    import maugif_core

    a = np.asarray(Image.open(REPO / "samples" / "mff" / "source1" / "mfiwhu_1.png"))
    b = np.asarray(Image.open(REPO / "samples" / "mff" / "source2" / "mfiwhu_1.png"))
    bundled = maugif_core.pretrained("mff")
    tiles = [a, b]
    for decision in ("none", RULES["mff"]):
        model = maugif_core.build_model_from_config(bundled.config.model_copy(update={"decision": decision}))
        model.load_state_dict(bundled.state_dict())
        tiles.append(model.fuse(a, b))
    crop = [t[64:192, 64:192] for t in tiles]
    gap = np.full((crop[0].shape[0], 4) + crop[0].shape[2:], 255, np.uint8)
    row = np.concatenate([x for t in crop for x in (t, gap)][:-1], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="Folder for manifests, checkpoints, outputs.")
    parser.add_argument("--datasets", type=Path, default=testsets.DATASETS, help="The shared datasets folder.")
    parser.add_argument("--sets", default=",".join(SETS), help="Comma-separated set keys.")
    parser.add_argument("--limit", type=int, default=None, help="First N pairs per set; the docs are not written.")
    parser.add_argument("--reuse", action="store_true", help="Keep evaluation outputs that exist already.")
    parser.add_argument(
        "--experiments", type=Path, default=None, help="scripts/tune_decision.py --out JSON: adds the sweep's table."
    )
    parser.add_argument(
        "--experiments-command",
        default="python scripts/tune_decision.py --task mff --out sweep.json",
        help="The sweep's command line, as the document names it.",
    )
    args = parser.parse_args(argv)
    import maugif_core

    testsets.DATASETS = args.datasets  # the set listers read it at call time (worktrees sit elsewhere)
    sections: list[str] = []
    timings: list[str] = []
    for key in args.sets.split(","):
        test_set = ADDITIVE_SETS[key]
        task = test_set.task
        manifest = args.work / "manifests" / f"{key}.csv"
        testsets.write_manifest(manifest, test_set.list_pairs(), task)
        learned_ckpt, decision_ckpt, rule = _save_variants(task, args.work)
        common = ["--input", str(manifest), "--task", task, "--convention", test_set.convention, "--grid-pairs", "0"]
        common += ["--limit", str(args.limit)] if args.limit else []
        # OpenCV's Mertens, the multi-exposure peer, where its optional package is installed.
        mertens = task == "mef" and importlib.util.find_spec("cv2") is not None
        baselines = [*ADDITIVE_BASELINES, *(["mertens"] if mertens else [])]
        runs = {
            "learned": (learned_ckpt, ",".join(["maugif", *baselines])),
            "decision": (decision_ckpt, "maugif"),
        }
        for name, (ckpt, methods) in runs.items():
            output = args.work / "eval" / key / name
            if args.reuse and (output / "metrics_mean.csv").is_file():
                continue
            seconds = _evaluate([*common, "--checkpoint", str(ckpt), "--methods", methods, "--output", str(output)])
            timings.append(f"{key}/{name}: {seconds:.0f} s")
        learned = _means(args.work / "eval" / key / "learned")
        decision = _means(args.work / "eval" / key / "decision")
        rows = {DECISION: decision["maugif"], LEARNED: learned["maugif"]}
        rows.update({b: learned[b] for b in baselines})
        n_pairs = _pairs_scored(args.work / "eval" / key / "decision")
        lines = [f"## {test_set.title} (`{task}`, {n_pairs} pairs, `{test_set.convention}` convention)", ""]
        lines += [f"Provenance: {PROVENANCE[key]}.", ""]
        lines += _table(rows) + [""]
        lines += ["| decision vs | wins (of 8) | behind on |", "|---|---|---|"]
        for other in (LEARNED, *baselines):
            wins, behind = _wins(rows[DECISION], rows[other])
            lines.append(f"| {other} | {wins} | {', '.join(behind) or '-'} |")
        adopted = maugif_core.preset(task).decision == RULES[task]
        lines += ["", f"Decision rule measured: `{rule}`.", ""]
        lines += [
            f"The `{task}` preset {'adopts' if adopted else 'does **not** adopt'} it "
            f"(`maugif_core.preset('{task}').decision == '{maugif_core.preset(task).decision}'`).",
            "",
        ]
        sections += lines
    if args.experiments is not None:
        sections += _experiments(args.experiments, args.experiments_command)
    print("\n".join(sections))
    print("timings: " + "; ".join(timings))
    if args.limit:
        return 0
    _crop_figure(OUT_IMG)
    header = [
        "<!-- generated by scripts/multifocus_results.py; do not edit -->",
        "# Multi-focus and multi-exposure: the source decision against the learned fusion and the baselines",
        "",
        "Command: `python scripts/multifocus_results.py --work /tmp/maugif_mf` (runs `jobs/evaluate.py` twice per "
        "set: the bundled weights with `decision=none` plus the baselines, then the same weights with the task "
        "preset's decision rule, `maugif_core.decision`). Means over the pairs; bold = best; the eight target "
        "metrics are " + ", ".join(TARGET_METRICS) + " (higher is better); ag and psnr are shown, not counted. "
        "A win is a strictly higher mean.",
        "",
        "![crop](img/mff_decision_crop.png)",
        "",
        "*Crop of the bundled sample `mfiwhu_1` (MFI-WHU, never seen in training): source A, source B, learned "
        "fusion (`decision=none`), source decision (`mff` preset).*",
        "",
    ]
    OUT_MD.write_text("\n".join(header + sections).rstrip() + "\n")
    print(f"wrote {OUT_MD.relative_to(REPO)} and {OUT_IMG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
