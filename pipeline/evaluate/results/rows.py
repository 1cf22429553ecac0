"""The evaluation outputs under the work folder: where each run lives and its per-image rows read back under the
report's method keys, with per-method means."""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluate.results.methods import MODEL_METHODS, PER_IMAGE, RUNNING


def ablation_dir(work: Path, name: str) -> Path:
    return work / "eval_ablation" / name.replace("/", "__")


def read_run(folder: Path):
    import pandas as pd

    path = folder / "metrics_per_image.csv"
    if not path.is_file():
        return None
    rows = pd.read_csv(path, dtype={"pair_id": str})
    # The runs name every inference option explicitly (MODEL_METHODS), so that a checkpoint's stored config cannot
    # change what a row means; read back under the report's keys. Older runs used ``maugif`` and
    # ``maugif:running`` (and ``maugif:per_image``) for the same things: every checkpoint they scored stored no
    # envelope, and ``maugif`` was per-image BN for each of them.
    renames = {**dict(zip(MODEL_METHODS, (PER_IMAGE, RUNNING), strict=True)), "maugif:per_image": PER_IMAGE}
    rows["method"] = rows["method"].replace(renames)
    return rows


def envelope_dir(folder: Path) -> Path:
    """Where the ``maugif:running+envelope`` rows of an additive evaluation folder live: a sibling tree
    ``<parent>_envelope/<name>`` (``eval/tno`` → ``eval_envelope/tno``), so that adding the variant reruns
    nothing else."""
    return folder.parent.with_name(folder.parent.name + "_envelope") / folder.name


def read_evaluation(folder: Path):
    """An additive evaluation folder's rows together with those of its envelope variant."""
    import pandas as pd

    frames = [f for f in (read_run(folder), read_run(envelope_dir(folder))) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def method_means(rows) -> dict[str, dict[str, float]]:
    """method -> metric -> mean."""
    out: dict[str, dict[str, float]] = {}
    for (method, metric), value in rows.groupby(["method", "metric"])["value"].mean().items():
        out.setdefault(method, {})[metric] = float(value)
    return out


def eval_means(work: Path, folder: str, key: str) -> dict[str, dict[str, float]]:
    rows = read_evaluation(work / folder / key)
    return method_means(rows) if rows is not None else {}
