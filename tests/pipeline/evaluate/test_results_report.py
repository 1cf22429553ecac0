"""The sections of docs/RESULTS.md (pipeline.evaluate.results.report), each from a small synthetic work folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.evaluate.results.compare import TARGET_METRICS
from pipeline.evaluate.results.experiments import multiplicative_fingerprint
from pipeline.evaluate.results.methods import ENVELOPED, PER_IMAGE, RUNNING
from pipeline.evaluate.results.published import VIFB_NAMES
from pipeline.evaluate.results.report import cmd_report
from pipeline.evaluate.results.report.ablations import ablation_section
from pipeline.evaluate.results.report.additive import additive_section, toolbox_section
from pipeline.evaluate.results.report.decisions import bn_section, envelope_section
from pipeline.evaluate.results.report.diagnostics import task_vs_general
from pipeline.evaluate.results.report.spectral import code_note, rs_steps, spectral_section
from pipeline.evaluate.results.report.training import training_section
from pipeline.evaluate.results.testsets import MODELS, RS_SETS

VARIANTS = ("maugif:per_image+no_envelope", "maugif:running+no_envelope", ENVELOPED)
BASELINES = ("average", "maxabs", "dwt", "laplacian")


def _additive_run(write_run, flat, folder, ours: float = 2.0, baselines: float = 1.0):
    means = {v: flat(ours, seconds=0.5) for v in VARIANTS}
    means.update({b: flat(baselines, seconds=0.1) for b in BASELINES})
    return write_run(folder, means)


def test_additive_section_not_evaluated_says_how_to_run_it(tmp_path):
    lines, verdicts, bn_rows = [], [], []
    additive_section(tmp_path, "tno", lines, verdicts, bn_rows, RUNNING, RUNNING)
    assert lines == ["### TNO\n\nNot evaluated yet (`make_results.py evaluate --only tno`).\n"]
    assert verdicts == [] and bn_rows == []


def test_additive_section_with_published_rows_has_both_targets(tmp_path, write_run, flat):
    _additive_run(write_run, flat, tmp_path / "eval" / "tno")
    lines, verdicts, bn_rows = [], [], []
    additive_section(tmp_path, "tno", lines, verdicts, bn_rows, RUNNING, ENVELOPED)
    assert lines[0] == "### TNO (2 pairs, cddfuse convention)\n"
    table = lines[1].split("\n")
    assert table[0] == "| method | " + " | ".join(TARGET_METRICS) + " |"
    assert table[2].startswith("| MAUGIF (vif/heldout-tno, per-image BN) | **2.000** |")
    assert table[-2].startswith("| CDDFuse (published) | 7.120 | 46.00 |")  # published rows never bold
    assert verdicts[0] == (
        "TNO",
        "beats every classical baseline on >= 5 of 8",
        True,
        "average: 8/8 (behind on none); maxabs: 8/8 (behind on none); dwt: 8/8 (behind on none); "
        "laplacian: 8/8 (behind on none)",
    )
    assert verdicts[1][:3] == ("TNO", "DeFusion's published level", True)  # mi, scd, vif, qabf, ssim
    assert verdicts[1][3].startswith("5/8 at or above DeFusion; short on en 2.000 vs 6.950")
    assert bn_rows == [("TNO", flat(2.0, seconds=0.5), flat(2.0, seconds=0.5))]


def test_additive_section_without_published_rows_shows_ag_psnr_and_time(tmp_path, write_run, flat):
    _additive_run(write_run, flat, tmp_path / "eval" / "mfiwhu", ours=1.0, baselines=2.0)
    lines, verdicts, bn_rows = [], [], []
    additive_section(tmp_path, "mfiwhu", lines, verdicts, bn_rows, RUNNING, RUNNING)
    assert lines[1].split("\n")[0].endswith("| ssim | ag | psnr | seconds ↓ |")
    assert [v[:3] for v in verdicts] == [("MFI-WHU", "beats every classical baseline on >= 5 of 8", False)]
    assert verdicts[0][3].startswith("average: 0/8 (behind on en, sd, sf, mi, scd, vif, qabf, ssim)")


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_toolbox_section_ranks_ours_among_the_published_methods(tmp_path, write_run, flat):
    _additive_run(write_run, flat, tmp_path / "eval" / "vifb", ours=0.25)
    table = tmp_path / "toolbox.csv"
    published = [("img", m, name, v) for m, v in (("A", 0.1), ("B", 0.2), ("C", 0.3)) for name in VIFB_NAMES]
    pd.DataFrame(published, columns=["image", "method", "metric", "value"]).to_csv(table, index=False)
    # Published methods on one image ("img"); ours on p0, p1: only images in our rows count, so none match.
    lines, verdicts, bn_rows = [], [], []
    toolbox_section(tmp_path, ("vifb",), "VIFB", table, VIFB_NAMES, lines, verdicts, bn_rows, True, RUNNING)
    assert lines[0] == "### VIFB (2 images, vifb convention, 0 published methods)\n"
    assert verdicts[1][:3] == ("VIFB", "stretch: Qabf and MI >= median published method", False)  # no median
    write_run(tmp_path / "eval" / "vifb", {v: flat(0.25) for v in VARIANTS} | {"average": flat(1.0)}, pairs=("img",))
    lines, verdicts, bn_rows = [], [], []
    toolbox_section(tmp_path, ("vifb",), "VIFB", table, VIFB_NAMES, lines, verdicts, bn_rows, True, RUNNING)
    assert lines[0] == "### VIFB (1 images, vifb convention, 3 published methods)\n"
    assert "| median of published methods | 0.200 |" in lines[1]
    assert lines[2] == (
        "Rank of MAUGIF (maugif:running) among the published methods plus ours (1 = best): "
        "en 2/4, sd 2/4, sf 2/4, ag 2/4, mi 2/4, qabf 2/4, ssim 2/4, psnr 2/4.\n"
    )
    assert verdicts[1] == (
        "VIFB",
        "stretch: Qabf and MI >= median published method",
        True,
        "qabf 0.250 vs 0.200 (+0.05, +25.0 %); mi 0.250 vs 0.200 (+0.05, +25.0 %)",
    )


def test_spectral_section_judges_sam_and_ergas_and_flags_stale_code(tmp_path, write_run):
    wald = {"maugif": {"sam": 2.0, "ergas": 5.0}, "bicubic": {"sam": 3.0, "ergas": 4.0}}
    wald |= {b: {"sam": 4.0, "ergas": 6.0} for b in ("brovey", "gihs", "gsa")}
    write_run(tmp_path / "eval" / "wv2_wald", wald)
    (tmp_path / "eval" / "wv2_wald" / "summary.json").write_text("{}")
    write_run(tmp_path / "eval" / "wv2_full", {"maugif": {"qnr": 0.9, "seconds": 9.0}})
    lines, verdicts = [], []
    spectral_section(tmp_path, lines, verdicts)
    assert lines[0] == "### WorldView-2 (PAN + 8-band MS, r = 4) (2 scene(s))\n"
    assert "| maugif | **2.000** | 5.000 | – | – | **0.900** |" in lines[1]
    assert lines[2].startswith("**Stale:**") and "stored: unrecorded" in lines[2]
    assert lines[3:] == [f"### {title}\n\nNot evaluated yet.\n" for key, (title, *_) in RS_SETS.items() if key != "wv2"]
    assert verdicts == [
        (
            "WorldView-2 (PAN + 8-band MS, r = 4)",
            "lower SAM and ERGAS than bicubic, Brovey, GIHS, GSA (Wald)",
            False,
            "behind: bicubic ergas 5.000 vs 4.000 (+1, +25.0 %)",
        )
    ]
    code = json.dumps({"multiplicative_fingerprint": multiplicative_fingerprint()})
    (tmp_path / "eval" / "wv2_wald" / "code.json").write_text(code)
    assert code_note(tmp_path, "wv2").startswith("MAUGIF rows fitted with the current multiplicative code")


def test_rs_steps_reads_the_saved_configs(tmp_path):
    assert rs_steps(tmp_path) == "(not evaluated yet)"
    configs = {
        "wv2_wald": "multiplicative:\n  steps: 500\n",
        "wv2_full": "multiplicative:\n  steps: 1000\n",
        "landsat_wald": "protocol: wald\n",
    }
    for name, text in configs.items():
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "config.yaml").write_text(text)
    assert rs_steps(tmp_path) == "1000 / 500 / the config default"


def test_bn_section_states_the_rule_on_the_counts():
    lines = []
    bn_section([], lines, 3, 4)
    assert lines == ["Not evaluated yet.\n"]
    per = dict.fromkeys(TARGET_METRICS, 1.0) | {"ag": 1.0, "psnr": 1.0, "qabf": 0.5}
    run = dict.fromkeys(TARGET_METRICS, 1.0) | {"ag": 1.0, "psnr": 1.0, "ssim": 0.5}
    lines = []
    bn_section([("TNO", per, run)], lines, 7, 7)
    assert lines[2] == "| TNO | 1/10 (ssim) | 1/10 (qabf) | 0.500 / 1.000 | 1.000 / 0.500 |"
    assert "better on 7 set-metric cells, running statistics on 7. **Decision from these numbers: " in lines[4]
    assert "`bn_mode=per_image`.**" in lines[4]  # a tie keeps per-image
    lines = []
    bn_section([("TNO", per, run)], lines, 2, 9)
    assert "`bn_mode=running`.**" in lines[4] and lines[5].startswith("Applied: the bundled checkpoints store")


def test_envelope_section_compares_the_decisions_with_the_presets():
    lines = []
    envelope_section({}, lines)
    assert lines == ["Not evaluated (the envelope is compared with running BatchNorm statistics only).\n"]
    lines = []
    envelope_section({"vif": (True, 7, 3), "mff": (False, 5, 5)}, lines)  # the presets: vif max, mff none
    assert lines[3:5] == ["| vif | 7 | 3 | envelope `max` |", "| mff | 5 | 5 | no envelope (SPEC rule) |"]
    assert lines[5].endswith("vif `max`, mff `none` (the same decisions).\n")
    lines = []
    envelope_section({"mff": (True, 6, 4)}, lines)
    assert "**these differ from the decisions above**" in lines[-1]


def test_training_section_lists_untrained_models_and_the_bundled_checkpoints(tmp_path):
    lines = []
    training_section(tmp_path, tmp_path / "ckpts", lines)
    assert [line for line in lines if "not trained yet" in line] == [
        f"| {m} | not trained yet | | | | | | |" for m in MODELS
    ]
    assert any(line.startswith("| mff | `mff/heldout-mfiwhu` | ") and "| running | " in line for line in lines)


def test_task_vs_general_and_ablations_before_anything_ran(tmp_path):
    assert task_vs_general(tmp_path, tmp_path, {"vif": RUNNING, "general": RUNNING}) == ["Not trained yet."]
    out = ablation_section(tmp_path, tmp_path, dict.fromkeys(("vif", "medical", "mff", "mef", "general"), RUNNING))
    assert out[0] == (
        "`vif-t0/heldout-tno` (threshold = 0): not evaluated yet (`make_results.py train/evaluate --only "
        "vif-t0/heldout-tno`).\n"
    )
    assert "`vif-t0-long/heldout-tno` (threshold = 0, stage2_samples = 7200, cpus = 2)" in out[3]
    assert out[6].startswith("`vif-t0` is not promoted (the judged `vif` models are the preset's;")


def test_report_page_from_a_partial_work_folder(tmp_path, write_run, flat):
    _additive_run(write_run, flat, tmp_path / "eval" / "tno", ours=2.0)
    _additive_run(write_run, flat, tmp_path / "eval" / "lytro", ours=0.5)
    out = tmp_path / "RESULTS.md"
    cmd_report(tmp_path, tmp_path / "ckpts", out)
    text = out.read_text()
    assert text.startswith("<!-- Generated by scripts/make_results.py report; do not edit by hand. -->\n# Results\n")
    # TNO: baselines and DeFusion (5 of 8 at its level); Lytro: behind the baselines; the rest not evaluated.
    assert "## Targets (2 of 3 met)" in text
    assert "| TNO | beats every classical baseline on >= 5 of 8 | yes |" in text
    assert "| Lytro | beats every classical baseline on >= 5 of 8 | **no** |" in text
    # Both modes tie on every set: per-image statistics are judged, and the envelope is not considered.
    assert f"Judged with: vif `{PER_IMAGE}`, medical `{PER_IMAGE}`" in text
    # The other generated result pages are linked from this one.
    assert "[RESULTS_MULTIFOCUS.md](RESULTS_MULTIFOCUS.md) (generated by `scripts/multifocus_results.py`" in text
    assert "[RESULTS_MULTIPLICATIVE.md](RESULTS_MULTIPLICATIVE.md) (issue 15, generated by" in text
    headings = [line for line in text.split("\n") if line.startswith("## ")]
    assert headings[-6:] == [
        "## BatchNorm at inference: per-image vs running statistics (SPEC §1.1)",
        "## Envelope: fused luma capped at the brighter source",
        "## Diagnostic: the SSIM gap on the medical sets",
        "## Diagnostic: task models vs the general model on the sets neither saw",
        "## Ablations (a promoted family is judged in the targets above; the others are not)",
        "## Trained checkpoints",
    ]
