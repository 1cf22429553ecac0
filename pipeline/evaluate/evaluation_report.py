"""Outputs of the evaluation job: CSVs, the Markdown table, plots, the visual grid and ``report.html``.

Files written under the job's output folder (local path or ``s3://`` prefix)::

    metrics_per_image.csv   pair_id,method,metric,value      (long format, one row per metric)
    metrics_mean.csv        method,metric,mean               (mean over the pairs every method scored)
    metrics_table.md        methods × metrics, best per column in bold, pair counts, dropped pairs, weights
    failures.csv            pair_id,method,stage,error       (method empty: the whole pair failed)
    pairs.csv               pair_id,in_comparison,dropped_because,in_training_data
    plots/dist_<metric>.png per-metric distributions per method (box plot + points)
    grid.png                sources, reference (Wald) and every method on the first grid_pairs pairs
    grid/<pair_id>/*.png    the thumbnails the grid is made of
    report.html             all of the above on one page (relative links)
    config.yaml, summary.json

matplotlib renders the figures (Agg backend, no display needed).
"""

from __future__ import annotations

import html
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline import schema as S
from pipeline.evaluate.evaluation import (
    COL_METHOD,
    COL_METRIC,
    COL_VALUE,
    LOWER_IS_BETTER,
    SECONDS,
    EvaluationResult,
    csv_bytes,
    file_safe,
    metric_order,
    write_bytes,
)
from pipeline.evaluate.evaluation_pairs import checkpoint_provenance, common_pairs, pair_uris, pairs_frame
from pipeline.evaluate.images import grid_columns

__all__ = [
    "markdown_table",
    "mean_table",
    "write_report",
]

logger = logging.getLogger(__name__)

UNITS = {
    "en": "bits", "sd": "grey levels", "sf": "grey levels", "ag": "grey levels", "psnr": "dB",
    "sam": "degrees", "seconds": "s",
}  # fmt: skip


