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


def cmd_bundle(work: Path, ckpts: Path, out_dir: Path = PRETRAINED) -> None:
    """Copy each task's designated checkpoint (:data:`BUNDLE`) into ``maugif_core/pretrained/<task>.safetensors``
    with the BatchNorm mode the evaluations favour, and write its model card ``<task>.md``."""
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
        rule = "max" if envelope.get(task, (False,))[0] else "none"
        update = {"bn_mode": mode, "envelope": rule}
        bundled = maugif_core.build_model_from_config(trained.config.model_copy(update=update))
        bundled.load_state_dict(trained.state_dict())
        target = out_dir / f"{task}.safetensors"
        if not _same_checkpoint(target, bundled):  # safetensors orders its metadata at random: no needless churn
            maugif_core.save_checkpoint(bundled, target)
        card = write_model_card(task, model_key, target, work, ckpts, keys[task])
        (out_dir / f"{task}.md").write_text(card)
        print(f"{task}: {target} ({target.stat().st_size:,} bytes) from {model_key}, bn_mode={mode}, envelope={rule}")
