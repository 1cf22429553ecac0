"""The additive sections of the results page: one set in the CDDFuse convention, or a toolbox set ranked among
its published methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.evaluate.results.compare import LOWER, TARGET_METRICS
from pipeline.evaluate.results.methods import ADDITIVE_BASELINES, ENVELOPED, PER_IMAGE, RUNNING, VIFB_FUSED
from pipeline.evaluate.results.published import PUBLISHED_MD, published_toolbox
from pipeline.evaluate.results.rows import method_means, read_evaluation, read_run
from pipeline.evaluate.results.rules import judged_model, set_rows
from pipeline.evaluate.results.tables import format_table, gap_text
from pipeline.evaluate.results.targets import baseline_verdict, defusion_verdict
from pipeline.evaluate.results.testsets import ADDITIVE_SETS


def additive_section(
    work: Path,
    key: str,
    lines: list[str],
    verdicts: list[tuple[str, str, bool, str]],
    bn_rows: list,
    ours: str,
    general_key: str,
) -> None:
    test_set = ADDITIVE_SETS[key]
    rows = set_rows(work, key)
    if rows is None:
        lines.append(f"### {test_set.title}\n\nNot evaluated yet (`make_results.py evaluate --only {key}`).\n")
        return
    general = read_evaluation(work / "eval_general" / key)
    means = method_means(rows)
    n = rows["pair_id"].nunique()
    table_rows = [
        (f"MAUGIF ({judged_model(work, key)}, per-image BN)", means.get(PER_IMAGE, {})),
        ("MAUGIF, running BN", means.get(RUNNING, {})),
        ("MAUGIF, running BN + envelope", means.get(ENVELOPED, {})),
    ]
    if general is not None:
        gm = method_means(general)
        table_rows.append((f"MAUGIF general/mixed, `{general_key}`", gm.get(general_key, {})))
    table_rows += [(b, means[b]) for b in ADDITIVE_BASELINES if b in means]
    ours_n = len(table_rows)
    if test_set.published == "metrics_md":
        table_rows += [
            (f"{m} (published)", dict(zip(TARGET_METRICS, v, strict=True))) for m, v in PUBLISHED_MD[key].items()
        ]
    metrics = (*TARGET_METRICS, "ag", "psnr", "seconds") if test_set.published != "metrics_md" else TARGET_METRICS
    lines.append(f"### {test_set.title} ({n} pairs, {test_set.convention} convention)\n")
    lines.append(format_table(table_rows, metrics, bold_over=ours_n) + "\n")
    ok, text = baseline_verdict(means, ADDITIVE_BASELINES, ours)
    verdicts.append((test_set.title, "beats every classical baseline on >= 5 of 8", ok, text))
    if test_set.published == "metrics_md":
        ok2, text2 = defusion_verdict(means.get(ours, {}), PUBLISHED_MD[key]["DeFusion"])
        verdicts.append((test_set.title, "DeFusion's published level", ok2, text2))
    per, run = means.get("maugif", {}), means.get("maugif:running", {})
    if per and run:
        bn_rows.append((test_set.title, per, run))


def toolbox_section(
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

    frames = [f for f in (set_rows(work, k) for k in keys) if f is not None]
    if not frames:
        lines.append(f"### {title}\n\nNot evaluated yet.\n")
        return
    frames += [f for f in (read_run(work / "eval_peers" / k) for k in keys) if f is not None]
    rows = pd.concat(frames, ignore_index=True)
    means = method_means(rows)
    images = set(rows["pair_id"].astype(str))
    published = published_toolbox(table, names, images)
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
    lines.append(format_table(ours_rows + rank_rows, metrics, bold_over=len(ours_rows)) + "\n")
    ours = means.get(ours_key, {})
    ranks = []
    for m in metrics:
        if m in ours:
            better = sum(1 for v in published.values() if m in v and (v[m] < ours[m] if m in LOWER else v[m] > ours[m]))
            ranks.append(f"{m} {better + 1}/{len(published) + 1}")
    lines.append(f"Rank of MAUGIF ({ours_key}) among the published methods plus ours (1 = best): {', '.join(ranks)}.\n")
    ok, text = baseline_verdict(means, ADDITIVE_BASELINES, ours_key)
    verdicts.append((title, "beats every classical baseline on >= 5 of 8", ok, text))
    if stretch:
        parts, ok = [], True
        for m in ("qabf", "mi"):
            if m in ours:
                ok &= ours[m] >= median[m]
                parts.append(gap_text(ours[m], median[m], m))
        verdicts.append((title, "stretch: Qabf and MI >= median published method", ok, "; ".join(parts)))
    per, run = means.get("maugif", {}), means.get("maugif:running", {})
    if per and run:
        bn_rows.append((title, per, run))
