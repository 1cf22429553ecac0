"""Which pairs an evaluation may compare methods on, and what the scored checkpoint was trained on.

- **Common pairs**: a mean is comparable across methods only over the same pairs, so the table and "best" use the
  pairs every method scored; each dropped pair is listed with why (which method failed, and its error). A
  method that scored no pair at all is left out of the common set (it would empty it) and named.
- **Checkpoint provenance**: the MAUGIF checkpoint is named (the bundled model of the task, or the file given),
  with its sha256 and, from its model card, its training data. Pairs whose files lie in a training data set
  (a path component equal to the set's folder, e.g. ``.../TNO/...``) are flagged: scores on them are not
  held-out scores.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import schema as S

__all__ = ["checkpoint_provenance", "common_pairs", "pair_uris", "pairs_frame", "training_sets"]

logger = logging.getLogger(__name__)

COL_METHOD = "method"

# Data-set names used by model cards → folder names under the shared data sets.
_SET_FOLDERS = {
    "mri-ct": "harvard_mri_ct",
    "mri-pet": "harvard_mri_pet",
    "mri-spect": "harvard_mri_spect",
}


def common_pairs(rows: Any, failures: Any, methods: list[str], pairs: list[str]) -> dict[str, Any]:
    """The pairs every (scoring) method scored, and why the others were dropped.

    Args:
        rows: metric rows (``pair_id, method, metric, value``).
        failures: failure rows (``pair_id, method, stage, error``).
        methods: the methods run, in table order.
        pairs: every pair handed to the evaluators.

    Returns:
        ``{"common": [pair ids], "dropped": {pair_id: reason}, "unscored_methods": [methods]}``.
    """
    scored: dict[str, set[str]] = {m: set() for m in methods}
    if not rows.empty:
        for method, group in rows.groupby(COL_METHOD):
            scored.setdefault(str(method), set()).update(group[S.PAIR_ID].astype(str))
    unscored = [m for m in methods if not scored.get(m)]
    counted = [m for m in methods if scored.get(m)]
    common = [p for p in pairs if counted and all(p in scored[m] for m in counted)]
    reasons: dict[str, list[str]] = {}
    if failures is not None and not failures.empty:
        for r in failures.to_dict("records"):
            error = " ".join(str(r.get("error", "")).split())[:160]
            who = r.get(COL_METHOD) or "every method"
            reasons.setdefault(str(r[S.PAIR_ID]), []).append(f"{who} failed at {r.get('stage')}: {error}")
    dropped = {}
    common_set = set(common)
    for pair in pairs:
        if pair in common_set:
            continue
        missing = [m for m in counted if pair not in scored[m]]
        dropped[pair] = "; ".join(reasons.get(pair, [])) or f"not scored by {', '.join(missing)}"
    return {"common": common, "dropped": dropped, "unscored_methods": unscored}


def training_sets(card: str) -> list[str]:
    """The data-set names of a model card's ``**Training data**:`` line (``TNO (25 pairs), RoadScene ...``)."""
    match = re.search(r"\*\*Training data\*\*:\s*(.*?)(?:, from |;|\n)", card)
    if not match:
        return []
    names = []
    for part in re.split(r"\),\s*", match.group(1)):
        name = re.sub(r"\s*\(\d[\d,]* pairs\)?$", "", part.strip()).strip()
        if name:
            names.append(name)
    return names


def _set_folder(name: str) -> tuple[str, str | None]:
    """``"MEFB (odd fold)"`` → (``"mefb"``, ``"odd fold"``); ``"MRI-PET"`` → (``"harvard_mri_pet"``, None)."""
    match = re.match(r"(.*?)\s*\((.*)\)$", name)
    base, detail = (match.group(1), match.group(2)) if match else (name, None)
    key = base.strip().lower()
    return _SET_FOLDERS.get(key, key), detail


