"""Comparing means, the targets' verdicts and the Markdown tables of the results tooling."""

from __future__ import annotations

import math

from pipeline.evaluate.results import targets
from pipeline.evaluate.results.compare import TARGET_METRICS, cell_counts, metrics_ahead
from pipeline.evaluate.results.tables import fmt, format_table, gap_text

DEFUSION_TNO = (6.95, 38.41, 8.21, 1.78, 1.64, 0.60, 0.41, 0.96)  # METRICS.md


def test_metrics_ahead_respects_direction_and_skips_ties_nan_and_missing():
    ours = {"en": 2.0, "sam": 1.0, "sf": math.nan, "mi": 1.0}
    other = {"en": 1.0, "sam": 2.0, "sf": 1.0, "mi": 1.0, "qabf": 0.5}
    metrics = ("en", "sam", "sf", "mi", "qabf")
    assert metrics_ahead(ours, other, metrics) == ["en", "sam"]  # SAM: lower is better
    assert metrics_ahead(other, ours, metrics) == []  # NaN, a tie and a missing value count for neither
    assert cell_counts(ours, other, metrics) == (2, 0)


def test_baseline_target_counts_ties_as_missed_and_prints_the_margins():
    ours = dict(zip(TARGET_METRICS, [7.0, 40.0, 12.0, 2.0, 1.6, 0.6, 0.45, 1.0], strict=True))
    baseline = {**ours, "en": 7.1, "sd": 41.0}  # ahead on en and sd, tied elsewhere: nothing beaten
    ok, text = targets.baseline_verdict({"maugif": ours, "average": baseline}, ("average",), "maugif")
    assert not ok and text == "average: 0/8 (behind on en, sd, sf, mi, scd, vif, qabf, ssim)"
    lower = {m: v * 0.9 for m, v in baseline.items()}
    lower["sf"] = 12.0
    ok, text = targets.baseline_verdict({"maugif": ours, "average": lower}, ("average",), "maugif")
    assert ok and text == "average: 7/8 (behind on sf)"


def test_baseline_target_needs_every_evaluated_baseline_and_ours():
    ours = dict.fromkeys(TARGET_METRICS, 2.0)
    five = {**dict.fromkeys(TARGET_METRICS, 1.0), "en": 3.0, "sd": 3.0, "sf": 3.0}  # ours ahead on exactly 5
    four = {**five, "mi": 3.0}
    means = {"maugif": ours, "average": five, "dwt": four}
    ok, text = targets.baseline_verdict(means, ("average", "maxabs", "dwt"), "maugif")  # maxabs not evaluated
    assert not ok and text == "average: 5/8 (behind on en, sd, sf); dwt: 4/8 (behind on en, sd, sf, mi)"
    assert targets.baseline_verdict({"maugif": ours, "average": five}, ("average",), "maugif")[0]
    nan_ours = {**ours, "vif": math.nan}  # a NaN metric is not a win: 4 of 8
    assert not targets.baseline_verdict({"maugif": nan_ours, "average": five}, ("average",), "maugif")[0]
    ok, text = targets.baseline_verdict({"average": five}, ("average",), "maugif")  # no MAUGIF rows
    assert not ok and text.startswith("average: 0/8")
    # No baseline evaluated: nothing was beaten, so the target is not met (it used to read as met).
    assert targets.baseline_verdict({"maugif": ours}, ("average", "dwt"), "maugif") == (
        False,
        "no classical baseline evaluated",
    )


def test_defusion_target_reaches_on_ties_and_lists_the_shortfalls():
    ours = dict(zip(TARGET_METRICS, [7.0, 40.0, 12.0, 2.0, 1.6, 0.6, 0.45, 1.0], strict=True))
    ok, text = targets.defusion_verdict(ours, DEFUSION_TNO)  # vif 0.60 = 0.60: reached
    assert ok and text == "7/8 at or above DeFusion; short on scd 1.600 vs 1.640 (-0.04, -2.4 %)"
    behind = {**ours, "en": 6.0, "sd": 30.0, "sf": 8.0}
    ok, text = targets.defusion_verdict(behind, DEFUSION_TNO)
    assert not ok and text.startswith("4/8 at or above DeFusion; short on en 6.000 vs 6.950")
    ok, text = targets.defusion_verdict({**ours, "en": math.nan, "sd": math.nan, "sf": math.nan}, DEFUSION_TNO)
    assert not ok and text.startswith("4/8")  # NaN does not reach
    assert targets.defusion_verdict({}, DEFUSION_TNO) == (False, "0/8 at or above DeFusion")


def test_fmt_digits_by_magnitude_and_a_dash_for_no_value():
    assert [fmt(v) for v in (None, math.nan, math.inf, 123.456, -150.0, 12.5, 0.12345)] == [
        "–",
        "–",
        "–",
        "123.5",
        "-150.0",
        "12.50",
        "0.123",
    ]
    assert gap_text(1.6, 1.64, "scd") == "scd 1.600 vs 1.640 (-0.04, -2.4 %)"


def test_table_bolds_the_best_of_the_candidate_rows_only():
    rows = [
        ("ours", {"en": 2.0, "sam": 1.0, "seconds": 5.0}),
        ("base", {"en": 3.0, "sam": 0.5, "seconds": 1.0}),
        ("tied", {"en": 3.0, "sam": math.nan}),
        ("published", {"en": 9.0, "sam": 0.1}),
        ("not run", {}),
    ]
    assert format_table(rows, ("en", "sam", "seconds"), bold_over=3).split("\n") == [
        "| method | en | sam ↓ | seconds ↓ |",
        "|---|---|---|---|",
        "| ours | 2.000 | 1.000 | 5.000 |",
        "| base | **3.000** | **0.500** | 1.000 |",  # lower SAM wins; seconds are never bold
        "| tied | **3.000** | – | – |",
        "| published | 9.000 | 0.100 | – |",  # beyond bold_over: never bold
    ]
    everything = format_table(rows, ("en",))
    assert "| published | **9.000** |" in everything and "not run" not in everything
