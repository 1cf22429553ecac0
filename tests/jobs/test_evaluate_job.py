"""CI smoke test of ``jobs/evaluate.py``: three tiny pairs (crops of the bundled MFI-WHU samples, MIT), two
methods, the shared local Ray instance; checks the CSVs, the means against the per-image rows, and the
report."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "mff"
ADDITIVE_METRICS = {
    "en",
    "sd",
    "sf",
    "ag",
    "mi",
    "scd",
    "cc",
    "vif",
    "qabf",
    "nabf",
    "ssim",
    "ms_ssim",
    "psnr",
}


def _load_job():
    spec = importlib.util.spec_from_file_location("evaluate_job", REPO / "jobs" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_pairs(tmp_path: Path) -> Path:
    """A manifest of three 96x96 crops of the bundled multi-focus samples, with absolute URIs."""
    rows = []
    for stem in ("mfiwhu_1", "mfiwhu_3", "mfiwhu_5"):
        uris = []
        for side in ("source1", "source2"):
            with Image.open(SAMPLES / side / f"{stem}.png") as img:
                crop = np.asarray(img)[80:176, 80:176]
            path = tmp_path / "pairs" / side / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(path)
            uris.append(str(path))
        rows.append([stem, *uris, "mff"])
    manifest = tmp_path / "pairs" / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([["pair_id", "uri_a", "uri_b", "task"], *rows])
    return manifest


@pytest.mark.timeout(240)
def test_evaluate_job_writes_consistent_tables_and_a_report(ray_session, tiny_pairs, tmp_path):
    import maugif_core

    checkpoint = maugif_core.save_checkpoint(maugif_core.build_model("mff"), tmp_path / "ckpt")  # untrained
    out = tmp_path / "eval"
    code = _load_job().main(
        ["--input", str(tiny_pairs), "--task", "mff", "--output", str(out), "--checkpoint", str(checkpoint),
         "--methods", "maugif,maugif:per_image+envelope,average", "--convention", "vifb", "--grid-pairs", "2",
         "--set", "num_actors=1"]
    )  # fmt: skip
    assert code == 0

    per_image = pd.read_csv(out / "metrics_per_image.csv")
    assert list(per_image.columns) == ["pair_id", "method", "metric", "value"]
    assert set(per_image["method"]) == {"maugif", "maugif:per_image+envelope", "average"}
    assert set(per_image["metric"]) == ADDITIVE_METRICS | {"seconds"}
    assert len(per_image) == 3 * 3 * (len(ADDITIVE_METRICS) + 1)  # pairs x methods x (metrics + seconds)
    # The variant is the same weights with another config (running BN by default, per-image + envelope here).
    by_method = per_image[per_image["metric"] == "sd"].set_index(["method", "pair_id"])["value"]
    assert not np.allclose(by_method["maugif"].sort_index(), by_method["maugif:per_image+envelope"].sort_index())
    assert per_image["value"].notna().all()

    means = pd.read_csv(out / "metrics_mean.csv")
    assert list(means.columns) == ["method", "metric", "mean"]
    groups = per_image.groupby(["method", "metric"])["value"]
    expected, scale = groups.mean(), groups.apply(lambda v: v.abs().max())
    for row in means.to_dict("records"):
        key = (row["method"], row["metric"])
        # Both files print 10 significant digits: the error bound scales with the values averaged, not with their
        # mean (signed metrics such as SCD can average to nearly 0).
        assert row["mean"] == pytest.approx(expected[key], rel=1e-9, abs=1e-9 * scale[key])
    assert len(means) == len(expected)

    report = (out / "report.html").read_text()
    plots = sorted(p.relative_to(out).as_posix() for p in (out / "plots").glob("*.png"))
    assert "plots/dist_qabf.png" in plots
    for name in [*plots, "grid.png", "metrics_per_image.csv"]:
        assert f'"{name}"' in report and (out / name).is_file()
    assert "| maugif | 3 |" in (out / "metrics_table.md").read_text()
    assert sorted(p.name for p in (out / "grid").iterdir()) == ["mfiwhu_1", "mfiwhu_3"]


TNO = Path("/work/shared/datasets/TNO")


@pytest.mark.timeout(300)
@pytest.mark.skipif(not (TNO / "vi" / "01.png").is_file(), reason="shared TNO data set not present")
def test_report_compares_common_pairs_and_names_the_weights_and_their_training_data(ray_session, tmp_path):
    """Case 9: another tool's folder fused only one of two pairs, and the bundled vif model was trained on TNO.
    The table compares every method on the one common pair, says why the other was dropped, names the weights
    with their training data and flags the TNO pairs as seen in training."""
    manifest = tmp_path / "tno.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows(
            [["pair_id", "uri_a", "uri_b", "task"]]
            + [[f"tno_{n}", str(TNO / "vi" / f"{n}.png"), str(TNO / "ir" / f"{n}.png"), "vif"] for n in ("01", "02")]
        )
    fused = tmp_path / "othertool"
    fused.mkdir()
    Image.open(TNO / "vi" / "01.png").save(fused / "tno_01.png")  # the other tool has no result for tno_02
    out = tmp_path / "eval"
    code = _load_job().main(
        ["--input", str(manifest), "--task", "vif", "--output", str(out), "--methods", "maugif,average,othertool",
         "--fused-dir", f"othertool={fused}", "--grid-pairs", "0", "--set", "num_actors=1",
         "--set", "max_failed_fraction=1.0"]
    )  # fmt: skip
    assert code == 0
    table = (out / "metrics_table.md").read_text()
    for method in ("maugif", "average", "othertool"):
        assert f"| {method} | 1 |" in table  # n = the common pair, for every method
    assert "compared on the 1 pairs every method scored" in table
    assert "1 pairs dropped from the comparison" in table and "tno_02: othertool failed" in table
    assert "bundled `vif` model" in table and "training data: TNO, RoadScene" in table
    assert "2 of the 2 pairs scored here lie in its training data (TNO)" in table
    pairs = pd.read_csv(out / "pairs.csv", keep_default_na=False).set_index("pair_id")
    assert list(pairs["in_comparison"]) == [True, False]
    assert "no fused image for pair 'tno_02'" in pairs.loc["tno_02", "dropped_because"]
    assert set(pairs["in_training_data"]) == {"TNO"}
    means = pd.read_csv(out / "metrics_mean.csv")
    per_image = pd.read_csv(out / "metrics_per_image.csv")
    common = per_image[(per_image["pair_id"] == "tno_01") & (per_image["method"] == "average")]
    en = means[(means["method"] == "average") & (means["metric"] == "en")]["mean"].item()
    assert en == pytest.approx(common[common["metric"] == "en"]["value"].item())  # mean over the common pair only