def mean_table(rows: Any, methods: Sequence[str], metrics: Sequence[str]) -> Any:
    """Long ``method, metric, mean`` DataFrame: the mean over the pairs each method was scored on, in table
    order."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=[COL_METHOD, COL_METRIC, "mean"])
    means = rows.groupby([COL_METHOD, COL_METRIC], sort=False)[COL_VALUE].mean().rename("mean").reset_index()
    method_rank = {m: i for i, m in enumerate(methods)}
    metric_rank = {m: i for i, m in enumerate(metrics)}
    means = means.assign(
        _m=means[COL_METHOD].map(lambda m: method_rank.get(m, len(method_rank))),
        _k=means[COL_METRIC].map(lambda k: metric_rank.get(k, len(metric_rank))),
    )
    return means.sort_values(["_m", "_k"]).drop(columns=["_m", "_k"]).reset_index(drop=True)


def _format(value: float) -> str:
    if not np.isfinite(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}" if magnitude >= 0.01 or value == 0 else f"{value:.2e}"


def _wide(means: Any, methods: Sequence[str], metrics: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    present_methods = [m for m in methods if m in set(means[COL_METHOD])]
    present_metrics = [k for k in metrics if k in set(means[COL_METRIC])]
    values = np.full((len(present_methods), len(present_metrics)), np.nan)
    lookup = {(r[COL_METHOD], r[COL_METRIC]): r["mean"] for r in means.to_dict("records")}
    for i, method in enumerate(present_methods):
        for j, metric in enumerate(present_metrics):
            values[i, j] = lookup.get((method, metric), np.nan)
    return present_methods, present_metrics, values


def _best(values: np.ndarray, metrics: Sequence[str]) -> np.ndarray:
    """Boolean mask of the best value per column (lowest for LOWER_IS_BETTER metrics)."""
    best = np.zeros(values.shape, bool)
    for j, metric in enumerate(metrics):
        column = values[:, j]
        if metric == SECONDS or not np.isfinite(column).any():
            continue
        target = np.nanmin(column) if metric in LOWER_IS_BETTER else np.nanmax(column)
        best[:, j] = np.isclose(column, target, rtol=1e-9, atol=0)
    return best


def markdown_table(means: Any, counts: dict[str, int], methods: Sequence[str], metrics: Sequence[str]) -> str:
    """Methods × metrics Markdown table of means, the best per metric in bold (``↓`` marks
    lower-is-better)."""
    rows, columns, values = _wide(means, methods, metrics)
    best = _best(values, columns)
    header = "| method | n | " + " | ".join(f"{c}{' ↓' if c in LOWER_IS_BETTER else ''}" for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for i, method in enumerate(rows):
        cells = [f"**{_format(v)}**" if best[i, j] else _format(v) for j, v in enumerate(values[i])]
        lines.append(f"| {method} | {counts.get(method, 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _html_table(means: Any, counts: dict[str, int], methods: Sequence[str], metrics: Sequence[str]) -> str:
    rows, columns, values = _wide(means, methods, metrics)
    best = _best(values, columns)
    head = "".join(f"<th>{html.escape(c)}{' ↓' if c in LOWER_IS_BETTER else ''}</th>" for c in columns)
    body = []
    for i, method in enumerate(rows):
        cells = "".join(
            f"<td class='{'best' if best[i, j] else ''}'>{_format(v)}</td>" for j, v in enumerate(values[i])
        )
        body.append(f"<tr><th>{html.escape(method)}</th><td>{counts.get(method, 0)}</td>{cells}</tr>")
    return f"<table><tr><th>method</th><th>n</th>{head}</tr>{''.join(body)}</table>"


# ------------------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------------------


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def distribution_png(rows: Any, metric: str, methods: Sequence[str]) -> bytes:
    """Box plot plus jittered points of one metric's per-pair values, one box per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = rows[rows[COL_METRIC] == metric]
    present = [m for m in methods if (subset[COL_METHOD] == m).any()]
    data = [subset.loc[subset[COL_METHOD] == m, COL_VALUE].to_numpy(float) for m in present]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(present) + 1.5), 3.2))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(present) + 1), present)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.6, color="tab:blue")
    unit = f" ({UNITS[metric]})" if metric in UNITS else ""
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    ax.set_title(f"{metric}{unit}: {direction}" if metric != SECONDS else f"{metric}{unit}")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def grid_png(thumbnails: dict[str, dict[str, bytes]], columns: Sequence[str]) -> bytes:
    """Rows = pairs, columns = A, B, (reference), methods; from the PNG thumbnails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    pair_ids = list(thumbnails)
    fig, axes = plt.subplots(
        len(pair_ids), len(columns), figsize=(2.2 * len(columns), 2.3 * len(pair_ids)), squeeze=False
    )
    for i, pair_id in enumerate(pair_ids):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            ax.axis("off")
            data = thumbnails[pair_id].get(column)
            if data is not None:
                ax.imshow(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            if i == 0:
                ax.set_title(column, fontsize=9)
            if j == 0:
                ax.text(-0.05, 0.5, pair_id, transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=8)  # fmt: skip
    fig.tight_layout()
    return _figure_png(fig)


def _read_thumbnails(output: str, grid_ids: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, bytes]]:
    from pipeline.io.fsutil import filesystem_for, join_key

    fs, _ = filesystem_for(output)
    found: dict[str, dict[str, bytes]] = {}
    for pair_id in grid_ids:
        for column in columns:
            uri = join_key(output, "grid", pair_id, f"{file_safe(column)}.png")
            path = uri.split("://", 1)[-1]
            if fs.exists(path):
                found.setdefault(pair_id, {})[column] = fs.cat_file(path)
    return found


# ------------------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f4f4f4; }
td.best { font-weight: bold; background: #e6f4e6; }
img { max-width: 100%; }
.plots img { width: 32%; min-width: 320px; }
code { background: #f4f4f4; padding: 1px 3px; }
"""


