"""The results page's ablations: each next to its base model, and whether its family is promoted."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluate.results.compare import TARGET_METRICS, metrics_ahead
from pipeline.evaluate.results.methods import ADDITIVE_BASELINES
from pipeline.evaluate.results.published import PUBLISHED_MD
from pipeline.evaluate.results.rows import ablation_dir, method_means, read_evaluation
from pipeline.evaluate.results.rules import bundled_model, head_to_head, promotions
from pipeline.evaluate.results.tables import format_table
from pipeline.evaluate.results.targets import baseline_verdict, defusion_verdict
from pipeline.evaluate.results.testsets import (
    ABLATION_SCHEDULES,
    ABLATIONS,
    ADDITIVE_SETS,
    SET_TITLES,
    ablation_prefix,
    heldout_set,
)


def ablation_section(work: Path, ckpts: Path, ours_by_task: dict[str, str]) -> list[str]:
    """Each ablation next to its base model on the base model's held-out set (same training data, same
    schedule, same BatchNorm mode), with the baselines and the published rows, and the two targets' verdicts."""
    out: list[str] = []
    for name, (base, overrides) in ABLATIONS.items():
        key = heldout_set(base)
        test_set = ADDITIVE_SETS[key]
        ours = ours_by_task[test_set.task]
        ablation, base_rows = read_evaluation(ablation_dir(work, name) / key), read_evaluation(work / "eval" / key)
        schedule = ABLATION_SCHEDULES.get(ablation_prefix(name), {})
        change = ", ".join(f"{k} = {v:g}" for k, v in {**overrides, **schedule}.items())
        if ablation is None or base_rows is None:
            out.append(f"`{name}` ({change}): not evaluated yet (`make_results.py train/evaluate --only {name}`).\n")
            continue
        means = method_means(base_rows)
        ablated = method_means(ablation).get(ours, {})
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
        out.append(format_table(rows, TARGET_METRICS, bold_over=bold) + "\n")
        ok, text = baseline_verdict({**means, ours: ablated}, ADDITIVE_BASELINES, ours)
        wins = metrics_ahead(ablated, means.get(ours, {}), TARGET_METRICS)
        out.append(f"- Ahead of the preset model on {len(wins)}/8 ({', '.join(wins)}).")
        out.append(f"- Beats every classical baseline on >= 5 of 8: {'yes' if ok else 'no'} ({text}).")
        if test_set.published == "metrics_md":
            ok2, text2 = defusion_verdict(ablated, PUBLISHED_MD[key]["DeFusion"])
            out.append(f"- DeFusion's published level: {'yes' if ok2 else 'no'} ({text2}).")
        out.append("")
    promoted = promotions(work)
    for prefix in dict.fromkeys(ablation_prefix(name) for name in ABLATIONS):
        task = next(
            ADDITIVE_SETS[heldout_set(b)].task for n, (b, _) in ABLATIONS.items() if ablation_prefix(n) == prefix
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
                per_fold = head_to_head(work, prefix, promoted[task][0], task)
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
