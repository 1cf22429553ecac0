"""The targets' verdicts (docs/EVALUATION.md): beating the classical baselines, reaching DeFusion's published
level."""

from __future__ import annotations

from pipeline.evaluate.results.compare import TARGET_METRICS, metrics_ahead
from pipeline.evaluate.results.tables import gap_text


def baseline_verdict(means: dict, baselines: tuple[str, ...], ours_key: str) -> tuple[bool, str]:
    """Target 1: ours beats every classical baseline on at least 5 of TARGET_METRICS. Baselines missing from
    ``means`` are skipped; with none of them evaluated the target is not met (nothing was beaten)."""
    ours = means.get(ours_key, {})
    parts, ok = [], True
    for base in baselines:
        if base not in means:
            continue
        won = metrics_ahead(ours, means[base], TARGET_METRICS)
        ok &= len(won) >= 5
        lost = [m for m in TARGET_METRICS if m not in won]
        parts.append(f"{base}: {len(won)}/8 (behind on {', '.join(lost) or 'none'})")
    if not parts:
        return False, "no classical baseline evaluated"
    return ok, "; ".join(parts)


def defusion_verdict(ours: dict[str, float], defusion: tuple[float, ...]) -> tuple[bool, str]:
    """Target 2: at DeFusion's published level, read as: at least its value on >= 5 of the 8 metrics."""
    ref = dict(zip(TARGET_METRICS, defusion, strict=True))
    reached = [m for m in TARGET_METRICS if m in ours and ours[m] >= ref[m]]
    missed = [gap_text(ours[m], ref[m], m) for m in TARGET_METRICS if m in ours and ours[m] < ref[m]]
    return len(reached) >= 5, f"{len(reached)}/8 at or above DeFusion" + (
        f"; short on {'; '.join(missed)}" if missed else ""
    )
