"""The results page's trained-checkpoint tables: every trained model and the bundled ones."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluate.results.card import sha256_file
from pipeline.evaluate.results.paths import PRETRAINED
from pipeline.evaluate.results.rules import bundled_model, promotions
from pipeline.evaluate.results.testsets import ADDITIVE_SETS, BUNDLE, MODELS


def training_section(work: Path, ckpts: Path, lines: list[str]) -> None:
    lines.append(
        "| model | trained on | pairs | epochs (stage 1 + 2) | samples | crop | wall time "
        "| last epoch loss (stage 1 / 2) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for model_key in MODELS:
        record_path = ckpts / model_key / "train_record.json"
        if not record_path.is_file():
            lines.append(f"| {model_key} | not trained yet | | | | | | |")
            continue
        r = json.loads(record_path.read_text())
        loss = r.get("loss", {})
        lines.append(
            f"| {model_key} | {', '.join(r['train_sets'])} | {r['pairs']} | "
            f"{r['epochs_stage1']} + {r['epochs_stage2']} | "
            f"{r['samples_stage1']} + {r['samples_stage2']} | {r['crop']} | {r['seconds']:.0f} s | "
            f"{loss.get('stage1', {}).get('last_epoch_loss', '–')} / "
            f"{loss.get('stage2', {}).get('last_epoch_loss', '–')} |"
        )
    lines.append("")
    lines.append(
        "Bundled in `maugif_core/pretrained/` (`make_results.py bundle`; per task a held-out model, so that its "
        "held-out set stays a clean test set of the bundled weights; model card `<task>.md` beside each):\n"
    )
    lines.append("| task | source | bytes | sha256 (first 12) | bn_mode | test sets these weights never saw |")
    lines.append("|---|---|---|---|---|---|")
    import maugif_core

    promoted = promotions(work)
    for task in BUNDLE:
        key = bundled_model(work, task, promoted)
        path = PRETRAINED / f"{task}.safetensors"
        if not path.is_file():
            lines.append(f"| {task} | not bundled yet | | | | |")
            continue
        record_path = ckpts / key / "train_record.json"
        seen = set(json.loads(record_path.read_text())["train_sets"]) if record_path.is_file() else set()
        clean = [s.title for k, s in ADDITIVE_SETS.items() if k not in seen and (task == "general" or s.task == task)]
        config = maugif_core.read_checkpoint_config(path)
        lines.append(
            f"| {task} | `{key}` | {path.stat().st_size:,} | `{sha256_file(path)[:12]}` | {config.bn_mode} | "
            f"{', '.join(clean) or 'none'} |"
        )
    lines.append("")
