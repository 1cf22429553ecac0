"""Choose the additive source-decision rule's parameters by measurement (maugif_core.decision).

In-process and fast (no Ray): each pair's detail maps are computed once with the task's bundled model, each
candidate rule is applied to them with :func:`maugif_core.decision.decide`, and the fused images are scored
with :func:`maugif_core.metrics.evaluate` next to the classical baselines. Prints, per set, the mean of the
eight target metrics and how many of them each candidate beats each baseline on. The recorded comparison
(docs/RESULTS_MULTIFOCUS.md) is made by scripts/multifocus_results.py through jobs/evaluate.py; this script is
the sweep that chose the presets::

    python scripts/tune_decision.py --task mff --sets lytro,mfiwhu --limit 8
    python scripts/tune_decision.py --task mef --sets mefb_even,mefb_odd --limit 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import maugif_core  # noqa: E402
from maugif_core import baselines  # noqa: E402
from maugif_core.additive import compose_colour, prepare_pair  # noqa: E402
from maugif_core.decision import decide  # noqa: E402
from maugif_core.metrics import evaluate  # noqa: E402
from pipeline.evaluate.results import testsets  # noqa: E402
from pipeline.evaluate.results.compare import TARGET_METRICS  # noqa: E402
from pipeline.evaluate.results.methods import ADDITIVE_BASELINES  # noqa: E402
from pipeline.evaluate.results.testsets import ADDITIVE_SETS  # noqa: E402


def _read(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def _wins(ours: dict[str, float], theirs: dict[str, float]) -> int:
    return sum(ours[m] > theirs[m] for m in TARGET_METRICS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mff", choices=["mff", "mef"])
    parser.add_argument("--sets", default="lytro,mfiwhu", help="Comma-separated set keys of make_results.")
    parser.add_argument("--limit", type=int, default=0, help="First N pairs of each set (0: all).")
    parser.add_argument(
        "--grid",
        default='{"inject_gain": [0.0, 0.5, 1.0]}',
        help="JSON object: AdditiveConfig field -> list of values; every combination is a candidate, the other "
        "fields keep the config's defaults.",
    )
    parser.add_argument("--datasets", type=Path, default=testsets.DATASETS, help="The shared datasets folder.")
    args = parser.parse_args(argv)
    testsets.DATASETS = args.datasets  # the set listers read it at call time (worktrees sit elsewhere)
    torch.set_num_threads(1)
    model = maugif_core.pretrained(args.task)
    base_cfg = model.config
    rule = "focus" if args.task == "mff" else "exposure"
    grid = json.loads(args.grid)
    keys = list(grid)
    candidates = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    for set_key in args.sets.split(","):
        pairs = ADDITIVE_SETS[set_key].list_pairs()
        pairs = pairs[: args.limit] if args.limit else pairs
        scores: dict[str, list[dict[str, float]]] = {}
        for _pair_id, uri_a, uri_b in pairs:
            image_a, image_b = _read(uri_a), _read(uri_b)
            for name in ("maugif", *ADDITIVE_BASELINES):
                fused = (
                    model.fuse(image_a, image_b)
                    if name == "maugif"
                    else baselines.fuse(name, image_a, image_b, task=args.task)
                )
                scores.setdefault(name, []).append(evaluate(fused, image_a, image_b, "vifb"))
            prep = prepare_pair(image_a, image_b)
            luma_a = torch.from_numpy(prep.luma_a)[None, None]
            luma_b = torch.from_numpy(prep.luma_b)[None, None]
            learned, detail_b, detail_a = model.fuse_luma(luma_a, luma_b, details=True)
            for cand in candidates:
                cfg = base_cfg.model_copy(update={"decision": rule, **cand})
                fused_y = decide(luma_a, luma_b, detail_b, detail_a, learned, cfg).fused_y
                fused = compose_colour(fused_y[0, 0].numpy(), prep, cfg.chroma)
                label = " ".join(f"{k}={v}" for k, v in cand.items())
                scores.setdefault(label, []).append(evaluate(fused, image_a, image_b, "vifb"))
        means = {
            name: {m: float(np.mean([s[m] for s in rows])) for m in TARGET_METRICS} for name, rows in scores.items()
        }
        print(f"\n## {set_key} ({len(pairs)} pairs)")
        print("| method | " + " | ".join(TARGET_METRICS) + " | wins vs " + "/".join(ADDITIVE_BASELINES) + " |")
        for name, mean in means.items():
            wins = "/".join(str(_wins(mean, means[b])) for b in ADDITIVE_BASELINES)
            print(f"| {name} | " + " | ".join(f"{mean[m]:.4g}" for m in TARGET_METRICS) + f" | {wins} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