def _card_for(checkpoint: str | None, task: str) -> tuple[str, str | None, bytes | None]:
    """(name, model card text or None, weights bytes or None) of the checkpoint an evaluation uses."""
    if checkpoint is None:
        import maugif_core

        folder = Path(maugif_core.__file__).parent / "pretrained"
        weights = folder / f"{task}.safetensors"
        card = folder / f"{task}.md"
        return (
            f"bundled `{task}` model (maugif_core/pretrained/{task}.safetensors)",
            card.read_text() if card.is_file() else None,
            weights.read_bytes() if weights.is_file() else None,
        )
    from pipeline.io.storage import get_filesystem

    fs, path = get_filesystem(checkpoint)
    data = None
    for candidate in (path, f"{path.rstrip('/')}/model.safetensors", f"{path.rstrip('/')}/final/model.safetensors"):
        if fs.isfile(candidate):
            data = fs.cat_file(candidate)
            path = candidate
            break
    card = None
    base = path.rsplit("/", 1)[0]
    for candidate in (path.rsplit(".", 1)[0] + ".md", f"{base}/MODEL_CARD.md", f"{base}/README.md"):
        if fs.isfile(candidate):
            card = fs.cat_file(candidate).decode("utf-8", "replace")
            break
    return f"checkpoint `{checkpoint}`", card, data


def checkpoint_provenance(config: Any, uris: dict[str, tuple[str, str]]) -> dict[str, Any] | None:
    """Name, sha256 and training data of the MAUGIF checkpoint an evaluation scores, and the pairs it was
    trained on. None when no MAUGIF method runs or the task is multiplicative (fitted per scene).

    Args:
        config: the :class:`~pipeline.config.eval_config.EvalJobConfig`.
        uris: pair_id → (uri_a, uri_b) of the evaluated pairs.
    """
    if config.mechanism != "additive" or not any(m.split(":", 1)[0] == "maugif" for m in config.method_names):
        return None
    name, card, data = _card_for(config.checkpoint, config.task)
    sets = training_sets(card) if card else []
    flagged: dict[str, str] = {}
    for pair_id, pair_uris in uris.items():
        parts = {p.lower() for uri in pair_uris if uri for p in re.split(r"[/\\]", uri)}
        for set_name in sets:
            folder, detail = _set_folder(set_name)
            if folder in parts:
                flagged[pair_id] = set_name + (f" (this pair's {detail} membership not checked)" if detail else "")
                break
    training = ", ".join(sets) if sets else "unknown (no model card with a **Training data** line)"
    return {
        "name": name,
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "training_data": training,
        "trained_on": flagged,
    }


def pair_uris(config: Any, pairs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """pair_id → (uri_a, uri_b) of the evaluated pairs (discovery again: evaluation sets are small)."""
    from pipeline.io.pairs import iter_pairs

    wanted = {str(p) for p in pairs}
    uris: dict[str, tuple[str, str]] = {}
    try:
        for batch in iter_pairs(config.input, task=config.task, config=config.pairs, storage=config.storage):
            for r in batch.pairs.select([S.PAIR_ID, S.URI_A, S.URI_B]).to_pylist():
                if r[S.PAIR_ID] in wanted:
                    uris[r[S.PAIR_ID]] = (r[S.URI_A], r[S.URI_B])
    except Exception:  # provenance is informative; the report must still be written
        logger.warning("could not list the pairs' files for the training-data check", exc_info=True)
    return uris


def pairs_frame(pairs: Sequence[str], comparison: dict[str, Any], provenance: dict[str, Any] | None) -> Any:
    """``pairs.csv``: per pair, whether it is in the comparison, why it was dropped, the training set it lies in."""
    import pandas as pd

    trained = (provenance or {}).get("trained_on", {})
    common = set(comparison["common"])
    return pd.DataFrame(
        {
            S.PAIR_ID: [str(p) for p in pairs],
            "in_comparison": [str(p) in common for p in pairs],
            "dropped_because": [comparison["dropped"].get(str(p), "") for p in pairs],
            "in_training_data": [trained.get(str(p), "") for p in pairs],
        }
    )
