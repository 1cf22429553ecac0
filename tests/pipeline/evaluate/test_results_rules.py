"""The results tooling's decision rules (pipeline.evaluate.results.rules): BatchNorm mode, envelope, promotion of
ablation families, and the models judged and bundled from them."""

from __future__ import annotations

import math

from pipeline.evaluate.results import rules
from pipeline.evaluate.results.compare import DECISION_METRICS, TARGET_METRICS
from pipeline.evaluate.results.methods import ENVELOPED, PER_IMAGE, RUNNING
from pipeline.evaluate.results.rows import method_means

# The names jobs/evaluate.py runs the variants under (read back as PER_IMAGE / RUNNING).
RUN_PER, RUN_RUNNING = "maugif:per_image+no_envelope", "maugif:running+no_envelope"


def test_bn_mode_goes_to_the_mode_with_more_cells_and_a_tie_keeps_per_image():
    assert rules.choose_bn_mode(6, 5) == PER_IMAGE
    assert rules.choose_bn_mode(5, 6) == RUNNING
    assert rules.choose_bn_mode(5, 5) == PER_IMAGE
    assert rules.choose_bn_mode(0, 0) == PER_IMAGE  # nothing measured: the reference's behaviour
    assert rules.config_bn_mode(RUNNING) == "running"
    assert rules.config_bn_mode(PER_IMAGE) == "per_image"


def test_envelope_needs_strictly_more_cells():
    assert rules.choose_envelope(7, 3) is True
    assert rules.choose_envelope(5, 5) is False  # a tie keeps SPEC's rule
    assert rules.choose_envelope(0, 0) is False
    assert rules.choose_envelope(2, 3) is False


def test_judged_keys_add_the_envelope_only_where_it_was_chosen():
    keys = rules.judged_keys(RUNNING, {"vif": (True, 7, 3), "mff": (False, 5, 5)})
    assert keys == {"vif": ENVELOPED, "medical": RUNNING, "mff": RUNNING, "mef": RUNNING, "general": RUNNING}
    assert set(rules.judged_keys(PER_IMAGE, {})) == set(rules.ENVELOPE_TASKS)
    assert set(rules.judged_keys(PER_IMAGE, {}).values()) == {PER_IMAGE}


def test_promotion_takes_the_largest_lead_and_keeps_the_first_on_a_tie():
    candidates = [
        ("vif", "even", 10, 10),  # ahead on as many cells as behind: does not qualify
        ("vif", "first", 12, 4),  # lead 8
        ("vif", "same-lead", 15, 7),  # lead 8 too: the first one stays
        ("medical", "small", 3, 2),
        ("mff", "none", 0, 0),
    ]
    assert rules.choose_promotions(candidates) == {"vif": ("first", 12, 4), "medical": ("small", 3, 2)}
    assert rules.choose_promotions([candidates[2], candidates[1]]) == {"vif": ("same-lead", 15, 7)}
    assert rules.choose_promotions([("vif", "a", 12, 4), ("vif", "b", 20, 4)]) == {"vif": ("b", 20, 4)}
    assert rules.choose_promotions([]) == {}


def test_pooled_cells_pool_the_mefb_folds_and_skip_sets_missing_a_method(tmp_path, write_run, flat):
    # Fold by fold, each side wins one fold outright; pooled, running's mean (2.5) beats per-image's (1.0).
    write_run(tmp_path / "eval" / "mefb_even", {RUN_PER: flat(2.0), RUN_RUNNING: flat(1.0)})
    write_run(tmp_path / "eval" / "mefb_odd", {RUN_PER: flat(0.0), RUN_RUNNING: flat(4.0)})
    write_run(tmp_path / "eval" / "tno", {RUN_PER: flat(1.0)})  # no running run: counts for neither
    keys = ["tno", "mefb_even", "mefb_odd", "lytro"]  # lytro not evaluated at all
    assert rules.pooled_cells(tmp_path, "eval", keys, PER_IMAGE, RUNNING) == (0, len(DECISION_METRICS))


def test_pooled_cells_count_ties_and_nan_for_neither(tmp_path, write_run, flat):
    write_run(tmp_path / "eval" / "tno", {RUN_PER: flat(2.0, en=math.nan, sd=1.0), RUN_RUNNING: flat(1.0)})
    write_run(tmp_path / "eval" / "lytro", {RUN_PER: flat(1.0), RUN_RUNNING: flat(1.0, ssim=1.5)})
    per, run = rules.pooled_cells(tmp_path, "eval", ["tno", "lytro"], PER_IMAGE, RUNNING)
    assert (per, run) == (len(DECISION_METRICS) - 2, 1)  # tno: en NaN and sd tied; lytro: only ssim differs


def test_bn_choice_counts_set_metric_cells(tmp_path, monkeypatch, write_run, flat):
    monkeypatch.setattr(rules, "ADDITIVE_SETS", {k: rules.ADDITIVE_SETS[k] for k in ("tno", "lytro")})
    metrics = list(DECISION_METRICS)
    for key, running_better in (("tno", 9), ("lytro", 2)):
        running = {m: 2.0 if j < running_better else 0.5 for j, m in enumerate(metrics)}
        write_run(tmp_path / "eval" / key, {RUN_PER: flat(1.0), RUN_RUNNING: running})
    assert rules.bn_choice(tmp_path) == (RUNNING, 1 + 8, 9 + 2)
    assert rules.bundle_mode(tmp_path) == "running"