def _html_page(
    config: Any, notes: list[str], table: str, has_grid: bool, plots: list[str], result: EvaluationResult
) -> str:
    """``report.html``: notes, the mean table, links to the data, the grid, the plots and the failures."""
    esc = html.escape
    parts = [
        '<!doctype html><html><head><meta charset="utf-8">',
        f"<title>MAUGIF evaluation: {esc(config.task)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Fusion quality: {esc(config.task)}</h1>",
        "<ul>" + "".join(f"<li>{esc(n.replace('`', ''))}</li>" for n in notes) + "</ul>",
        f"<h2>Means</h2>{table}",
        "<p>Data: "
        + ", ".join(
            f'<a href="{name}">{name}</a>'
            for name in (
                "metrics_per_image.csv",
                "metrics_mean.csv",
                "metrics_table.md",
                "failures.csv",
                "pairs.csv",
                "config.yaml",
            )
        )
        + ".</p>",
    ]
    if has_grid:
        parts.append('<h2>Visual comparison</h2><img src="grid.png" alt="sources and fused images">')
    parts.append('<h2>Per-metric distributions</h2><div class="plots">')
    parts.extend(f'<img src="{p}" alt="{p}">' for p in plots)
    parts.append("</div>")
    if not result.failures.empty:
        parts.append(
            f"<h2>Failures ({len(result.failures)})</h2>"
            "<table><tr><th>pair_id</th><th>method</th><th>stage</th><th>error</th></tr>"
        )
        for r in result.failures.head(200).to_dict("records"):
            cells = [esc(str(r[key])) for key in (S.PAIR_ID, COL_METHOD, "stage", "error")]
            parts.append(
                f"<tr><td>{cells[0]}</td><td>{cells[1]}</td><td>{cells[2]}</td>"
                f"<td style='text-align:left'>{cells[3]}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(config: Any, result: EvaluationResult, config_yaml: str) -> dict[str, Any]:
    """Write every output file of the job; return the summary (also written as ``summary.json``)."""
    from pipeline.io.fsutil import join_key

    out = config.output
    methods = list(config.method_names)
    metrics = list(metric_order(config.task, config.protocol))
    rows = result.rows
    comparison = common_pairs(rows, result.failures, methods, [str(p) for p in result.pairs])
    common = set(comparison["common"])
    compared = rows[rows[S.PAIR_ID].astype(str).isin(common)] if not rows.empty else rows
    means = mean_table(compared, methods, metrics)
    counts = compared.groupby(COL_METHOD)[S.PAIR_ID].nunique().to_dict() if not compared.empty else {}
    provenance = checkpoint_provenance(config, pair_uris(config, result.pairs))

    write_bytes(join_key(out, "metrics_per_image.csv"), csv_bytes(rows))
    write_bytes(join_key(out, "metrics_mean.csv"), csv_bytes(means))
    write_bytes(join_key(out, "failures.csv"), csv_bytes(result.failures))
    write_bytes(join_key(out, "pairs.csv"), csv_bytes(pairs_frame(result.pairs, comparison, provenance)))
    write_bytes(join_key(out, "config.yaml"), config_yaml.encode("utf-8"))

    table_md = markdown_table(means, counts, methods, metrics)
    failed_pairs = sorted(set(result.failures[S.PAIR_ID].astype(str))) if not result.failures.empty else []
    notes = [
        f"{len(result.pairs)} pairs from `{config.input}`, task `{config.task}`"
        + (
            f", protocol `{config.protocol}`"
            if config.mechanism == "multiplicative"
            else f", convention `{config.convention}`"
        ),
        f"Methods are compared on the {len(common)} pairs every method scored (n); ↓ = lower is better; "
        "bold = best per metric over those pairs; seconds = fusion wall time per pair.",
    ]
    dropped = comparison["dropped"]
    if dropped:
        first = "; ".join(f"{p}: {why}" for p, why in list(dropped.items())[:3])
        notes.append(
            f"{len(dropped)} pairs dropped from the comparison (not scored by every method; pairs.csv says why), "
            f"e.g. {first}"
        )
    if comparison["unscored_methods"]:
        notes.append(
            f"Methods that scored no pair (left out of the comparison): {', '.join(comparison['unscored_methods'])}."
        )
    if provenance is not None:
        sha = f", sha256 {provenance['sha256'][:12]}…" if provenance["sha256"] else ""
        trained = provenance["trained_on"]
        notes.append(
            f"MAUGIF weights: {provenance['name']}{sha}; training data: {provenance['training_data']}."
            + (
                f" {len(trained)} of the {len(result.pairs)} pairs scored here lie in its training data "
                f"({', '.join(sorted(set(trained.values())))}): they are not held-out scores (flagged in pairs.csv)."
                if trained
                else " None of the pairs scored here lies in its training data (by folder)."
            )
        )
    if failed_pairs:
        notes.append(f"{len(result.failures)} failures on {len(failed_pairs)} pairs: see failures.csv.")
    write_bytes(
        join_key(out, "metrics_table.md"),
        (table_md + "\n" + "\n".join(f"- {n}" for n in notes) + "\n").encode(),
    )

    plot_names = []
    for metric in metrics:
        if rows.empty or not (rows[COL_METRIC] == metric).any():
            continue
        name = f"plots/dist_{metric}.png"
        write_bytes(join_key(out, *name.split("/")), distribution_png(rows, metric, methods))
        plot_names.append(name)

    columns = grid_columns(methods, config.mechanism == "multiplicative" and config.protocol == "wald")
    thumbnails = _read_thumbnails(out, result.grid_ids, columns) if result.grid_ids else {}
    has_grid = bool(thumbnails)
    if has_grid:
        write_bytes(join_key(out, "grid.png"), grid_png(thumbnails, columns))

    page = _html_page(config, notes, _html_table(means, counts, methods, metrics), has_grid, plot_names, result)
    write_bytes(join_key(out, "report.html"), page.encode("utf-8"))
    summary = {
        "pairs": len(result.pairs),
        "methods": methods,
        "runs": len(result.pairs) * len(methods),
        "failures": int(len(result.failures)),
        "failed_pairs": len(failed_pairs),
        "seconds": round(result.seconds, 2),
        "plots": plot_names,
        "grid": "grid.png" if has_grid else None,
        "report": join_key(out, "report.html"),
        "common_pairs": len(common),
        "dropped_pairs": comparison["dropped"],
        "unscored_methods": comparison["unscored_methods"],
        "checkpoint": provenance,
    }
    write_bytes(join_key(out, "summary.json"), json.dumps(summary, indent=2).encode("utf-8"))
    return summary
