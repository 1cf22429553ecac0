"""The results page's diagnostics: the medical background lift and task models against the general model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.evaluate.results.compare import TARGET_METRICS, metrics_ahead
from pipeline.evaluate.results.rows import method_means, read_evaluation
from pipeline.evaluate.results.rules import judged_model, set_rows
from pipeline.evaluate.results.testsets import ADDITIVE_SETS, GENERAL_SETS, SET_TITLES, TASK_MODEL


def background_lift(ckpts: Path, methods: tuple[str, ...], pairs_per_set: int = 5) -> list[str]:
    """Diagnostic of the medical SSIM gap: how much the injected detail lifts the black background.

    For the first pairs of each Harvard set: the mean fused grey level where both sources are black (< 3 on
    0-255), the CDDFuse-convention SSIM before and after setting that background to 0, and, as a check of our
    convention, the same SSIM from ``skimage.metrics.structural_similarity`` run the way CDDFuse runs it (float32
    grey images on 0-255 from OpenCV's BGR2GRAY, ``data_range=2``, the float default of skimage < 0.19).
    """
    from PIL import Image

    import maugif_core
    from maugif_core import metrics

    try:
        import cv2
        from skimage.metrics import structural_similarity
    except ImportError:  # the oracle column is optional
        cv2 = structural_similarity = None

    def grey(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(image[..., ::-1], dtype=np.float32), cv2.COLOR_BGR2GRAY)

    from pipeline.config.eval_config import maugif_overrides, split_method

    out = ["| set | method | pairs | background share | fused level there (0-255) | SSIM | SSIM, background zeroed "
           "| SSIM by skimage (oracle) |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, method in ((k, m) for k in ("mri_ct", "mri_pet", "mri_spect") for m in methods):
        path = ckpts / TASK_MODEL[key] / "final" / "model.safetensors"
        if not path.is_file():
            continue
        trained = maugif_core.load_checkpoint(path)
        overrides = maugif_overrides(split_method(method)[1])
        model = maugif_core.build_model_from_config(trained.config.model_copy(update=overrides))
        model.load_state_dict(trained.state_dict())
        share, level, before, after, oracle = [], [], [], [], []
        for _, uri_a, uri_b in ADDITIVE_SETS[key].list_pairs()[:pairs_per_set]:
            a, b = (np.asarray(Image.open(u).convert("RGB")) for u in (uri_a, uri_b))
            fused = model.fuse(a, b)
            black = (a.max(axis=2) < 3) & (b.max(axis=2) < 3)
            zeroed = fused.copy()
            zeroed[black] = 0
            share.append(black.mean())
            level.append(fused[black].mean() if black.any() else 0.0)
            before.append(metrics.ssim(fused, a, b, "cddfuse"))
            after.append(metrics.ssim(zeroed, a, b, "cddfuse"))
            if structural_similarity is not None:
                f = grey(fused)
                oracle.append(sum(structural_similarity(f, grey(x), data_range=2) for x in (a, b)))
        out.append(
            f"| {ADDITIVE_SETS[key].title} | `{method}` | {len(share)} | {np.mean(share):.0%} | {np.mean(level):.1f} | "
            f"{np.mean(before):.3f} | {np.mean(after):.3f} | {f'{np.mean(oracle):.3f}' if oracle else '–'} |"
        )
    return out


def task_vs_general(work: Path, ckpts: Path, ours: dict[str, str]) -> list[str]:
    """On every set held out from both its task model and the general model: on how many of the 8 target
    metrics each is ahead, with the two models' thresholds and training-set sizes (the presets differ in t)."""
    import maugif_core

    out = [
        "Each model with its judged variant (task models: "
        + ", ".join(f"{t} `{k}`" for t, k in ours.items() if t != "general")
        + f"; general `{ours['general']}`), same set, both models held out from it; each model's threshold t and "
        "training-set size are in the table.\n",
        "| set | task model (t, pairs) | general (t, pairs) | task model ahead on | general ahead on |",
        "|---|---|---|---|---|",
    ]
    general_path = ckpts / "general" / "mixed" / "final" / "model.safetensors"
    if not general_path.is_file():
        return ["Not trained yet."]
    general_t = maugif_core.read_checkpoint_config(general_path).threshold
    general_pairs = json.loads((ckpts / "general" / "mixed" / "train_record.json").read_text())["pairs"]
    for key in GENERAL_SETS:
        task_rows, general_rows = set_rows(work, key), read_evaluation(work / "eval_general" / key)
        if task_rows is None or general_rows is None:
            continue
        task_key = ours[ADDITIVE_SETS[key].task]
        task, general = method_means(task_rows).get(task_key, {}), method_means(general_rows).get(ours["general"], {})
        model_key = judged_model(work, key)
        model_dir = ckpts / model_key
        task_t = maugif_core.read_checkpoint_config(model_dir / "final" / "model.safetensors").threshold
        task_pairs = json.loads((model_dir / "train_record.json").read_text())["pairs"]
        task_wins, general_wins = (
            metrics_ahead(task, general, TARGET_METRICS),
            metrics_ahead(general, task, TARGET_METRICS),
        )
        out.append(
            f"| {SET_TITLES[key]} | `{model_key}` ({task_t:g}, {task_pairs}) | {general_t:g}, "
            f"{general_pairs} | {len(task_wins)}/8 ({', '.join(task_wins)}) | "
            f"{len(general_wins)}/8 ({', '.join(general_wins)}) |"
        )
    return out
