"""The model card of a bundled checkpoint (``maugif_core/pretrained/<task>.md``)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluate.results.compare import TARGET_METRICS
from pipeline.evaluate.results.methods import ADDITIVE_BASELINES, ENVELOPED, PER_IMAGE, RUNNING, VARIANT_TITLES
from pipeline.evaluate.results.published import PUBLISHED_MD
from pipeline.evaluate.results.rows import eval_means, method_means, read_evaluation
from pipeline.evaluate.results.rules import set_rows
from pipeline.evaluate.results.tables import fmt, format_table
from pipeline.evaluate.results.targets import baseline_verdict, defusion_verdict
from pipeline.evaluate.results.testsets import ADDITIVE_SETS, GENERAL_SETS, SET_TITLES, TASK_TITLES, heldout_set


def _card_evaluation(work: Path, model_key: str, mode_key: str) -> tuple[list[str], list[str]]:
    """The card's evaluation section (held-out scores of exactly these weights) and the targets it misses."""
    lines: list[str] = []
    missed: list[str] = []
    mode_name = f"`{mode_key}`"
    held = heldout_set(model_key)
    if held is not None:
        test_set = ADDITIVE_SETS[held]
        held_rows = set_rows(work, held)
        means = method_means(held_rows) if held_rows is not None else {}
        means.update(eval_means(work, "eval_peers", held))
        if not means:
            return [f"Not evaluated yet (`make_results.py evaluate --only {held}`).", ""], missed
        n = len(held_rows["pair_id"].unique())
        rows = [
            (f"this model as bundled ({mode_name})", means.get(mode_key, {})),
            *[
                (f"same weights, {VARIANT_TITLES[k]}", means[k])
                for k in (PER_IMAGE, RUNNING, ENVELOPED)
                if k != mode_key and k in means
            ],
            *[(b, means[b]) for b in (*ADDITIVE_BASELINES, "mertens") if b in means],
        ]
        bold = len(rows)
        if test_set.published == "metrics_md":
            rows += [
                (f"{m} (published)", dict(zip(TARGET_METRICS, v, strict=True))) for m, v in PUBLISHED_MD[held].items()
            ]
        metrics = (*TARGET_METRICS, "ag", "psnr") if test_set.published != "metrics_md" else TARGET_METRICS
        lines += [
            f"Held-out set **{test_set.title}** ({n} pairs, never seen in training), `{test_set.convention}` "
            "metric convention (docs/EVALUATION.md), means over the pairs; bold = best among our rows and the "
            "classical baselines:",
            "",
            format_table(rows, metrics, bold_over=bold),
            "",
        ]
        ok, text = baseline_verdict(means, ADDITIVE_BASELINES, mode_key)
        lines.append(
            f"- Target *beats every classical baseline on >= 5 of 8*: {'met' if ok else '**missed**'} ({text})."
        )
        if not ok:
            missed.append(f"does not beat every classical baseline on {test_set.title} ({text})")
        if test_set.published == "metrics_md":
            ok2, text2 = defusion_verdict(means.get(mode_key, {}), PUBLISHED_MD[held]["DeFusion"])
            lines.append(f"- Target *DeFusion's published level*: {'met' if ok2 else '**missed**'} ({text2}).")
            if not ok2:
                missed.append(f"below DeFusion's published level on {test_set.title} ({text2})")
        lines.append("")
        return lines, missed
    # The general model: every set it did not see, next to that set's baselines.
    lines += [
        "Held-out sets (the sets of every task it did not see), means over the pairs, each in its set's metric "
        f"convention; this model as bundled ({mode_name}):",
        "",
        "| set | pairs | " + " | ".join(TARGET_METRICS) + " | beats every classical baseline on >= 5 of 8 |",
        "|---|---|" + "---|" * len(TARGET_METRICS) + "---|",
    ]
    for key in GENERAL_SETS:
        rows = read_evaluation(work / "eval_general" / key)
        if rows is None:
            lines.append(f"| {SET_TITLES[key]} | not evaluated yet | " + "| " * len(TARGET_METRICS) + "|")
            continue
        ours = method_means(rows).get(mode_key, {})
        means = {**eval_means(work, "eval", key), mode_key: ours}
        ok, text = baseline_verdict(means, ADDITIVE_BASELINES, mode_key)
        if not ok:
            missed.append(f"does not beat every classical baseline on {SET_TITLES[key]}")
        lines.append(
            f"| {SET_TITLES[key]} ({ADDITIVE_SETS[key].convention}) | {rows['pair_id'].nunique()} | "
            + " | ".join(fmt(ours.get(m)) for m in TARGET_METRICS)
            + f" | {'yes' if ok else 'no'}: {text} |"
        )
    lines += ["", "The baselines' own numbers on these sets are in docs/RESULTS.md.", ""]
    return lines, missed


def sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# What each source decision does, for the card (maugif_core.decision).
DECISION_TEXT = {
    "focus": "a per-pixel focus decision from both detail maps and the sources' Laplacian energy",
    "exposure": "a per-pixel well-exposedness decision from both detail maps and the sources' exposure-weighted "
    "local contrast",
}


def decision_lines(task: str, config, trained_decision: str) -> list[str]:
    """The card's *Source decision* bullet where the bundled config composes from the sources (none otherwise):
    the rule, where its numbers are (docs/RESULTS_MULTIFOCUS.md) and the tiling halo it adds."""
    from maugif_core.additive import DECODER_RADIUS
    from maugif_core.decision import decision_radius

    if config.decision == "none":
        return []
    what = DECISION_TEXT.get(config.decision, "a per-pixel source decision")
    return [
        f'- **Source decision** (same weights): the stored config sets `decision="{config.decision}"` with the '
        f"`{task}` preset's parameters, chosen by measurement after training (`scripts/tune_decision.py`; "
        f"`maugif_core.decision`: {what}, refined and composed from the sources, the learned injection at "
        f"gain {config.inject_gain:g}, the learned fusion kept where the decision is uncertain). The evaluation "
        f"table below is of the trained checkpoint's rule (`decision=\"{trained_decision}\"`); the decision's "
        "numbers are in "
        "[docs/RESULTS_MULTIFOCUS.md](../../docs/RESULTS_MULTIFOCUS.md) (`scripts/multifocus_results.py`). "
        f"Receptive-field radius (tiling halo): {DECODER_RADIUS} + {decision_radius(config)} pixels."
    ]


