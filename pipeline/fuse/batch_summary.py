"""The batch job's summary: this run's counts, the input's cumulative state, the exit code, the failure digest.

The exit code describes the input's state, not one run (SPEC §3): the failure budget is
``failed / (ok, earlier runs included, + failed)``. Every pair of the input is either ``skipped`` (ok in an
earlier run) or processed in this run (``ok`` or ``failed``: failures are retried), so the cumulative state is
``ok + skipped`` ok pairs and ``failed`` failed pairs, and rerunning an unchanged input gives the same exit code.

``<output>/_summary.json`` holds the latest run's summary, with ``this_run`` and ``cumulative`` sections and the
list of earlier runs; each run's own summary stays in ``<output>/_manifest/summary-<run_id>.json``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from pipeline import schema as S

__all__ = ["build_summary", "exit_code", "format_digest", "format_summary", "save_summary"]

logger = logging.getLogger(__name__)


def build_summary(
    *,
    run_id: str,
    input_uri: str,
    output: str | None,
    dry_run: int | None,
    counts: dict[str, int],
    total: int,
    elapsed: float,
    nodes: int,
    budget: float,
    rates: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """The summary dict (see the module docstring); flat ``pairs_*`` keys are this run's counts."""
    ok, failed, skipped = (int(counts.get(k, 0)) for k in (S.STATUS_OK, S.STATUS_FAILED, S.STATUS_SKIPPED))
    processed = ok + failed
    overall = processed / elapsed if elapsed > 0 else 0.0
    rates = rates or {}
    steady = rates.get("steady_pairs_per_s")
    rate = steady if dry_run is not None and steady else overall  # a dry run projects from the steady state
    cumulative_ok = ok + skipped
    fraction = failed / (cumulative_ok + failed) if cumulative_ok + failed else 0.0
    nothing = cumulative_ok + failed == 0
    within = fraction <= budget and not nothing
    this_run = {
        "pairs_total": total,
        "pairs_ok": ok,
        "pairs_failed": failed,
        "pairs_skipped": skipped,
        "failure_fraction": failed / processed if processed else 0.0,
        "elapsed_s": elapsed,
        "pairs_per_s": overall,
        "bytes_in": int(counts.get("bytes_in", 0)),
        "bytes_out": int(counts.get("bytes", 0)),
        "storage_retries": int(counts.get(S.STORAGE_RETRIES, 0)),
    }
    return {
        "run_id": run_id,
        "input": input_uri,
        "output": output,
        "dry_run": dry_run,
        **this_run,
        "pairs_per_s": rate,
        "startup_s": rates.get("startup_s"),
        "steady_pairs_per_s": steady,
        "failure_fraction": fraction,
        "failure_budget": budget,
        "within_budget": within,
        "exit_code": 0 if within else 1,
        "nodes": nodes,
        "projected_node_hours_total": (total / rate / 3600.0 * nodes) if rate > 0 else None,
        "projected_node_hours_remaining": (max(total - skipped, 0) / rate / 3600.0 * nodes) if rate > 0 else None,
        "this_run": this_run,
        "cumulative": {
            "pairs_ok": cumulative_ok,
            "pairs_failed": failed,
            "failure_fraction": fraction,
            "note": "ok includes pairs finished by earlier runs; failed are the pairs failing as of this run",
        },
    }


def exit_code(summary: dict[str, Any]) -> int:
    """0 when the input's failure fraction (earlier runs included) is within budget, 1 otherwise (also when
    the input yielded no pair at all: nothing found is not success)."""
    return 0 if summary.get("within_budget", False) else 1


