"""Unit tests of the evaluation logic: Wald degradation, scene preparation, fused-folder matching, the
evaluator actor's rows (called directly, without Ray), the config rules and the tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import schema as S
from pipeline.config.eval_config import EvalJobConfig, FusedSourceConfig, maugif_overrides
from pipeline.errors import ConfigError, PairDiscoveryError
from pipeline.evaluate.evaluation import (
    PairEvaluator,
    check_methods_available,
    crop_to_ratio,
    index_fused_dir,
    prepare_scene,
    wald_degrade,
)
from pipeline.evaluate.evaluation_report import markdown_table, mean_table
from pipeline.evaluate.images import encode_image


def _config(tmp_path, **fields) -> EvalJobConfig:
    base = {"input": str(tmp_path / "pairs.csv"), "task": "pansharpen", "output": str(tmp_path / "out")}
    return EvalJobConfig(**{**base, **fields})


def _smooth_scene(h: int, w: int, bands: int, seed: int = 0) -> np.ndarray:
    """A smooth random multiband image in [0.1, 0.9] (low-pass noise), float32."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    cube = ndimage.gaussian_filter(rng.random((h, w, bands)), sigma=(3, 3, 0))
    cube = (cube - cube.min()) / (cube.max() - cube.min())
    return (0.1 + 0.8 * cube).astype(np.float32)


# ------------------------------------------------------------------------------------------------ Wald
# protocol


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_wald_degrade_divides_both_sides_by_the_ratio_and_keeps_constants(ratio):
    image = np.full((12 * ratio, 8 * ratio, 3), 0.4, np.float32)
    low = wald_degrade(image, ratio, 0.3)
    assert low.shape == (12, 8, 3)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, 0.4, atol=1e-6)


def test_wald_degrade_low_passes_before_decimating():
    # A one-pixel checkerboard is above the low-resolution Nyquist frequency: plain decimation would keep it
    # at full contrast (aliasing), the MTF-like Gaussian removes most of it.
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[..., None]
    low = wald_degrade(checker, 4, 0.3)
    assert low.std() < 0.05 * checker.std()


def test_crop_to_ratio_crops_a_to_multiples_and_b_to_match():
    a, b = np.zeros((51, 41, 4)), np.zeros((102, 82, 1))
    ca, cb = crop_to_ratio(a, b, 2, 2)
    assert ca.shape == (50, 40, 4) and cb.shape == (100, 80, 1)
    with pytest.raises(ValueError, match="smaller than the ratio"):
        crop_to_ratio(np.zeros((1, 5, 2)), np.zeros((3, 15, 1)), 3, 3)


def test_prepare_scene_wald_degrades_both_inputs_and_keeps_the_original_as_reference(tmp_path):
    ms = _smooth_scene(50, 40, 4)
    pan = _smooth_scene(100, 80, 1, seed=1)[..., 0]
    scene = prepare_scene(ms, pan, _config(tmp_path))
    assert scene.ratio == 2
    assert scene.image_a.shape == (25, 20, 4)  # MS degraded by r
    assert scene.image_b.shape == (50, 40, 1)  # PAN degraded by r: the reference grid
    assert scene.reference.shape == (50, 40, 4)
    np.testing.assert_array_equal(scene.reference, ms)


def test_prepare_scene_wald_crops_sizes_that_are_not_multiples_of_the_ratio(tmp_path):
    ms = (_smooth_scene(51, 41, 3) * 255).astype(np.uint8)
    pan = (_smooth_scene(102, 82, 1) * 255).astype(np.uint8)
    scene = prepare_scene(ms, pan, _config(tmp_path))
    assert scene.reference.shape == (50, 40, 3)
    assert scene.reference.dtype == np.float32 and scene.reference.max() <= 1.0  # unit range
    assert scene.image_a.shape == (25, 20, 3) and scene.image_b.shape == (50, 40, 1)


