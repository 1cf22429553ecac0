"""The multiplicative (remote-sensing) sections of the results page."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluate.results.experiments import multiplicative_fingerprint
from pipeline.evaluate.results.methods import SPECTRAL_BASELINES
from pipeline.evaluate.results.rows import method_means, read_run
from pipeline.evaluate.results.tables import format_table, gap_text
from pipeline.evaluate.results.testsets import RS_SETS


def code_note(work: Path, key: str) -> str:
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


def spectral_section(work: Path, lines: list[str], verdicts: list) -> None:
    for key, (title, _task, _ids) in RS_SETS.items():
        wald = read_run(work / "eval" / f"{key}_wald")
        full = read_run(work / "eval" / f"{key}_full")
        if wald is None:
            lines.append(f"### {title}\n\nNot evaluated yet.\n")
            continue
        means = method_means(wald)
        full_means = method_means(full) if full is not None else {}
        methods = ["maugif", *SPECTRAL_BASELINES]
        rows = [
            (m, {**means.get(m, {}), **{k: v for k, v in full_means.get(m, {}).items() if k != "seconds"}})
            for m in methods
            if m in means
        ]
        metrics = ("sam", "ergas", "q2n", "psnr", "qnr", "d_lambda", "d_s", "seconds")
        lines.append(f"### {title} ({wald['pair_id'].nunique()} scene(s))\n")
        lines.append(format_table(rows, metrics) + "\n")
        lines.append(code_note(work, key) + "\n")
        ours = means.get("maugif", {})
        parts, ok = [], True
        for base in ("bicubic", "brovey", "gihs", "gsa"):
            if base in means and ours:
                for m in ("sam", "ergas"):
                    ok &= ours[m] < means[base][m]
                    if ours[m] >= means[base][m]:
                        parts.append(f"{base} {gap_text(ours[m], means[base][m], m)}")
        verdicts.append(
            (
                title,
                "lower SAM and ERGAS than bicubic, Brovey, GIHS, GSA (Wald)",
                ok,
                "met" if ok else "behind: " + "; ".join(parts),
            )
        )


def rs_steps(work: Path) -> str:
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
