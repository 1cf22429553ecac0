"""Additive MAUGIF: layer numerics, BatchNorm modes, batch/tiling invariance, colour handling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import maugif_core
from maugif_core.additive import DECODER_RADIUS, AdditiveMAUGIF, threshold_detail
from maugif_core.imaging import rgb_to_ycbcr, ycbcr_to_rgb


def _model(task: str = "vif", seed: int = 0, **overrides) -> AdditiveMAUGIF:
    torch.manual_seed(seed)
    model = maugif_core.build_model(task, **overrides)
    # Non-trivial BatchNorm affine + running statistics so every mode is exercised.
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data = 1 + 0.3 * torch.randn(module.num_features, generator=gen)
            module.bias.data = 0.1 * torch.randn(module.num_features, generator=gen)
            module.running_mean.data = 0.1 * torch.randn(module.num_features, generator=gen)
            module.running_var.data = 1 + 0.5 * torch.rand(module.num_features, generator=gen)
    return model.eval()


def _rand(shape, seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- structure


def test_parameter_counts_match_reference():
    model = maugif_core.build_model("vif")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.encoder_a) == count(model.encoder_b) == 691
    assert count(model.decoder_b) == count(model.decoder_a) == 4308
    assert model.receptive_field_radius == DECODER_RADIUS == 3


@pytest.mark.parametrize(
    ("task", "threshold", "lambda_y", "chroma", "envelope"),
    [
        ("vif", -0.5, 0.9, "from_a", "max"),
        ("medical", 0.0, 2.0, "from_a", "max"),
        ("mff", 0.0, 0.9, "saturation_weighted", "none"),
        ("mef", 0.0, 0.9, "saturation_weighted", "max"),
        ("general", 0.0, 0.9, "from_a", "max"),
    ],
)
def test_presets(task, threshold, lambda_y, chroma, envelope):
    cfg = maugif_core.build_model(task).config
    assert (cfg.task, cfg.threshold, cfg.lambda_y, cfg.chroma) == (task, threshold, lambda_y, chroma)
    assert (cfg.envelope, cfg.bn_mode) == (envelope, "running")
    assert cfg.decision == {"mff": "focus", "mef": "exposure"}.get(task, "none")


def test_threshold_rule():
    d = torch.tensor([-1.0, -0.5, -0.49, 0.0, 0.3])
    assert threshold_detail(d, -0.5).tolist() == pytest.approx([0.0, -0.5, -0.49, 0.0, 0.3])
    assert threshold_detail(d, 0.0).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.3])


# ---------------------------------------------------------------------------------------------- numerics


def _ref_conv(x, conv):
    return F.conv2d(x, conv.weight.double(), conv.bias.double(), padding=conv.padding)


def _ref_bn_per_image(x, bn):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    w, b = bn.weight.double()[None, :, None, None], bn.bias.double()[None, :, None, None]
    return (x - mean) / torch.sqrt(var + bn.eps) * w + b


def _ref_decoder(dec, source, base):
    x = torch.cat([source, base], 1)
    h = torch.relu(_ref_bn_per_image(_ref_conv(x, dec.conv1), dec.bn1))
    h = torch.relu(_ref_bn_per_image(_ref_conv(h, dec.conv2), dec.bn2))
    h = torch.sin(_ref_conv(h, dec.conv3))
    h = torch.relu(_ref_bn_per_image(_ref_conv(torch.cat([x, h], 1), dec.conv4), dec.bn4))
    return _ref_conv(h, dec.conv5)


def _ref_encoder(enc, x):
    f = torch.relu(_ref_conv(x, enc.conv1))
    return torch.relu(_ref_conv(torch.cat([x, f], 1), enc.conv2))


def test_decoder_and_encoder_match_float64_reference():
    model = _model("vif", bn_mode="per_image", envelope="none")
    a, b = _rand((2, 1, 23, 31), 1), _rand((2, 1, 23, 31), 2)
    fused, detail_b, detail_a = model.fuse_luma(a, b)
    ref_b = _ref_decoder(model.decoder_b, b.double(), a.double())
    ref_a = _ref_decoder(model.decoder_a, a.double(), b.double())
    torch.testing.assert_close(detail_b.double(), ref_b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(detail_a.double(), ref_a, atol=1e-5, rtol=1e-4)
    ref_fused = a.double() + ref_b * (ref_b >= -0.5)
    torch.testing.assert_close(fused.double(), ref_fused, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encoder_a(a).double(), _ref_encoder(model.encoder_a, a.double()), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("direction", ["b_to_a", "a_to_b"])
def test_envelope_caps_fused_luma_at_the_brighter_source(direction):
    plain = _model("vif", direction=direction, envelope="none")
    capped = _model("vif", direction=direction, envelope="max")
    a, b = _rand((1, 1, 24, 24), 5), _rand((1, 1, 24, 24), 6)
    a[..., :8, :8] = 0.0  # a black background in both sources
    b[..., :8, :8] = 0.0
    fused, _, _ = plain.fuse_luma(a, b)
    fused_capped, _, _ = capped.fuse_luma(a, b)
    brighter = torch.maximum(a, b)
    assert (fused > brighter + 1e-3).any(), "the test needs pixels that the envelope changes"
    torch.testing.assert_close(fused_capped, torch.minimum(fused, brighter))
    assert (fused_capped[..., :8, :8] <= 0).all()
    # Pointwise: tiles fused with the frozen whole-image statistics still equal the whole.
    stats = capped.compute_norm_stats(a, b)
    halo = capped.receptive_field_radius
    tile, _, _ = capped.fuse_luma(a[..., :, : 12 + halo], b[..., :, : 12 + halo], norm_stats=stats)
    whole, _, _ = capped.fuse_luma(a, b, norm_stats=stats)
    torch.testing.assert_close(tile[..., :12], whole[..., :12], atol=1e-5, rtol=1e-5)


def test_running_mode_uses_running_statistics():
    model = _model("general", bn_mode="running")
    a, b = _rand((1, 1, 16, 16), 3), _rand((1, 1, 16, 16), 4)
    _, detail_b, _ = model.fuse_luma(a, b)
    reference = model.decoder_b.eval()
    # Plain eval-mode BatchNorm2d is the running-statistics path.
    x = torch.cat([b, a], 1)
    with torch.no_grad():
        h = torch.relu(torch.nn.BatchNorm2d.forward(reference.bn1, reference.conv1(x)))
        h = torch.relu(torch.nn.BatchNorm2d.forward(reference.bn2, reference.conv2(h)))
        h = torch.sin(reference.conv3(h))
        h = torch.relu(torch.nn.BatchNorm2d.forward(reference.bn4, reference.conv4(torch.cat([x, h], 1))))
        expected = reference.conv5(h)
    torch.testing.assert_close(detail_b, expected)


# ---------------------------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("bn_mode", ["per_image", "running"])
def test_batch_independence(bn_mode):
    model = _model("vif", bn_mode=bn_mode)
    batch_a, batch_b = _rand((4, 1, 20, 24), 5), _rand((4, 1, 20, 24), 6)
    fused_batch, _, _ = model.fuse_luma(batch_a, batch_b)
    for i in range(4):
        alone, _, _ = model.fuse_luma(batch_a[i : i + 1], batch_b[i : i + 1])
        torch.testing.assert_close(fused_batch[i : i + 1], alone, atol=1e-6, rtol=1e-5)
    # Composition: the same image next to different neighbours.
    other_a = torch.cat([batch_a[:1], _rand((1, 1, 20, 24), 7)])
    other_b = torch.cat([batch_b[:1], _rand((1, 1, 20, 24), 8)])
    mixed, _, _ = model.fuse_luma(other_a, other_b)
    torch.testing.assert_close(mixed[:1], fused_batch[:1], atol=1e-6, rtol=1e-5)


def _fuse_tiled(model, a, b, tile, halo, stats):
    h, w = a.shape[-2:]
    out = torch.zeros_like(a)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - halo, 0), max(left - halo, 0)
            t1, l1 = min(bottom + halo, h), min(right + halo, w)
            fused, _, _ = model.fuse_luma(a[..., t0:t1, l0:l1], b[..., t0:t1, l0:l1], norm_stats=stats)
            out[..., top:bottom, left:right] = fused[..., top - t0 : bottom - t0, left - l0 : right - l0]
    return out


@pytest.mark.parametrize("bn_mode", ["per_image", "running"])
def test_tiled_equals_whole(bn_mode):
    model = _model("vif", bn_mode=bn_mode)
    a, b = _rand((1, 1, 53, 71), 9), _rand((1, 1, 53, 71), 10)
    whole, _, _ = model.fuse_luma(a, b)
    stats = model.compute_norm_stats(a, b) if bn_mode == "per_image" else None
    tiled = _fuse_tiled(model, a, b, tile=16, halo=model.receptive_field_radius, stats=stats)
    assert (tiled - whole).abs().max().item() < 1e-5
    # A halo smaller than the receptive field is visibly wrong: the radius is not overstated.
    short = _fuse_tiled(model, a, b, tile=16, halo=model.receptive_field_radius - 1, stats=stats)
    assert (short - whole).abs().max().item() > 1e-4


def test_overview_statistics_are_close_to_full():
    model = _model("vif")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    a = (0.5 + 0.3 * torch.sin(12 * xx) * torch.cos(9 * yy))[None, None]
    b = (0.4 + 0.4 * torch.cos(7 * xx + 5 * yy))[None, None]
    full = model.compute_norm_stats(a, b)
    overview = model.compute_norm_stats(a, b, max_pixels=64 * 64)
    for (m_full, v_full), (m_ov, v_ov) in zip(full[0] + full[1], overview[0] + overview[1], strict=True):
        torch.testing.assert_close(m_ov, m_full, atol=0.05, rtol=0.05)
        torch.testing.assert_close(v_ov, v_full, atol=0.05, rtol=0.1)


# ---------------------------------------------------------------------------------------------- training


def test_stage_gradients_and_frozen_encoders():
    from maugif_core.training import make_optimizer, train_step

    model = _model("vif").train()
    a, b = _rand((2, 1, 24, 24), 11), _rand((2, 1, 24, 24), 12)
    model.set_stage(1)
    terms = train_step(model, make_optimizer(model), a, b, stage=1)
    assert set(terms) == {"shared", "content_b", "content_a", "loss"}
    assert all(p.grad is None for p in model.decoder_b.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_a.parameters())

    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder")}
    model.set_stage(2)
    terms = train_step(model, make_optimizer(model), a, b, stage=2)
    assert set(terms) == {"recon_b", "grad_b", "recon_a", "grad_a", "loss"}
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key
    for decoder in (model.decoder_a, model.decoder_b):
        assert all(p.grad is not None for p in decoder.parameters())


def test_stage1_loss_terms_match_definition():
    model = _model("medical")
    a, b = _rand((2, 1, 16, 16), 13), _rand((2, 1, 16, 16), 14)
    terms = model(a, b, stage=1)
    with torch.no_grad():
        c, cb = model.encoder_a(a), model.encoder_b(b)
    expected = 0.2 * torch.norm(cb - c) + 1.0 * torch.norm(c - b) + 2.0 * torch.norm(c - a)
    torch.testing.assert_close(terms["loss"], expected)


def test_seeded_training_is_deterministic():
    from maugif_core.training import joint_random_resized_crop, make_optimizer, train_step

    def run():
        model = _model("vif", seed=3).train()
        model.set_stage(1)
        opt = make_optimizer(model)
        gen = torch.Generator().manual_seed(42)
        img_a, img_b = _rand((1, 40, 50), 15), _rand((1, 40, 50), 16)
        for _ in range(3):
            ca, cb = joint_random_resized_crop(img_a, img_b, 24, generator=gen)
            train_step(model, opt, ca[None], cb[None], stage=1)
        return model.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_joint_crop_applies_the_same_crop_to_both():
    from maugif_core.training import joint_random_resized_crop

    image = _rand((3, 60, 80), 17)
    for seed in range(5):
        crop_a, crop_b = joint_random_resized_crop(
            image, image[:1].clone(), 32, generator=torch.Generator().manual_seed(seed)
        )
        assert crop_a.shape == (3, 32, 32) and crop_b.shape == (1, 32, 32)
        torch.testing.assert_close(crop_a[:1], crop_b)
    crops = {
        tuple(
            joint_random_resized_crop(image, image, 8, generator=torch.Generator().manual_seed(s))[0]
            .flatten()[:4]
            .tolist()
        )
        for s in range(5)
    }
    assert len(crops) > 1  # different seeds, different crops


# ---------------------------------------------------------------------------------------------- NumPy API and colour


@pytest.mark.parametrize(
    ("shape_a", "dtype"),
    [
        ((30, 40), np.uint8),
        ((30, 40, 3), np.uint8),
        ((30, 40, 3), np.uint16),
        ((30, 40, 1), np.float32),
        ((30, 40, 4), np.uint8),
    ],
)
def test_fuse_keeps_dtype_and_layout(shape_a, dtype):
    rng = np.random.default_rng(0)
    scale = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    image_a = (rng.random(shape_a) * scale).astype(dtype)
    image_b = (rng.random((30, 40)) * scale).astype(dtype)
    fused = _model("vif").fuse(image_a, image_b)
    assert fused.shape == image_a.shape and fused.dtype == image_a.dtype
    if len(shape_a) == 3 and shape_a[2] == 4:
        np.testing.assert_array_equal(fused[..., 3], image_a[..., 3])  # alpha carried over


def _zero_detail_model(task: str) -> AdditiveMAUGIF:
    model = _model(task)
    for decoder in (model.decoder_a, model.decoder_b):
        decoder.conv5.weight.data.zero_()
        decoder.conv5.bias.data.zero_()
    return model


def test_zero_detail_returns_image_a_in_colour():
    rng = np.random.default_rng(1)
    image_a = (rng.random((25, 33, 3)) * 255).astype(np.uint8)
    image_b = (rng.random((25, 33)) * 255).astype(np.uint8)
    fused = _zero_detail_model("vif").fuse(image_a, image_b)
    # Only colour-space rounding separates the result from A.
    assert np.abs(fused.astype(int) - image_a.astype(int)).max() <= 1


def test_grey_stored_as_three_channels_stays_grey():
    rng = np.random.default_rng(2)
    grey = (rng.random((20, 20)) * 255).astype(np.uint8)
    image_a = np.repeat(grey[..., None], 3, axis=2)
    fused = _model("vif").fuse(image_a, (rng.random((20, 20)) * 255).astype(np.uint8))
    assert fused.shape == (20, 20, 3)
    assert np.array_equal(fused[..., 0], fused[..., 1]) and np.array_equal(fused[..., 0], fused[..., 2])


def test_saturation_weighted_chroma_takes_colour_from_the_coloured_source():
    rng = np.random.default_rng(3)
    grey = np.repeat((rng.random((16, 16, 1)) * 255).astype(np.uint8), 3, axis=2)
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    fused = _zero_detail_model("mff").fuse(grey, red)
    assert (fused[..., 0].astype(int) - fused[..., 2].astype(int)).mean() > 50  # red chroma injected
    fused_from_a = _zero_detail_model("vif").fuse(grey, red)
    assert np.array_equal(fused_from_a[..., 0], fused_from_a[..., 2])  # from_a keeps A grey


def test_colour_round_trip():
    rgb = np.random.default_rng(4).random((10, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    grey = np.full((2, 2, 3), 0.3, np.float32)
    ycc = rgb_to_ycbcr(grey)
    np.testing.assert_allclose(ycc[..., 0], 0.3, atol=1e-6)
    np.testing.assert_allclose(ycc[..., 1:], 0.5, atol=1e-6)


def test_direction_a_to_b_uses_b_as_base():
    model = _zero_detail_model("general")
    model_rev = AdditiveMAUGIF(model.config.model_copy(update={"direction": "a_to_b"}))
    model_rev.load_state_dict(model.state_dict())
    a = np.full((12, 12), 50, np.uint8)
    b = np.full((12, 12), 200, np.uint8)
    assert (model.fuse(a, b) == 50).all()
    assert (model_rev.eval().fuse(a, b) == 200).all()


def test_fuse_with_details_returns_both_maps():
    rng = np.random.default_rng(5)
    a, b = (rng.random((18, 22)) * 255).astype(np.uint8), (rng.random((18, 22)) * 255).astype(np.uint8)
    result = _model("vif").fuse_with_details(a, b)
    assert result.detail_a.shape == result.detail_b.shape == (18, 22)
    assert not np.allclose(result.detail_a, result.detail_b)
    assert np.array_equal(result.fused, _model("vif").fuse(a, b))


# ---------------------------------------------------------------------------------------------- errors


def test_errors_name_the_input():
    model = _model("vif")
    a = np.zeros((10, 10), np.uint8)
    with pytest.raises(maugif_core.ShapeError, match="same height and width"):
        model.fuse(a, np.zeros((10, 11), np.uint8))
    with pytest.raises(maugif_core.DTypeError, match="image_b.*int32"):
        model.fuse(a, np.zeros((10, 10), np.int32))
    bad = np.zeros((10, 10), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(maugif_core.NonFiniteError, match="image_a"):
        model.fuse(bad, a)
    with pytest.raises(maugif_core.ShapeError, match="image_a"):
        model.fuse(np.zeros((2, 10, 10, 3), np.uint8), a)
    with pytest.raises(maugif_core.UnknownTaskError, match="unknown task 'foo'"):
        maugif_core.build_model("foo")
    with pytest.raises(ValidationError, match="lambda_y"):
        maugif_core.build_model("vif", lambda_y=-1.0)
    with pytest.raises(ValidationError, match="not_a_field"):
        maugif_core.build_model("vif", not_a_field=1)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_file_folder_and_bytes(tmp_path):
    model = _model("medical", bn_mode="running")
    rng = np.random.default_rng(6)
    a, b = (rng.random((14, 15, 3)) * 255).astype(np.uint8), (rng.random((14, 15)) * 255).astype(np.uint8)
    path = maugif_core.save_checkpoint(model, tmp_path / "ck")
    assert path.name == "model.safetensors"
    for source in (tmp_path / "ck", path, path.read_bytes()):
        loaded = maugif_core.load_checkpoint(source)
        assert loaded.config == model.config
        np.testing.assert_array_equal(loaded.fuse(a, b), model.fuse(a, b))
    assert maugif_core.read_checkpoint_config(path).task == "medical"


def test_checkpoint_rejects_pickles_and_mismatches(tmp_path):
    model = _model("vif")
    pickled = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(maugif_core.CheckpointError, match="refusing to unpickle"):
        maugif_core.load_checkpoint(pickled)
    with pytest.raises(maugif_core.CheckpointError, match="too short|not a safetensors"):
        maugif_core.load_checkpoint(b"abc")
    with pytest.raises(maugif_core.CheckpointError, match="no such file"):
        maugif_core.load_checkpoint(tmp_path / "missing")
    path = maugif_core.save_checkpoint(model, tmp_path / "ok.safetensors")
    truncated = tmp_path / "truncated.safetensors"  # header intact, weights cut short (an interrupted download)
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size - 100])
    with pytest.raises(maugif_core.CheckpointError, match="truncated.safetensors.*cannot be read"):
        maugif_core.load_checkpoint(truncated)
    with pytest.raises(maugif_core.CheckpointError, match="expected 'medical'"):
        maugif_core.load_checkpoint(path, expect_task="medical")
    # Weights of a wider decoder under the stored (reference-width) config.
    from safetensors.torch import save_file

    wide = maugif_core.build_model("vif", decoder_width=8)
    from maugif_core.checkpoint import FORMAT_VERSION

    save_file(
        {k: v.contiguous() for k, v in wide.state_dict().items()},
        tmp_path / "bad.safetensors",
        metadata={
            "format": "maugif",
            "format_version": FORMAT_VERSION,
            "config": model.config.model_dump_json(),
        },
    )
    with pytest.raises(maugif_core.CheckpointError, match="do not match"):
        maugif_core.load_checkpoint(tmp_path / "bad.safetensors")
    save_file(
        {"x": torch.zeros(1)},
        tmp_path / "v9.safetensors",
        metadata={"format": "maugif", "format_version": "9"},
    )
    with pytest.raises(maugif_core.CheckpointError, match="format version"):
        maugif_core.load_checkpoint(tmp_path / "v9.safetensors")