def write_model_card(task: str, model_key: str, target: Path, work: Path, ckpts: Path, mode_key: str) -> str:
    """The Markdown model card of one bundled checkpoint (``mode_key``: the evaluation method key that matches
    its stored config); every number from the records and evaluations."""
    import maugif_core

    record = json.loads((ckpts / model_key / "train_record.json").read_text())
    config = maugif_core.read_checkpoint_config(target)
    trained = maugif_core.read_checkpoint_config(ckpts / model_key / "final" / "model.safetensors")
    decision = ""
    if config.decision != "none":
        gain = f" (inject gain {config.inject_gain:g})" if config.inject_gain else ""
        decision = f", decision `{config.decision}`{gain}"
    evaluation, missed = _card_evaluation(work, model_key, mode_key)
    held = heldout_set(model_key)
    train_pairs = ", ".join(
        f"{SET_TITLES[s]} ({len(ADDITIVE_SETS[s].list_pairs())} pairs)" for s in record["train_sets"]
    )
    loss = record.get("loss", {})
    losses = "; ".join(
        f"stage {i}: {loss[f'stage{i}']['first_epoch_loss']} → {loss[f'stage{i}']['last_epoch_loss']}"
        for i in (1, 2)
        if f"stage{i}" in loss
    )
    if held is not None:
        held_text = f"{SET_TITLES[held]} was held out (the test set below)"
    else:
        held_text = "held out: " + ", ".join(SET_TITLES[k] for k in GENERAL_SETS) + " (the test sets below)"
    untouched = [SET_TITLES[k] for k in ADDITIVE_SETS if k not in record["train_sets"]]
    lines = [
        "<!-- Generated by scripts/make_results.py bundle; do not edit by hand. -->",
        f"# Model card: `{task}` ({TASK_TITLES[task]}), bundled",
        "",
        f"- **File**: `maugif_core/pretrained/{task}.safetensors`, {target.stat().st_size:,} bytes, sha256 "
        f'`{sha256_file(target)}`. Load with `maugif_core.pretrained("{task}")`.',
        f"- **Source**: `{model_key}` of `scripts/make_results.py` (trained with `jobs/train.py`), weights unchanged; "
        f"the stored config's `bn_mode` is set to `{config.bn_mode}` and its `envelope` to `{config.envelope}`, "
        "the inference options the evaluations favour (docs/RESULTS.md, *BatchNorm at inference* and "
        "*Envelope*).",
        f"- **Model**: additive MAUGIF (SPEC §1.1), reference widths (encoders {config.encoder_channels} channels, "
        f"decoders {config.decoder_width} / {config.decoder_width2}); threshold t = {config.threshold}, "
        f"λ_Y = {config.lambda_y}, chroma `{config.chroma}`, direction `{config.direction}`, "
        f"bn_mode `{config.bn_mode}`, envelope `{config.envelope}`{decision}. Stored config: "
        f"`{config.model_dump_json()}`.",
        *decision_lines(task, config, trained.decision),
        f"- **Training data**: {train_pairs}, from `../shared/datasets` (read in place); {held_text}. Sets never "
        f"used in this model's training: {', '.join(untouched)}.",
        f"- **Schedule**: {record['epochs_stage1']} + {record['epochs_stage2']} epochs "
        f"({record['samples_stage1']:,} + {record['samples_stage2']:,} random crops), crop {record['crop']}, "
        f"batch {record['batch']}, Adam lr 5e-4, weight decay 1e-8, seed 0, one Ray Train worker on CPU, "
        f"{record['seconds']:.0f} s. SPEC reference: 100 + 100 epochs at crop 480. Epoch losses (first → last): "
        f"{losses}.",
        "- **Commands**:",
        "",
        "  ```bash",
        f"  {record['command'].replace('python ', '.venv/bin/python ', 1)}",
        f"  .venv/bin/python scripts/make_results.py bundle --work {work} --ckpts {ckpts}",
        "  ```",
        "",
        "## Evaluation",
        "",
        *evaluation,
        "## Limitations",
        "",
        "- A short schedule on a 2-core machine (about 1/10 to 1/30 of the reference's epochs, crop 128 instead of "
        "480) and small training sets: the shared datasets are test sets, so each model only saw the other sets "
        "of its task. These numbers describe these weights, not the method at its reference schedule.",
    ]
    lines += [f"- Measured gap: {m}." for m in missed]
    if held == "mfiwhu":
        lines.append(
            "- The bundled sample pairs (`samples/mff`, the embedded default's input) are MFI-WHU crops: this "
            "model never saw them."
        )
    if task in ("medical", "general"):
        lines.append(
            "- Where both sources are black, the injected detail can lift the background a few grey levels; the "
            "CDDFuse-lineage SSIM (C1, C2 practically 0) scores that as a structural mismatch over the whole "
            "background (docs/RESULTS.md, *Diagnostic*)."
        )
    lines.append(
        "- BatchNorm: with `running` statistics a result depends on nothing but the image itself (batch-, "
        "composition- and tiling-independent); `build_model_from_config(config.model_copy(update={'bn_mode': "
        "'per_image'}))` plus `load_state_dict` gives the reference's per-image behaviour."
    )
    return "\n".join(lines) + "\n"