def test_prepare_scene_same_grid_pairs_need_same_grid_ratio(tmp_path):
    hs, ms = _smooth_scene(36, 36, 10), _smooth_scene(36, 36, 3, seed=2)
    with pytest.raises(ValueError, match="same_grid_ratio"):
        prepare_scene(hs, ms, _config(tmp_path, task="hsi_msi"))
    scene = prepare_scene(hs, ms, _config(tmp_path, task="hsi_msi", same_grid_ratio=3))
    assert scene.ratio == 3
    assert scene.image_a.shape == (12, 12, 10)  # only the HS is degraded
    assert scene.image_b.shape == (36, 36, 3)
    assert scene.reference.shape == (36, 36, 10)


def test_prepare_scene_full_protocol_keeps_the_original_pair_and_refuses_one_grid(tmp_path):
    ms, pan = _smooth_scene(32, 32, 4), _smooth_scene(64, 64, 1)
    scene = prepare_scene(ms, pan, _config(tmp_path, protocol="full"))
    assert scene.reference is None and scene.ratio == 2
    assert scene.image_a.shape == (32, 32, 4) and scene.image_b.shape == (64, 64, 1)
    with pytest.raises(ValueError, match="ratio >= 2"):
        prepare_scene(ms, _smooth_scene(32, 32, 2), _config(tmp_path, task="hsi_msi", protocol="full"))


def test_prepare_scene_rejects_a_non_integer_ratio(tmp_path):
    with pytest.raises(ValueError, match="not an integer multiple"):
        prepare_scene(_smooth_scene(30, 30, 4), _smooth_scene(45, 45, 1), _config(tmp_path))


# ---------------------------------------------------------------------------------------------- fused folders


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_index_fused_dir_matches_pair_ids_case_insensitively_and_ignores_other_files(tmp_path):
    _touch(tmp_path / "fused", "p1.png", "P2.PNG", "notes.txt", "p3_tool.jpg")
    index = index_fused_dir(FusedSourceConfig(name="tool", uri=str(tmp_path / "fused")))
    assert set(index) == {"p1", "p2", "p3_tool"}
    assert index["p2"].endswith("P2.PNG")
    index = index_fused_dir(FusedSourceConfig(name="tool", uri=str(tmp_path / "fused"), pattern="{pair_id}_TOOL.*"))
    assert set(index) == {"p3"}


def test_index_fused_dir_errors_name_the_folder(tmp_path):
    with pytest.raises(PairDiscoveryError, match="not an existing folder"):
        index_fused_dir(FusedSourceConfig(name="x", uri=str(tmp_path / "missing")))
    _touch(tmp_path / "empty", "readme.txt")
    with pytest.raises(PairDiscoveryError, match="no image"):
        index_fused_dir(FusedSourceConfig(name="x", uri=str(tmp_path / "empty")))
    _touch(tmp_path / "dup", "p1.png", "p1.jpg")
    with pytest.raises(PairDiscoveryError, match="matches two files"):
        index_fused_dir(FusedSourceConfig(name="x", uri=str(tmp_path / "dup")))


# ------------------------------------------------------------------------------------------------ config


