"""Choose the additive source-decision rule's parameters by measurement (maugif_core.decision).

In-process and fast (no Ray): each pair's detail maps and learned fusion are computed once with the task's
bundled model (as :meth:`AdditiveMAUGIF.fuse_with_details` does: same luma/chroma split, same colour
composition), the baselines are scored once per set (cached under ``--cache``), and each candidate rule is
applied to the cached maps with :func:`maugif_core.decision.decide` and scored with
:func:`maugif_core.metrics.evaluate` (the ``vifb`` convention, as the evaluation). Prints, per set, the mean of
the eight target metrics and how many of them each candidate beats each baseline on; ``--out`` also writes them
as JSON. The recorded comparison (docs/RESULTS_MULTIFOCUS.md) is made by scripts/multifocus_results.py through
jobs/evaluate.py; this script is the sweep that chose the presets::

    python scripts/tune_decision.py --task mff --sets lytro,mfiwhu --limit 8
    python scripts/tune_decision.py --task mef --sets mefb_even,mefb_odd --limit 8
    python scripts/tune_decision.py --task mff --candidates cands.json --cache /tmp/sweep --out /tmp/sweep/r.json

A candidate is a dict of AdditiveConfig fields applied on top of the bundled model's config (``{}`` is the
bundled rule itself). ``--grid`` gives them as a product of value lists, ``--candidates`` as a JSON list.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
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

CONVENTION = "vifb"


def _read(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def _wins(ours: dict[str, float], theirs: dict[str, float]) -> int:
    return sum(ours[m] > theirs[m] for m in TARGET_METRICS)


def _label(cand: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in cand.items()) or "(bundled rule)"


def _baseline_means(set_key: str, pairs, task: str, learned_model, cache: Path | None) -> dict[str, dict]:
    """Mean target metrics of the learned fusion (``decision=none``) and the baselines; cached per set."""
    path = cache / f"baselines-{set_key}-{len(pairs)}.json" if cache is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    scores: dict[str, list[dict[str, float]]] = {}
    for _pair_id, uri_a, uri_b in pairs:
        image_a, image_b = _read(uri_a), _read(uri_b)
        for name in ("learned", *ADDITIVE_BASELINES):
            fused = (
                learned_model.fuse(image_a, image_b)
                if name == "learned"
                else baselines.fuse(name, image_a, image_b, task=task)
            )
            scores.setdefault(name, []).append(evaluate(fused, image_a, image_b, CONVENTION))
    means = {n: {m: float(np.mean([s[m] for s in rows])) for m in TARGET_METRICS} for n, rows in scores.items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(means, indent=1))
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mff", choices=["mff", "mef"])
    parser.add_argument("--sets", default=None, help="Comma-separated set keys (default: the task's sets).")
    parser.add_argument("--limit", type=int, default=0, help="First N pairs of each set (0: all).")
    parser.add_argument(
        "--grid",
        default=None,
        help="JSON object: AdditiveConfig field -> list of values; every combination is a candidate on top of "
        "the bundled model's config.",
    )
    parser.add_argument("--candidates", type=Path, default=None, help="JSON file: a list of candidate dicts.")
    parser.add_argument("--cache", type=Path, default=None, help="Folder caching the baselines' scores per set.")
    parser.add_argument("--out", type=Path, default=None, help="Write every candidate's means and wins as JSON.")
    parser.add_argument("--datasets", type=Path, default=testsets.DATASETS, help="The shared datasets folder.")
    args = parser.parse_args(argv)
    testsets.DATASETS = args.datasets  # the set listers read it at call time (worktrees sit elsewhere)
    torch.set_num_threads(1)
    model = maugif_core.pretrained(args.task)
    base_cfg = model.config
    learned_model = maugif_core.build_model_from_config(base_cfg.model_copy(update={"decision": "none"}))
    learned_model.load_state_dict(model.state_dict())
    sets = args.sets or ("lytro,mfiwhu" if args.task == "mff" else "mefb_even,mefb_odd")
    candidates: list[dict] = [{}]
    if args.grid:
        grid = json.loads(args.grid)
        candidates += [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if args.candidates:
        candidates += json.loads(args.candidates.read_text())
    results: dict[str, dict] = {}
    for set_key in sets.split(","):
        pairs = ADDITIVE_SETS[set_key].list_pairs()
        pairs = pairs[: args.limit] if args.limit else pairs
        started = time.perf_counter()
        reference = _baseline_means(set_key, pairs, args.task, learned_model, args.cache)
        print(f"\n## {set_key} ({len(pairs)} pairs; baselines {time.perf_counter() - started:.0f} s)", flush=True)
        # The model's maps, once per pair (the decision is applied to them below, as fuse_luma does).
        cached = []
        for _pair_id, uri_a, uri_b in pairs:
            image_a, image_b = _read(uri_a), _read(uri_b)
            prep = prepare_pair(image_a, image_b)
            luma_a = torch.from_numpy(prep.luma_a)[None, None]
            luma_b = torch.from_numpy(prep.luma_b)[None, None]
            learned, detail_b, detail_a = learned_model.fuse_luma(luma_a, luma_b, details=True)
            cached.append((image_a, image_b, prep, luma_a, luma_b, detail_b, detail_a, learned))
        header = " | ".join(TARGET_METRICS)
        print(f"| candidate | {header} | wins vs " + "/".join(ADDITIVE_BASELINES) + " |")
        for name in ("learned", *ADDITIVE_BASELINES):
            row = " | ".join(f"{reference[name][m]:.4g}" for m in TARGET_METRICS)
            print(f"| {name} | {row} | |")
        set_results = results.setdefault(set_key, {"baselines": reference, "candidates": []})
        for cand in candidates:
            cfg = base_cfg.model_copy(update=cand)
            scores = []
            for image_a, image_b, prep, luma_a, luma_b, detail_b, detail_a, learned in cached:
                fused_y = decide(luma_a, luma_b, detail_b, detail_a, learned, cfg).fused_y
                fused = compose_colour(fused_y[0, 0].numpy(), prep, cfg.chroma)
                scores.append(evaluate(fused, image_a, image_b, CONVENTION))
            mean = {m: float(np.mean([s[m] for s in scores])) for m in TARGET_METRICS}
            wins = {b: _wins(mean, reference[b]) for b in ADDITIVE_BASELINES}
            set_results["candidates"].append({"candidate": cand, "means": mean, "wins": wins})
            row = " | ".join(f"{mean[m]:.4g}" for m in TARGET_METRICS)
            print(f"| {_label(cand)} | {row} | {'/'.join(str(w) for w in wins.values())} |", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