def save_summary(summary: dict[str, Any], output: str) -> None:
    """Write ``_manifest/summary-<run_id>.json`` and ``_summary.json`` (which lists every run's summary)."""
    from pipeline.io.fsutil import atomic_write_bytes, filesystem_for, join_key

    run_file = join_key(output, S.MANIFEST_DIR, f"summary-{summary['run_id']}.json")
    atomic_write_bytes(run_file, json.dumps(summary, indent=2, sort_keys=True).encode())
    fs, root = filesystem_for(output)
    try:
        names = fs.ls(f"{root}/{S.MANIFEST_DIR}", detail=False)
    except FileNotFoundError:
        names = []
    runs = sorted(
        n.rsplit("/", 1)[-1][len("summary-") : -len(".json")]
        for n in names
        if n.rsplit("/", 1)[-1].startswith("summary-") and n.endswith(".json")
    )
    latest = {**summary, "runs": [{"run_id": r, "summary": f"{S.MANIFEST_DIR}/summary-{r}.json"} for r in runs]}
    atomic_write_bytes(join_key(output, S.SUMMARY_FILE), json.dumps(latest, indent=2, sort_keys=True).encode())


def format_digest(digest: dict[str, Any], *, failed: int) -> str:
    """The failure digest: counts by stage and reason, the first pair ids with their reasons, the manifest."""
    if not failed:
        return ""
    lines = [f"failures by stage and reason ({failed} pair{'' if failed == 1 else 's'}):"]
    for item in digest.get("by_stage_reason", []):
        lines.append(f"  {item['count']:>8}  {item['stage']:<9} {item['reason']}")
    first = digest.get("first", [])
    if first:
        lines.append(f"first {len(first)} failed pair{'' if len(first) == 1 else 's'}:")
        for item in first:
            error = " ".join(str(item["error"]).split())
            lines.append(f"  {item['pair_id']}  [{item['stage']}] {error[:200]}")
    lines.append(f"every failure with its reason: {digest.get('manifest')} (Parquet; latest row per pair_id)")
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary for the console."""
    run = summary.get("this_run", summary)
    cumulative = summary.get("cumulative", {})
    lines = [
        *([f"method: {summary['method']}"] if summary.get("method") else []),
        f"pairs: {run['pairs_ok']} ok, {run['pairs_failed']} failed, {run['pairs_skipped']} already done "
        f"(of {run['pairs_total']} discovered)",
        f"time: {run['elapsed_s']:.1f} s, {run['pairs_per_s']:.2f} pairs/s on {summary['nodes']} node(s)",
        f"bytes: {run['bytes_in'] / 1e6:.1f} MB in, {run['bytes_out'] / 1e6:.1f} MB out",
    ]
    if run.get("storage_retries"):
        lines.append(
            f"storage: {run['storage_retries']} operation(s) retried after throttling or transient errors "
            "(503 SlowDown, timeouts, connection resets)"
        )
    if summary.get("dry_run") is not None and summary.get("steady_pairs_per_s"):
        lines.append(
            f"rates: start-up {summary['startup_s']:.1f} s to the first pair, then {summary['steady_pairs_per_s']:.2f} "
            "pairs/s steady state (the projection uses the steady state)"
        )
    projected = summary.get("projected_node_hours_total")
    if projected is not None and math.isfinite(projected):
        lines.append(f"projection: {projected:.4f} node-hours for all {run['pairs_total']} pairs at this rate")
    if cumulative:
        total = cumulative["pairs_ok"] + cumulative["pairs_failed"]
        lines.append(
            f"input state: {cumulative['pairs_ok']} ok (earlier runs included), {cumulative['pairs_failed']} failed"
        )
        if total == 0:
            lines.append("failures: no pair was processed — NOTHING FOUND")
    lines.append(
        f"failures: {summary['failure_fraction']:.2%} of the input (budget {summary['failure_budget']:.2%})"
        + ("" if summary["within_budget"] else " — OVER BUDGET")
    )
    digest = summary.get("failures")
    if digest:
        text = format_digest(digest, failed=run["pairs_failed"])
        if text:
            lines.append(text)
    if summary.get("output"):
        lines.append(f"output: {summary['output']}")
    return "\n".join(lines)
