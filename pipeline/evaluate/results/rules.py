"""The decision rules read off finished evaluations: the BatchNorm mode, the envelope per task, the promotion of
ablation families, and from them the model judged on each set and bundled for each task."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from pipeline.evaluate.results.compare import DECISION_METRICS, TARGET_METRICS, cell_counts
from pipeline.evaluate.results.methods import ENVELOPED, MAUGIF_PREFIX, PER_IMAGE, RUNNING
from pipeline.evaluate.results.rows import ablation_dir, method_means, read_evaluation
from pipeline.evaluate.results.testsets import (
    ABLATIONS,
    ADDITIVE_SETS,
    BUNDLE,
    GENERAL_SETS,
    TASK_MODEL,
    ablation_prefix,
    heldout_set,
)

ENVELOPE_TASKS = ("vif", "medical", "mff", "mef", "general")


def pooled_cells(work: Path, folder: str, keys: list[str], key_a: str, key_b: str) -> tuple[int, int]:
    """Set-metric cells (DECISION_METRICS) won by method ``key_a`` and by ``key_b`` over the sets ``keys`` of
    ``work/folder``, the MEFB folds pooled as one set (as in the tables); sets missing either method count for
    neither."""
    import pandas as pd

    groups = [[k for k in keys if k.startswith("mefb")]] + [[k] for k in keys if not k.startswith("mefb")]
    won_a = won_b = 0
    for group in groups:
        frames = [f for f in (read_evaluation(work / folder / key) for key in group) if f is not None]
        if not frames:
            continue
        means = method_means(pd.concat(frames, ignore_index=True))
        if key_a in means and key_b in means:
            a, b = cell_counts(means[key_a], means[key_b], DECISION_METRICS)
            won_a, won_b = won_a + a, won_b + b
    return won_a, won_b


def choose_bn_mode(per_cells: int, run_cells: int) -> str:
    """The BatchNorm method key the cell counts favour: :data:`PER_IMAGE` where per-image statistics win at least as
    many set-metric cells as running statistics (a tie keeps the reference's per-image statistics), else
    :data:`RUNNING`."""
    return PER_IMAGE if per_cells >= run_cells else RUNNING


def config_bn_mode(method_key: str) -> str:
    """``AdditiveConfig.bn_mode`` of a BatchNorm method key: ``running`` for :data:`RUNNING`, else ``per_image``."""
    return "running" if method_key == RUNNING else "per_image"


def choose_envelope(on_cells: int, off_cells: int) -> bool:
    """Whether the envelope is on: where it wins strictly more cells than running without it; a tie keeps SPEC
    §1.1's rule (off)."""
    return on_cells > off_cells


def judged_keys(bn_key: str, envelope: dict[str, tuple[bool, int, int]]) -> dict[str, str]:
    """Per additive task (:data:`ENVELOPE_TASKS`): the method key it is judged and bundled with, the BatchNorm key
    ``bn_key``, or :data:`ENVELOPED` where ``envelope`` (:func:`envelope_choice`) turns the envelope on."""
    return {task: ENVELOPED if envelope.get(task, (False,))[0] else bn_key for task in ENVELOPE_TASKS}


def choose_promotions(candidates: Iterable[tuple[str, str, int, int]]) -> dict[str, tuple[str, int, int]]:
    """The promoted ablation family per task: ``task -> (prefix, cells won, cells lost)``.

    ``candidates``: ``(task, prefix, won, lost)`` of the families that cover every fold of their task with every
    fold evaluated, in :data:`ABLATIONS` order. A family qualifies when it is ahead on more cells than behind; of
    several qualifying families of one task the one with the largest lead (won - lost) is promoted, the first one
    on a tie."""
    out: dict[str, tuple[str, int, int]] = {}
    for task, prefix, won, lost in candidates:
        best = out.get(task)
        if won > lost and (best is None or won - lost > best[1] - best[2]):
            out[task] = (prefix, won, lost)  # several qualify: the one furthest ahead of the presets
    return out


def bn_choice(work: Path) -> tuple[str, int, int]:
    """The BatchNorm mode the measurements favour: ``(method key, cells won by per-image, cells won by
    running)`` over every additive set's means of TARGET_METRICS + ag + psnr (:func:`pooled_cells`)."""
    per_wins, run_wins = pooled_cells(work, "eval", list(ADDITIVE_SETS), PER_IMAGE, RUNNING)
    return choose_bn_mode(per_wins, run_wins), per_wins, run_wins


def envelope_choice(work: Path) -> dict[str, tuple[bool, int, int]]:
    """Per additive task: ``(envelope on, cells won with it, cells won without)``, comparing
    ``maugif:running+envelope`` with ``maugif:running`` (same weights) on the task's held-out sets — the general
    model on every set it did not see — over TARGET_METRICS + ag + psnr, the MEFB folds pooled as one set. The
    envelope is on where it wins more cells; a tie keeps SPEC §1.1's rule (off)."""
    out: dict[str, tuple[bool, int, int]] = {}
    for task in ENVELOPE_TASKS:
        if task == "general":
            folder, keys = "eval_general", list(GENERAL_SETS)
        else:
            folder, keys = "eval", [k for k, s in ADDITIVE_SETS.items() if s.task == task]
        on, off = pooled_cells(work, folder, keys, ENVELOPED, RUNNING)
        out[task] = (choose_envelope(on, off), on, off)
    return out


@functools.cache  # read-only over finished evaluations (bundle, report): computed once per run
def ours_keys(work: Path) -> tuple[dict[str, str], int, int, dict[str, tuple[bool, int, int]]]:
    """The MAUGIF method key each additive task is judged (and bundled) with: the BatchNorm mode of
    :func:`bn_choice`, plus the envelope where :func:`envelope_choice` turns it on. Also returns the BatchNorm
    cell counts and the envelope choice."""
    bn, per_cells, run_cells = bn_choice(work)
    envelope = envelope_choice(work) if bn == RUNNING else {}
    return judged_keys(bn, envelope), per_cells, run_cells, envelope


@functools.cache  # read-only over finished evaluations (bundle, report): computed once per run
def promotions(work: Path) -> dict[str, tuple[str, int, int]]:
    """Ablations that replace their task's models: ``task -> (prefix, cells won, cells lost)``.

    An ablation family (``vif-t0/heldout-<set>`` for every held-out set of its task) qualifies when it covers
    every fold of the task and, summed over the folds, the retrained models are ahead of the preset models on more
    of the 8 target metrics than behind, each scored with the task's judged variant (:func:`ours_keys`); of several
    qualifying families of one task, the one with the largest lead is promoted. A promoted family's models are
    then the ones judged in the targets and bundled."""
    ours = ours_keys(work)[0]
    families: dict[str, list[str]] = {}
    for name in ABLATIONS:
        families.setdefault(ablation_prefix(name), []).append(name)
    candidates = []
    for prefix, names in families.items():
        task = ADDITIVE_SETS[heldout_set(ABLATIONS[names[0]][0])].task
        folds = {k for k, s in ADDITIVE_SETS.items() if s.task == task}
        if {heldout_set(n) for n in names} != folds:
            continue
        won = lost = 0
        for name in names:
            key = heldout_set(name)
            ablated, base = read_evaluation(ablation_dir(work, name) / key), read_evaluation(work / "eval" / key)
            if ablated is None or base is None:
                break
            ahead, behind = cell_counts(
                method_means(ablated).get(ours[task], {}), method_means(base).get(ours[task], {}), TARGET_METRICS
            )
            won, lost = won + ahead, lost + behind
        else:
            candidates.append((task, prefix, won, lost))
    return choose_promotions(candidates)


def head_to_head(work: Path, prefix: str, other: str, task: str) -> list[tuple[str, int, int]]:
    """Per fold of ``task``: ``(set, cells where family prefix is ahead of family other, cells behind)``, each
    scored with the task's judged variant."""
    ours = ours_keys(work)[0][task]
    out = []
    for key in (k for k, s in ADDITIVE_SETS.items() if s.task == task):
        a, b = (read_evaluation(ablation_dir(work, f"{p}/heldout-{key}") / key) for p in (prefix, other))
        if a is None or b is None:
            continue
        out.append((key, *cell_counts(method_means(a).get(ours, {}), method_means(b).get(ours, {}), TARGET_METRICS)))
    return out


def judged_model(work: Path, key: str, promoted: dict[str, tuple[str, int, int]] | None = None) -> str:
    """The model key judged on additive set ``key``: its held-out preset model, or the promoted ablation's."""
    promoted = promotions(work) if promoted is None else promoted
    task = ADDITIVE_SETS[key].task
    return f"{promoted[task][0]}/heldout-{key}" if task in promoted else TASK_MODEL[key]


def bundled_model(work: Path, task: str, promoted: dict[str, tuple[str, int, int]] | None = None) -> str:
    """The model key bundled for ``task``: :data:`BUNDLE`'s, or the same fold of the promoted ablation."""
    promoted = promotions(work) if promoted is None else promoted
    key = BUNDLE[task]
    return f"{promoted[task][0]}/heldout-{heldout_set(key)}" if task in promoted else key


def set_rows(work: Path, key: str):
    """The rows of additive set ``key``: baselines and peers from ``eval/<key>``, the MAUGIF rows of the judged
    model (:func:`judged_model`; a promoted ablation's come from its own evaluation folder)."""
    import pandas as pd

    rows = read_evaluation(work / "eval" / key)
    model = judged_model(work, key)
    if rows is None or model == TASK_MODEL[key]:
        return rows
    model_rows = read_evaluation(ablation_dir(work, model) / key)
    if model_rows is None:
        return rows
    keep = ~rows["method"].astype(str).str.startswith(MAUGIF_PREFIX)
    return pd.concat([rows[keep], model_rows], ignore_index=True)


def bundle_mode(work: Path) -> str:
    """The BatchNorm inference mode the bundled checkpoints store: the one the evaluations favour."""
    return config_bn_mode(bn_choice(work)[0])
