"""Multiplicative MAUGIF: how many back-projection steps (``consistency_steps``) under Wald's protocol.

Each scene of a manifest (``pair_id,uri_a,uri_b``: low-resolution MS/HS as A, PAN/MS as B) is degraded as
``jobs/evaluate.py --protocol wald`` degrades it, fitted **once**, then fused with 0, 1, 2 and 3 steps (the same
fitted state; only the fusion rule differs), and scored against the original A with bicubic upsampling beside
it. ``--gain-a`` degrades A with another MTF gain than the model assumes (0.3), to see whether the steps still help
when the sensor is not the model's.

    .venv/bin/python benchmarks/bench_consistency.py --manifest /tmp/maugif_eval/manifests/landsat.csv \\
        --task pansharpen [--gain-a 0.45] [--same-grid-ratio 3]

The manifests are written by ``scripts/make_results.py manifests`` from ``scripts/convert_remote_sensing.py``'s
output.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import torch

import maugif_core
from maugif_core.baselines.spectral import upsample_bicubic
from maugif_core.metrics.evaluate import evaluate_reduced
from maugif_core.multiplicative.model import MultiplicativeMAUGIF
from pipeline.config.eval_config import EvalJobConfig
from pipeline.evaluate.evaluation import prepare_scene
from pipeline.io.readers import read_image

STEPS = (0, 1, 2, 3)
METRICS = ("sam", "ergas", "q2n", "psnr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--task", required=True, choices=["pansharpen", "hsi_msi"])
    parser.add_argument("--gain-a", type=float, default=0.3, help="Wald MTF gain of A (the evaluation's: 0.3).")
    parser.add_argument("--gain-b", type=float, default=0.15, help="Wald MTF gain of B (the evaluation's: 0.15).")
    parser.add_argument("--same-grid-ratio", type=int, help="A and B share one grid: degrade A by this ratio.")
    parser.add_argument("--fit-steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # The job's own scene preparation (pipeline.evaluate.evaluation.prepare_scene): the same crop and Wald degradation.
    config = EvalJobConfig(
        input=args.manifest,
        task=args.task,
        output="unused",
        protocol="wald",
        nyquist_gain_a=args.gain_a,
        nyquist_gain_b=args.gain_b,
        same_grid_ratio=args.same_grid_ratio,
    )
    scores: dict[str, list[dict[str, float]]] = {}
    with open(args.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        scene = prepare_scene(read_image(row["uri_a"])[0], read_image(row["uri_b"])[0], config)
        low, r = scene.reference, scene.ratio
        image_a = scene.image_a
        image_b = scene.image_b[..., 0] if scene.image_b.shape[2] == 1 else scene.image_b
        fitted = maugif_core.build_model(args.task, steps=args.fit_steps)
        fitted.fit(image_a, image_b)
        scores.setdefault("bicubic", []).append(evaluate_reduced(upsample_bicubic(image_a, r), low, r))
        for steps in STEPS:
            model = MultiplicativeMAUGIF(fitted.fitted_config().model_copy(update={"consistency_steps": steps}))
            model.load_state_dict(fitted.state_dict())
            scores.setdefault(f"{steps} steps", []).append(evaluate_reduced(model.fuse(image_a, image_b), low, r))
        print(row["pair_id"], {k: round(v[-1]["sam"], 4) for k, v in scores.items()}, flush=True)
    print(f"\n{len(rows)} scenes, Wald gains A {args.gain_a} / B {args.gain_b}, {args.fit_steps} fit steps")
    print("| method | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, values in scores.items():
        print(f"| {name} | " + " | ".join(f"{np.mean([v[m] for v in values]):.4f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main()
