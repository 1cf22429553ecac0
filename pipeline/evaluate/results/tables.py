"""Markdown formatting shared by the results page and the model cards: numbers, tables, gaps."""

from __future__ import annotations

import math

from pipeline.evaluate.results.compare import LOWER


def fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(
    rows: list[tuple[str, dict[str, float]]], metrics: tuple[str, ...], bold_over: int | None = None
) -> str:
    """Markdown table; the best value per metric among the first ``bold_over`` rows (default all) in bold."""
    candidates = [r for r in rows[: bold_over or len(rows)] if r[1]]
    rows = [r for r in rows if r[1]]  # runs that did not happen
    head = "| method | " + " | ".join(f"{m}{' ↓' if m in LOWER else ''}" for m in metrics) + " |"
    lines = [head, "|---|" + "---|" * len(metrics)]
    best = {}
    for m in metrics:
        values = [r[1].get(m) for r in candidates if r[1].get(m) is not None and math.isfinite(r[1].get(m))]
        if values and m != "seconds":
            best[m] = min(values) if m in LOWER else max(values)
    for name, values in rows:
        cells = []
        for m in metrics:
            v = values.get(m)
            text = fmt(v)
            cells.append(f"**{text}**" if v is not None and m in best and math.isclose(v, best[m]) else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_text(ours: float, other: float, metric: str) -> str:
    diff = ours - other
    rel = diff / abs(other) * 100 if other else float("nan")
    return f"{metric} {fmt(ours)} vs {fmt(other)} ({diff:+.3g}, {rel:+.1f} %)"