def test_config_rejects_unknown_methods_and_variants(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'dwt' for task pansharpen"):
        _config(tmp_path, methods=("bicubic", "dwt"))
    with pytest.raises(ValueError, match="task pansharpen has no maugif variants"):
        _config(tmp_path, methods=("maugif:running",))
    with pytest.raises(ValueError, match="unknown maugif variant 'eval'"):
        _config(tmp_path, task="vif", methods=("maugif:eval",))
    with pytest.raises(ValueError, match="sets bn_mode twice"):
        _config(tmp_path, task="vif", methods=("maugif:running+per_image",))
    with pytest.raises(ValueError, match="unknown maugif variant 'max'"):
        _config(tmp_path, task="vif", methods=("maugif:running+max",))
    with pytest.raises(ValueError, match="must be unique"):
        _config(tmp_path, task="vif", methods=("average", "average"))
    with pytest.raises(ValueError, match="extra"):
        _config(tmp_path, colour="yes")


def test_maugif_variants_name_config_overrides():
    assert maugif_overrides(None) == {}
    assert maugif_overrides("running") == {"bn_mode": "running"}
    assert maugif_overrides("running+envelope") == {"bn_mode": "running", "envelope": "max"}
    assert maugif_overrides("no_envelope+per_image") == {"envelope": "none", "bn_mode": "per_image"}
    with pytest.raises(ValueError, match="sets envelope twice"):
        maugif_overrides("envelope+no_envelope")


def test_config_fused_folders_become_methods(tmp_path):
    fused = ({"name": "tool", "uri": str(tmp_path)},)
    config = _config(tmp_path, task="vif", fused=fused)
    assert config.method_names == ("maugif", "average", "maxabs", "dwt", "laplacian", "tool")
    with pytest.raises(ValueError, match="not in methods"):
        _config(tmp_path, task="vif", fused=fused, methods=("average",))
    with pytest.raises(ValueError, match="exactly once"):
        FusedSourceConfig(name="tool", uri=str(tmp_path), pattern="fused.png")


def test_config_multiplicative_overrides_only_for_spectral_tasks(tmp_path):
    assert _config(tmp_path, multiplicative={"steps": 10}).multiplicative == {"steps": 10}
    with pytest.raises(ValueError, match="is additive"):
        _config(tmp_path, task="mff", multiplicative={"steps": 10})
    with pytest.raises(ValueError, match="cannot be overridden"):
        _config(tmp_path, multiplicative={"ratio": 4})


def test_maugif_without_checkpoint_or_bundle_fails_on_the_driver(tmp_path, monkeypatch):
    import maugif_core

    monkeypatch.setattr(maugif_core, "pretrained_tasks", lambda: ())
    with pytest.raises(ConfigError, match="needs --checkpoint"):
        check_methods_available(_config(tmp_path, task="vif"))
    check_methods_available(_config(tmp_path, task="vif", methods=("average",)))  # baselines need nothing


# ---------------------------------------------------------------------------------------------- the evaluator


def _row(pair_id, image_a, image_b, task, **extra):
    return {
        S.PAIR_ID: pair_id, S.TASK: task, S.STATUS: S.STATUS_OK, S.IMAGE_A: image_a, S.IMAGE_B: image_b,
        S.META_A: json.dumps({"descriptions": [None] * (image_a.shape[2] if image_a.ndim == 3 else 1)}),
        **extra,
    }  # fmt: skip


def test_evaluator_scores_every_method_and_reports_failures_per_method(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.random((72, 72, 3)) * 255).astype(np.uint8)
    b = (rng.random((72, 72, 3)) * 255).astype(np.uint8)
    fused_dir = tmp_path / "tool"
    fused_dir.mkdir()
    encoded, _ = encode_image(np.zeros((40, 40, 3), np.uint8))  # wrong size on purpose
    (fused_dir / "p1.png").write_bytes(encoded)
    config = _config(
        tmp_path, task="mff", methods=("average", "dwt", "tool"), convention="vifb",
        fused=({"name": "tool", "uri": str(fused_dir)},),
    )  # fmt: skip
    evaluator = PairEvaluator(config.model_dump(mode="json"), {"tool": index_fused_dir(config.fused[0])}, [])
    rows = pd.DataFrame(evaluator(_row("p1", a, b, "mff")))
    ok = rows[rows["error"] == ""]
    assert set(ok["method"]) == {"average", "dwt"}
    metrics = {"en", "sd", "sf", "ag", "mi", "scd", "cc", "vif", "qabf", "nabf", "ssim", "ms_ssim", "psnr"}
    assert set(ok.loc[ok["method"] == "dwt", "metric"]) == metrics | {"seconds"}
    (failure,) = rows[rows["error"] != ""].to_dict("records")
    assert failure["method"] == "tool" and failure["stage"] == "fuse"
    assert "40x40" in failure["error"] and "72x72" in failure["error"]

    rows = pd.DataFrame(evaluator(_row("p2", a, b, "mff")))  # no fused image for p2
    assert "no fused image for pair 'p2'" in rows.loc[rows["method"] == "tool", "error"].item()


def test_evaluator_passes_read_failures_through_and_refuses_a_mechanism_mismatch(tmp_path):
    config = _config(tmp_path, task="vif", methods=("average",))
    evaluator = PairEvaluator(config.model_dump(mode="json"), {}, [])
    (row,) = evaluator({S.PAIR_ID: "bad", S.STATUS: S.STATUS_FAILED, S.ERROR_STAGE: "read", S.ERROR: "truncated PNG"})
    assert row["stage"] == "read" and row["error"] == "truncated PNG"
    image = np.zeros((8, 8, 3), np.uint8)
    (row,) = evaluator(_row("rs", image, image, "pansharpen"))
    assert "does not match the job's task" in row["error"]


def test_evaluator_wald_protocol_scores_spectral_baselines(tmp_path):
    ms = _smooth_scene(64, 64, 4)
    # A PAN that is the band mean of the MS at high resolution: ideal for component substitution.
    from maugif_core.baselines import upsample_bicubic

    pan = upsample_bicubic(ms, 2).mean(axis=2)
    config = _config(tmp_path, methods=("bicubic", "gsa"), grid_pairs=1)
    evaluator = PairEvaluator(config.model_dump(mode="json"), {}, ["s1"])
    rows = pd.DataFrame(evaluator(_row("s1", ms, np.clip(pan, 0, 1).astype(np.float32), "pansharpen")))
    assert (rows["error"] == "").all(), rows["error"].tolist()
    assert set(rows["metric"]) == {"sam", "ergas", "q2n", "psnr", "seconds"}
    sam = rows[rows["metric"] == "sam"].set_index("method")["value"]
    assert (sam >= 0).all() and (sam < 10).all()  # degrees
    # the visual grid's thumbnails: sources, reference and both methods
    written = sorted(p.name for p in (tmp_path / "out" / "grid" / "s1").iterdir())
    assert written == ["A.png", "B.png", "bicubic.png", "gsa.png", "reference.png"]


def test_rio_brovey_peer_keeps_bands_and_grid(tmp_path):
    pytest.importorskip("rio_pansharpen")
    from maugif_core.baselines import upsample_bicubic
    from pipeline.evaluate.peers import fuse_rio_brovey

    ms = _smooth_scene(16, 16, 4)
    pan = np.clip(upsample_bicubic(ms, 2).mean(axis=2, keepdims=True), 0, 1)  # a PAN consistent with the MS
    fused = fuse_rio_brovey(ms, pan, 2, [0, 1, 2])
    assert fused.shape == (32, 32, 4) and fused.dtype == np.float32
    assert np.isfinite(fused).all() and fused.min() >= 0
    # Brovey keeps the band ratios of the upsampled MS and brings the PAN's brightness: not an empty image.
    assert 0.5 * ms.mean() < fused.mean() < 2.0 * ms.mean()
    low = fused.reshape(16, 2, 16, 2, 4).mean(axis=(1, 3))
    assert np.corrcoef(low[..., 3].ravel(), ms[..., 3].ravel())[0, 1] > 0.9


# ------------------------------------------------------------------------------------------------ tables


def test_mean_table_and_markdown_mark_the_best_in_the_right_direction():
    rows = pd.DataFrame(
        {
            S.PAIR_ID: ["p1", "p2", "p1", "p2", "p1", "p2", "p1", "p2"],
            "method": ["ours", "ours", "base", "base"] * 2,
            "metric": ["sam"] * 4 + ["q2n"] * 4,
            "value": [1.0, 3.0, 4.0, 4.0, 0.9, 0.7, 0.5, 0.5],
        }
    )
    means = mean_table(rows, ["ours", "base"], ["sam", "q2n"])
    assert means.to_dict("records") == [
        {"method": "ours", "metric": "sam", "mean": 2.0},
        {"method": "ours", "metric": "q2n", "mean": pytest.approx(0.8)},
        {"method": "base", "metric": "sam", "mean": 4.0},
        {"method": "base", "metric": "q2n", "mean": 0.5},
    ]
    table = markdown_table(means, {"ours": 2, "base": 2}, ["ours", "base"], ["sam", "q2n"])
    assert "| sam ↓ | q2n |" in table
    assert "| ours | 2 | **2.000** | **0.800** |" in table  # lower SAM and higher Q2n both win
