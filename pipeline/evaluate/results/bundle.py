"""The bundled checkpoints (``make_results.py bundle``): each task's designated model copied into
``maugif_core/pretrained`` with the inference options the evaluations favour, and its model card."""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluate.results.card import write_model_card
from pipeline.evaluate.results.paths import PRETRAINED
from pipeline.evaluate.results.rules import bundle_mode, bundled_model, ours_keys, promotions
from pipeline.evaluate.results.testsets import BUNDLE


def _same_checkpoint(path: Path, model) -> bool:
    """Whether ``path`` already holds ``model``: the same config and bit-identical tensors."""
    import torch
    from safetensors.torch import load_file

    import maugif_core

    if not path.is_file() or maugif_core.read_checkpoint_config(path) != model.config:
        return False
    stored, state = load_file(path), model.state_dict()
    return set(stored) == set(state) and all(torch.equal(stored[k], state[k]) for k in state)


# The source-decision fields (maugif_core.decision) a bundled checkpoint takes from its task's preset: the rule and
# its parameters were chosen after training, by measurement (scripts/tune_decision.py, docs/RESULTS_MULTIFOCUS.md),
# and leave the weights unchanged; a trained checkpoint stores the rule it was trained with.
DECISION_FIELDS = (
    "decision",
    "detail_weight",
    "activity_radius",
    "region_radius",
    "vote_radius",
    "guide_radius",
    "guide_eps",
    "uncertain_band",
    "inject_gain",
    "composition",
    "pyramid_levels",
)


def bundled_options(task: str, bn_mode: str, envelope_on: bool) -> dict[str, object]:
    """The config fields set on a bundled checkpoint: the BatchNorm mode and envelope the evaluations favour, and
    the source decision of ``maugif_core.preset(task)`` (:data:`DECISION_FIELDS`)."""
    import maugif_core

    decision = maugif_core.preset(task).model_dump(include=set(DECISION_FIELDS))
    return {"bn_mode": bn_mode, "envelope": "max" if envelope_on else "none", **decision}


def cmd_bundle(work: Path, ckpts: Path, out_dir: Path = PRETRAINED) -> None:
    """Copy each task's designated checkpoint (:data:`BUNDLE`) into ``maugif_core/pretrained/<task>.safetensors``
    with the BatchNorm mode and envelope the evaluations favour and its preset's source decision
    (:func:`bundled_options`), and write its model card ``<task>.md``."""
    import maugif_core

    mode = bundle_mode(work)
    keys, _, _, envelope = ours_keys(work)
    out_dir.mkdir(parents=True, exist_ok=True)
    promoted = promotions(work)
    for task in BUNDLE:
        model_key = bundled_model(work, task, promoted)
        source = ckpts / model_key / "final" / "model.safetensors"
        if not source.is_file():
            print(f"{task}: {source} not trained yet, not bundled")
            continue
        trained = maugif_core.load_checkpoint(source, expect_task=task)
        update = bundled_options(task, mode, envelope.get(task, (False,))[0])
        bundled = maugif_core.build_model_from_config(trained.config.model_copy(update=update))
        bundled.load_state_dict(trained.state_dict())
        target = out_dir / f"{task}.safetensors"
        if not _same_checkpoint(target, bundled):  # safetensors orders its metadata at random: no needless churn
            maugif_core.save_checkpoint(bundled, target)
        card = write_model_card(task, model_key, target, work, ckpts, keys[task])
        (out_dir / f"{task}.md").write_text(card)
        print(
            f"{task}: {target} ({target.stat().st_size:,} bytes) from {model_key}, bn_mode={mode}, "
            f"envelope={update['envelope']}, decision={update['decision']}"
        )
