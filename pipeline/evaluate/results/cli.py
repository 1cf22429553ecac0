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

The pieces: :mod:`~pipeline.evaluate.results.testsets` (sets, splits, manifests),
:mod:`~pipeline.evaluate.results.schedule` (training), :mod:`~pipeline.evaluate.results.experiments` (evaluation
runs), :mod:`~pipeline.evaluate.results.rules` (BatchNorm mode, envelope, promotion),
:mod:`~pipeline.evaluate.results.bundle` (checkpoints and model cards), :mod:`~pipeline.evaluate.results.report`
(docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.evaluate.results.bundle import cmd_bundle
from pipeline.evaluate.results.experiments import cmd_evaluate
from pipeline.evaluate.results.paths import RESULTS_MD
from pipeline.evaluate.results.report import cmd_report
from pipeline.evaluate.results.schedule import Schedule, cmd_train
from pipeline.evaluate.results.testsets import cmd_manifests


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
