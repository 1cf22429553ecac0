"""The bundled additive checkpoints (presets, cards, trained behaviour) and the multi-focus / multi-exposure source
decision (receptive field, tiling, batch independence, what it picks)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_additive import (  # shared helpers and fixtures
    _fuse_tiled,  # the tiling helper the additive invariance tests use
    _model,
    _rand,
)

import maugif_core
from maugif_core.additive import DECODER_RADIUS, AdditiveMAUGIF, threshold_detail
from maugif_core.decision import _gaussian_pyramid, _pyramid_compose, decide, decision_radius, pyramid_radius

# ---------------------------------------------------------------------------------------------- bundled checkpoints

PRETRAINED_DIR = Path(maugif_core.__file__).resolve().parent / "pretrained"
SAMPLES_MFF = Path(__file__).resolve().parents[2] / "samples" / "mff"


def _sample_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    return tuple(np.asarray(Image.open(SAMPLES_MFF / side / name)) for side in ("source1", "source2"))


def test_every_additive_task_has_a_bundled_checkpoint_with_its_preset():
    assert maugif_core.pretrained_tasks() == tuple(sorted(maugif_core.ADDITIVE_TASKS))
    for task in maugif_core.ADDITIVE_TASKS:
        model = maugif_core.pretrained(task)
        assert isinstance(model, AdditiveMAUGIF) and not model.training
        expected = maugif_core.preset(task)
        fields = ("task", "lambda_y", "chroma", "direction", "encoder_channels", "decoder_width", "envelope")
        for field in (*fields, "decision", "inject_gain"):
            assert getattr(model.config, field) == getattr(expected, field), (task, field)
        # The promoted vif-t0 family (docs/TRAINING.md): the bundled vif model was trained with t = 0; the preset
        # keeps SPEC §1.1's -0.5. Every other task's bundled threshold is its preset's.
        assert model.config.threshold == (0.0 if task == "vif" else expected.threshold), task
        # The BatchNorm inference mode decided by the evaluations (docs/RESULTS.md, "BatchNorm at inference").
        assert model.config.bn_mode == "running", task
    with pytest.raises(maugif_core.UnknownTaskError, match="bundled: general, medical, mef, mff, vif"):
        maugif_core.pretrained("pansharpen")


def test_model_cards_name_the_bundled_files_and_their_mode():
    for task in maugif_core.ADDITIVE_TASKS:
        weights = PRETRAINED_DIR / f"{task}.safetensors"
        card = (PRETRAINED_DIR / f"{task}.md").read_text()
        assert weights.stat().st_size < 100_000, "bundled checkpoints must stay tiny"
        assert hashlib.sha256(weights.read_bytes()).hexdigest() in card, f"{task}.md describes other weights"
        assert f"bn_mode `{maugif_core.read_checkpoint_config(weights).bn_mode}`" in card


def test_bundled_models_are_trained_and_batch_independent():
    a, b = _sample_pair("mfiwhu_1.png")
    untrained = maugif_core.build_model("mff")
    for task in maugif_core.ADDITIVE_TASKS:
        model = maugif_core.pretrained(task)
        state, fresh = model.state_dict(), untrained.state_dict()
        assert any(not torch.equal(state[k], fresh[k]) for k in state if k.endswith("running_var")), task
        fused = model.fuse(a, b)
        assert fused.shape == a.shape and fused.dtype == a.dtype
        assert np.abs(fused.astype(int) - a.astype(int)).mean() > 0.5, f"{task}: no detail injected"
        # One image alone and the same image in a batch with another: same result in the bundled BN mode.
        luma = [torch.from_numpy(x.mean(axis=2, dtype=np.float32) / 255)[None, None] for x in (a, b)]
        other = torch.rand(luma[0].shape, generator=torch.Generator().manual_seed(0))
        alone, _, _ = model.fuse_luma(luma[0], luma[1], details=False)
        batched, _, _ = model.fuse_luma(torch.cat([luma[0], other]), torch.cat([luma[1], other]), details=False)
        torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-5)


def test_bundled_mff_model_sharpens_more_than_averaging_on_unseen_samples():
    # The bundled mff model never saw MFI-WHU (docs/TRAINING.md); the samples are MFI-WHU pairs.
    model = maugif_core.pretrained("mff")
    sf_model, sf_average = [], []
    for name in sorted(p.name for p in (SAMPLES_MFF / "source1").glob("*.png")):
        a, b = _sample_pair(name)
        sf_model.append(maugif_core.metrics.spatial_frequency(model.fuse(a, b)))
        sf_average.append(maugif_core.metrics.spatial_frequency(maugif_core.baselines.fuse("average", a, b)))
    assert np.mean(sf_model) > 1.1 * np.mean(sf_average)


# ---------------------------------------------------------------------------------------------- source decision


def _texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A sharp, natural-ish texture in [0, 1]: smoothed noise at two scales plus fine noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand((1, 1, h // 8, w // 8), generator=gen), size=(h, w), mode="bilinear")
    fine = torch.rand((1, 1, h, w), generator=gen)
    return (0.5 * coarse + 0.5 * fine).clamp(0, 1)


def _blur(x: torch.Tensor, radius: int = 3) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)


def _two_focus_planes(h: int = 64, w: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sharp, A, B): A is in focus on the left half, B on the right half."""
    sharp = _texture(h, w, seed)
    left = torch.zeros_like(sharp, dtype=torch.bool)
    left[..., : w // 2] = True
    a = torch.where(left, sharp, _blur(sharp))
    b = torch.where(left, _blur(sharp), sharp)
    return sharp, a, b


def test_decision_radius_is_part_of_the_receptive_field():
    plain = maugif_core.build_model("mff", decision="none")
    assert plain.receptive_field_radius == DECODER_RADIUS
    cfg = maugif_core.build_model("mff", decision="focus").config
    assert decision_radius(cfg) == (
        1 + cfg.activity_radius + 4 * cfg.region_radius + cfg.vote_radius + 2 * cfg.guide_radius
    )
    assert maugif_core.build_model("mff", decision="focus").receptive_field_radius == DECODER_RADIUS + decision_radius(
        cfg
    )


@pytest.mark.parametrize("rule", ["focus", "exposure"])
def test_decision_tiled_equals_whole(rule):
    model = _model("mff", decision=rule, uncertain_band=0.5, detail_weight=0.5)
    halo = model.receptive_field_radius
    _, planes_a, planes_b = _two_focus_planes(96, 120, seed=3)
    noise_a, noise_b = _rand((1, 1, 96, 120), 13), _rand((1, 1, 96, 120), 14)
    for a, b in ((planes_a, planes_b), (noise_a, noise_b)):
        whole, _, _ = model.fuse_luma(a, b)
        tiled = _fuse_tiled(model, a, b, tile=32, halo=halo, stats=None)
        assert (tiled - whole).abs().max().item() < 1e-5
    # The decoders' halo alone is not enough: the decision near the focus boundary needs its own radius.
    whole, _, _ = model.fuse_luma(planes_a, planes_b)
    short = _fuse_tiled(model, planes_a, planes_b, tile=32, halo=DECODER_RADIUS, stats=None)
    assert (short - whole).abs().max().item() > 1e-3


# Small radii so that 32-pixel tiles with the full halo are still tiles of a 128 x 160 image.
_PYRAMID = {
    "composition": "pyramid",
    "pyramid_levels": 3,
    "activity_radius": 2,
    "region_radius": 1,
    "vote_radius": 1,
    "guide_radius": 2,
    "uncertain_band": 0.5,
    "detail_weight": 0.5,
    "inject_gain": 0.5,
}


def test_pyramid_composition_radius_and_tiled_equals_whole():
    model = _model("mff", decision="focus", **_PYRAMID)
    linear = _model("mff", decision="focus", **{**_PYRAMID, "composition": "linear"})
    assert pyramid_radius(3) == 2 + 4 + 8
    assert decision_radius(model.config) == decision_radius(linear.config) + pyramid_radius(3)
    halo = model.receptive_field_radius
    _, planes_a, planes_b = _two_focus_planes(128, 160, seed=5)
    noise_a, noise_b = _rand((1, 1, 128, 160), 15), _rand((1, 1, 128, 160), 16)
    for a, b in ((planes_a, planes_b), (noise_a, noise_b)):
        whole, _, _ = model.fuse_luma(a, b)
        tiled = _fuse_tiled(model, a, b, tile=32, halo=halo, stats=None)
        assert (tiled - whole).abs().max().item() < 1e-5


def test_pyramid_composition_batch_independence_and_what_it_picks():
    model = _model("mff", decision="focus", **_PYRAMID)
    pairs = [_two_focus_planes(64, 96, seed=s) for s in range(3)]
    batch_a, batch_b = torch.cat([p[1] for p in pairs]), torch.cat([p[2] for p in pairs])
    fused_batch, _, _ = model.fuse_luma(batch_a, batch_b)
    for i in range(3):
        alone, _, _ = model.fuse_luma(batch_a[i : i + 1], batch_b[i : i + 1])
        torch.testing.assert_close(fused_batch[i : i + 1], alone, atol=1e-6, rtol=1e-5)
    # Sources alone (no injection): away from the focus boundary the pyramid blend is the in-focus texture
    # (the pyramid of a constant weight reconstructs the chosen source exactly).
    sharp, a, b = pairs[0]
    cfg = model.config.model_copy(update={"inject_gain": 0.0, "detail_weight": 0.0})
    zeros = torch.zeros_like(a)
    maps = decide(a, b, zeros, zeros, 0.5 * (a + b), cfg)
    margin = decision_radius(cfg)
    torch.testing.assert_close(maps.fused_y[..., :, : 48 - margin], sharp[..., :, : 48 - margin])
    torch.testing.assert_close(maps.fused_y[..., :, 48 + margin :], sharp[..., :, 48 + margin :])
    # Where the weight is exactly 1/2, every detail level takes the coefficient of larger magnitude: against a
    # flat source that is all of A's detail, and the coarsest level is the blend, half of A's.
    coarse = _gaussian_pyramid(a, 3)[3]
    maxabs = _pyramid_compose(a, zeros, torch.full_like(a, 0.5), levels=3, band=0.5)
    torch.testing.assert_close(maxabs, a - 0.5 * coarse)
    blended = _pyramid_compose(a, zeros, torch.full_like(a, 0.75), levels=3, band=0.5)
    torch.testing.assert_close(blended, 0.25 * a)  # certain (|2w - 1| >= band): the plain blend


def test_decision_batch_independence():
    model = _model("mff", decision="focus", uncertain_band=0.5)
    pairs = [_two_focus_planes(48, 64, seed=s)[1:] for s in range(3)]
    batch_a = torch.cat([p[0] for p in pairs])
    batch_b = torch.cat([p[1] for p in pairs])
    fused_batch, _, _ = model.fuse_luma(batch_a, batch_b)
    for i in range(3):
        alone, _, _ = model.fuse_luma(batch_a[i : i + 1], batch_b[i : i + 1])
        torch.testing.assert_close(fused_batch[i : i + 1], alone, atol=1e-6, rtol=1e-5)


def test_focus_decision_takes_each_plane_from_the_source_in_focus():
    sharp, a, b = _two_focus_planes(64, 96, seed=1)
    cfg = maugif_core.build_model("mff", decision="focus", detail_weight=0.0).config
    learned = 0.5 * (a + b)  # a stand-in for the learned fusion: the decision must not need it here
    maps = decide(a, b, torch.zeros_like(a), torch.zeros_like(a), learned, cfg)
    margin = decision_radius(cfg)
    inner_left, inner_right = maps.weight[..., :, 8 : 48 - 8], maps.weight[..., :, 48 + 8 : -8]
    assert inner_left.max().item() < 0.05 and inner_right.min().item() > 0.95
    # Away from the boundary the composition is the in-focus texture itself; averaging is far off.
    core = (slice(None), slice(None), slice(margin // 4, -margin // 4 or None), slice(None))
    error_fused = (maps.fused_y - sharp)[core].abs().mean().item()
    error_average = (learned - sharp)[core].abs().mean().item()
    assert error_fused < 0.25 * error_average


def test_focus_decision_removes_small_regions():
    # A in focus everywhere; B sharper than A only in a 3x3 speck: a decision that keeps it is noise.
    sharp = _texture(64, 64, seed=4)
    a = sharp
    b = _blur(sharp).clone()
    b[..., 30:33, 30:33] = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    zeros = torch.zeros_like(a)
    raw_cfg = maugif_core.build_model(
        "mff",
        decision="focus",
        detail_weight=0.0,
        activity_radius=4,
        region_radius=0,
        vote_radius=0,
        guide_radius=0,
        inject_gain=0.0,
    ).config
    raw = decide(a, b, zeros, zeros, a, raw_cfg)
    assert raw.weight[..., 31, 31].item() == 1.0  # the unrefined decision keeps the speck
    # The Laplacian (radius 1) and the activity window (radius 4) spread the speck to at most 13 x 13 pixels;
    # an opening with a 17 x 17 square removes it, with a 9 x 9 one it stays.
    kept = decide(a, b, zeros, zeros, a, raw_cfg.model_copy(update={"region_radius": 4}))
    assert kept.weight[..., 31, 31].item() == 1.0
    refined = decide(a, b, zeros, zeros, a, raw_cfg.model_copy(update={"region_radius": 8}))
    assert refined.weight.max().item() == 0.0
    torch.testing.assert_close(refined.fused_y, a)


def test_uncertain_band_keeps_the_learned_fusion_at_the_boundary():
    _, a, b = _two_focus_planes(64, 96, seed=2)
    learned = torch.full_like(a, 0.123)
    cfg = maugif_core.build_model("mff", decision="focus", detail_weight=0.0).config
    hard = decide(a, b, torch.zeros_like(a), torch.zeros_like(a), learned, cfg)
    soft = decide(
        a, b, torch.zeros_like(a), torch.zeros_like(a), learned, cfg.model_copy(update={"uncertain_band": 1.0})
    )
    torch.testing.assert_close(soft.weight, hard.weight)
    certain = (hard.weight - 0.5).abs() == 0.5
    torch.testing.assert_close(soft.fused_y[certain], hard.fused_y[certain])
    boundary = (hard.weight - 0.5).abs() < 0.1
    assert boundary.any()
    # Near w = 1/2 the output is mostly the learned fusion.
    assert ((soft.fused_y - learned)[boundary].abs() < (hard.fused_y - learned)[boundary].abs()).all()


def test_exposure_decision_prefers_the_well_exposed_source():
    scene = _texture(64, 96, seed=5)
    left = torch.zeros_like(scene, dtype=torch.bool)
    left[..., :48] = True
    a = torch.where(left, 0.25 + 0.5 * scene, (0.02 * scene))  # well exposed left, crushed right
    b = torch.where(left, (0.98 + 0.02 * scene), 0.25 + 0.5 * scene)  # clipped left, well exposed right
    cfg = maugif_core.build_model("mef", decision="exposure", detail_weight=0.0).config
    maps = decide(a, b, torch.zeros_like(a), torch.zeros_like(a), a, cfg)
    assert maps.weight[..., 8:40].max().item() < 0.05 and maps.weight[..., 56:88].min().item() > 0.95


def test_decision_none_returns_the_learned_fusion():
    model = _model("mff", decision="none")
    a, b = _rand((1, 1, 20, 24), 11), _rand((1, 1, 20, 24), 12)
    fused, d_b, _ = model.fuse_luma(a, b)
    torch.testing.assert_close(fused, a + threshold_detail(d_b, 0.0))
