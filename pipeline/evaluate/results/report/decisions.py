"""The results page's sections on the inference decisions: BatchNorm statistics and the envelope."""

from __future__ import annotations

from pipeline.evaluate.results.compare import DECISION_METRICS, metrics_ahead
from pipeline.evaluate.results.paths import PRETRAINED
from pipeline.evaluate.results.rules import choose_bn_mode, config_bn_mode
from pipeline.evaluate.results.tables import fmt
from pipeline.evaluate.results.testsets import BUNDLE


def bn_section(bn_rows: list, lines: list[str], per_cells: int, run_cells: int) -> None:
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
        per_wins = metrics_ahead(per, run, metrics)
        run_wins = metrics_ahead(run, per, metrics)
        lines.append(
            f"| {title} | {len(per_wins)}/{len(metrics)} ({', '.join(per_wins)}) | "
            f"{len(run_wins)}/{len(metrics)} ({', '.join(run_wins)}) | "
            f"{fmt(per.get('qabf'))} / {fmt(run.get('qabf'))} | "
            f"{fmt(per.get('ssim'))} / {fmt(run.get('ssim'))} |"
        )
    lines.append("")
    choice = config_bn_mode(choose_bn_mode(per_cells, run_cells))
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


def envelope_section(envelope: dict[str, tuple[bool, int, int]], lines: list[str]) -> None:
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