def test_envelope_choice_reads_the_envelope_runs_beside_the_main_ones(tmp_path, monkeypatch, write_run, flat):
    """The envelope variant may sit in its own run (``eval_envelope/<set>``, added to an older output): the
    decision reads both runs together, per task, and a tie keeps SPEC's rule."""
    monkeypatch.setattr(rules, "ADDITIVE_SETS", {k: rules.ADDITIVE_SETS[k] for k in ("tno", "lytro")})
    monkeypatch.setattr(rules, "GENERAL_SETS", ())
    metrics = list(DECISION_METRICS)
    for key, envelope_better in (("tno", 7), ("lytro", 5)):
        write_run(tmp_path / "eval" / key, {RUN_RUNNING: flat(1.0)})
        extra = {m: 2.0 if j < envelope_better else 0.5 for j, m in enumerate(metrics)}
        write_run(tmp_path / "eval_envelope" / key, {ENVELOPED: extra})
    choice = rules.envelope_choice(tmp_path)
    assert choice["vif"] == (True, 7, 3)
    assert choice["mff"] == (False, 5, 5)  # a tie: no envelope
    assert choice["medical"] == (False, 0, 0)  # not evaluated: off
    assert choice["general"] == (False, 0, 0)


def test_ours_keys_consider_the_envelope_only_with_running_statistics(tmp_path, monkeypatch, write_run, flat):
    monkeypatch.setattr(rules, "ADDITIVE_SETS", {k: rules.ADDITIVE_SETS[k] for k in ("tno",)})
    # Per-image wins the BatchNorm comparison: the envelope (compared with running statistics) is not looked at.
    write_run(tmp_path / "a" / "eval" / "tno", {RUN_PER: flat(2.0), RUN_RUNNING: flat(1.0), ENVELOPED: flat(3.0)})
    keys, per, run, envelope = rules.ours_keys(tmp_path / "a")
    assert (per, run, envelope) == (len(DECISION_METRICS), 0, {})
    assert set(keys.values()) == {PER_IMAGE}
    write_run(tmp_path / "b" / "eval" / "tno", {RUN_PER: flat(1.0), RUN_RUNNING: flat(2.0), ENVELOPED: flat(3.0)})
    keys, per, run, envelope = rules.ours_keys(tmp_path / "b")
    assert keys["vif"] == ENVELOPED and keys["medical"] == RUNNING
    assert envelope["vif"] == (True, len(DECISION_METRICS), 0)


def _vif_work(root, write_run, flat, families: dict[str, dict[str, dict[str, float]]]):
    """A work folder whose vif folds score 1.0 with both BatchNorm modes (so per-image is judged), with the
    given ablation families' per-image means per fold."""
    for key in ("tno", "roadscene", "vifb"):
        write_run(root / "eval" / key, {RUN_PER: flat(1.0), RUN_RUNNING: flat(1.0), "average": flat(0.5)})
    for prefix, folds in families.items():
        for key, means in folds.items():
            write_run(root / "eval_ablation" / f"{prefix}__heldout-{key}" / key, {RUN_PER: means})
    return root


def test_promotions_need_every_fold_evaluated_and_a_lead(tmp_path, write_run, flat):
    six_of_eight = {m: 2.0 if i < 6 else 0.5 for i, m in enumerate(TARGET_METRICS)}  # 6 ahead, 2 behind
    work = _vif_work(
        tmp_path / "a",
        write_run,
        flat,
        {
            "vif-t0": {k: six_of_eight for k in ("tno", "roadscene", "vifb")},  # 18 ahead, 6 behind
            "vif-t0-long": {"tno": flat(3.0), "roadscene": flat(3.0)},  # vifb missing: not a candidate
        },
    )
    assert rules.promotions(work) == {"vif": ("vif-t0", 18, 6)}
    assert rules.judged_model(work, "tno") == "vif-t0/heldout-tno"
    assert rules.judged_model(work, "mri_ct") == "medical/heldout-mri_ct"
    assert rules.bundled_model(work, "vif") == "vif-t0/heldout-vifb"
    assert rules.bundled_model(work, "mff") == "mff/heldout-mfiwhu"
    # The judged set's rows: the baselines of eval/tno, the MAUGIF rows of the promoted family's run.
    means = method_means(rules.set_rows(work, "tno"))
    assert means[PER_IMAGE]["en"] == 2.0 and means["average"]["en"] == 0.5 and RUNNING not in means
    assert rules.head_to_head(work, "vif-t0", "vif-t0-long", "vif") == [("tno", 0, 8), ("roadscene", 0, 8)]


def test_promotions_choose_the_family_furthest_ahead_and_none_when_behind(tmp_path, write_run, flat):
    six_of_eight = {m: 2.0 if i < 6 else 0.5 for i, m in enumerate(TARGET_METRICS)}
    folds = ("tno", "roadscene", "vifb")
    work = _vif_work(
        tmp_path / "a",
        write_run,
        flat,
        {"vif-t0": dict.fromkeys(folds, six_of_eight), "vif-t0-long": dict.fromkeys(folds, flat(3.0))},
    )
    assert rules.promotions(work) == {"vif": ("vif-t0-long", 24, 0)}
    three_of_eight = {m: 2.0 if i < 3 else 0.5 for i, m in enumerate(TARGET_METRICS)}
    behind = _vif_work(tmp_path / "b", write_run, flat, {"vif-t0": dict.fromkeys(folds, three_of_eight)})
    assert rules.promotions(behind) == {}
    assert rules.judged_model(behind, "tno") == "vif/heldout-tno"
    assert method_means(rules.set_rows(behind, "tno"))[PER_IMAGE]["qabf"] == 1.0
