"""Tests of the multiplicative mechanism (SPEC §1.2): basis, networks, fitting, fusion, tiling, checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maugif_core.config import MultiplicativeConfig, preset
from maugif_core.errors import BandCountError, DTypeError, NonFiniteError, RatioError, ShapeError
from maugif_core.multiplicative import (
    MultiplicativeMAUGIF,
    NotFittedError,
    decimate,
    fit_many,
)
from maugif_core.multiplicative import scene as scene_module
from maugif_core.multiplicative.fitting import STOP_CHECK_EVERY
from maugif_core.multiplicative.sensor import SensorModel, upsample_registered

# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Fit on one intra-op thread: these convolutions are too small to gain from more, and on a busy 2-core
    machine OpenMP threads that spin-wait for each other made every step ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_scene(
    seed: int, *, bands_low: int = 6, bands_high: int = 1, size_low: int = 16, ratio: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scene: smooth abundances × random spectra, degraded spectrally and spatially.

    Returns ``image_a`` ``(size_low, size_low, L)`` float32 and ``image_b`` ``(r·size_low, r·size_low[, l])``.
    """
    rng = np.random.default_rng(seed)
    size_high = size_low * ratio
    coarse = torch.from_numpy(rng.random((1, 3, size_high // 4 + 1, size_high // 4 + 1)).astype(np.float32))
    abundances = F.interpolate(coarse, size=(size_high, size_high), mode="bicubic", align_corners=False)[0]
    spectra = torch.from_numpy(rng.random((bands_low, 3)).astype(np.float32))
    latent = torch.einsum("lk,khw->lhw", spectra, abundances.clamp(0, 1)) / 3
    response = torch.from_numpy(rng.random((bands_high, bands_low)).astype(np.float32))
    high = torch.einsum("ml,lhw->mhw", response / response.sum(1, keepdim=True), latent)
    low = decimate(latent[None], ratio, "blur")[0]
    image_a = low.permute(1, 2, 0).numpy().clip(0, 1)
    image_b = high.permute(1, 2, 0).numpy().clip(0, 1)
    return image_a, (image_b[..., 0] if bands_high == 1 else image_b)


def small_config(task: str = "pansharpen", **overrides) -> MultiplicativeConfig:
    return preset(task, **{"steps": 40, "early_stop_patience": 0, **overrides})


@pytest.fixture(scope="module")
def fitted_pan() -> tuple[MultiplicativeMAUGIF, np.ndarray, np.ndarray]:
    image_a, image_b = make_scene(0, bands_low=5, size_low=20)
    model = MultiplicativeMAUGIF(small_config(steps=60))
    model.fit(image_a, image_b)
    return model, image_a, image_b


def to_nchw(image: np.ndarray) -> torch.Tensor:
    array = image if image.ndim == 3 else image[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None].float()


def rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x.astype(np.float64) - y) ** 2)))


def sam_degrees(x: np.ndarray, y: np.ndarray) -> float:
    """Mean spectral angle between ``(H, W, L)`` images, in degrees."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    cos = (x * y).sum(-1) / np.maximum(np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


# ---------------------------------------------------------------------------------------------- fitting


def test_fit_is_seeded_and_deterministic() -> None:
    image_a, image_b = make_scene(2)
    states = []
    for seed in (7, 7, 8):
        model = MultiplicativeMAUGIF(small_config(seed=seed, steps=25))
        model.fit(image_a, image_b)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["encoder.conv1.weight"], states[2]["encoder.conv1.weight"])


def test_loss_decreases_during_fit() -> None:
    image_a, image_b = make_scene(3)
    report = MultiplicativeMAUGIF(small_config(steps=200)).fit(image_a, image_b)
    history = report.loss_history
    assert report.steps == 200 and not report.stopped_early
    assert len(history) >= 100 and report.history_stride == 1
    assert history[-1] < 0.5 * history[0]
    assert report.final_loss == pytest.approx(history[-1])
    assert report.seconds > 0


def test_early_stopping_triggers_on_a_plateau() -> None:
    image_a, image_b = make_scene(4)
    # lr so small that the loss cannot move: a plateau from the first step.
    flat = MultiplicativeMAUGIF(small_config(steps=5000, lr=1e-12, early_stop_patience=30)).fit(image_a, image_b)
    assert flat.stopped_early
    # The criterion is met at step 31 and acted on at the next check.
    assert flat.steps == -(-31 // STOP_CHECK_EVERY) * STOP_CHECK_EVERY
    disabled = MultiplicativeMAUGIF(small_config(steps=60, lr=1e-12, early_stop_patience=0)).fit(image_a, image_b)
    assert disabled.steps == 60 and not disabled.stopped_early


def test_warm_start_begins_from_the_previous_weights() -> None:
    first_a, first_b = make_scene(5)
    second_a, second_b = make_scene(6)
    model = MultiplicativeMAUGIF(small_config(steps=150))
    model.fit(first_a, first_b)
    warm = model.fit(second_a, second_b, warm_start=True)
    cold = MultiplicativeMAUGIF(small_config(steps=150)).fit(second_a, second_b)
    assert warm.loss_history[0] < cold.loss_history[0]


def test_fit_many_equals_individual_fits_and_stops_scenes_independently() -> None:
    base = small_config(steps=150, early_stop_patience=20, early_stop_rel_tol=0.1)
    scenes = [make_scene(s) for s in (10, 11, 12)]
    scenes.insert(1, make_scene(13, size_low=12))  # another shape: fitted in its own group
    scale = [1.0, 1.0, 0.2, 0.5]
    scenes = [(a * k, b * k) for (a, b), k in zip(scenes, scale, strict=True)]
    configs = [base.model_copy(update={"seed": i}) for i in range(len(scenes))]
    solo = []
    for cfg, (a, b) in zip(configs, scenes, strict=True):
        model = MultiplicativeMAUGIF(cfg)
        model.fit(a, b)
        solo.append(model)
    for mode in ("loop", "grouped"):
        many = fit_many(configs, scenes, conv_mode=mode)
        steps = [m.fit_report.steps for m in many]
        assert steps == [m.fit_report.steps for m in solo]
        assert len(set(steps[0:1] + steps[2:])) > 1, "precondition: same-shape scenes stop at different steps"
        assert [m.fit_report.scenes_in_batch for m in many] == [3, 1, 3, 3]
        for one, batched, (a, b) in zip(solo, many, scenes, strict=True):
            for name, value in one.state_dict().items():
                if mode == "loop":  # the same convolutions in the same order: bit-identical
                    assert torch.equal(value, batched.state_dict()[name]), name
                else:
                    assert torch.allclose(value, batched.state_dict()[name], atol=1e-4), name
            assert np.abs(one.fuse(a, b) - batched.fuse(a, b)).max() < 1e-3


def test_fit_many_takes_the_registration_per_scene_or_one_for_all_like_fit() -> None:
    config = small_config(steps=30)
    scenes = [make_scene(s) for s in (20, 21, 22)]
    per_scene = [(0.0, 0.0), None, (1.0, 0.5)]
    many = fit_many(config, scenes, registration=per_scene, conv_mode="loop")
    for model, (a, b), reg in zip(many, scenes, per_scene, strict=True):
        solo = MultiplicativeMAUGIF(config)
        solo.fit(a, b, registration=reg)
        assert model.sensor_model == solo.sensor_model  # registration, gain and source
        for name, value in solo.state_dict().items():
            assert torch.equal(value, model.state_dict()[name]), name
    assert [m.sensor_model.source for m in many] == ["georeferencing", "estimated", "georeferencing"]
    assert (many[2].sensor_model.shift_y, many[2].sensor_model.shift_x) == (1.0, 0.5)
    one = fit_many(config, scenes, registration=(0.0, 0.0), conv_mode="loop")
    assert {(m.sensor_model.shift_y, m.sensor_model.shift_x, m.sensor_model.source) for m in one} == {
        (0.0, 0.0, "georeferencing")
    }
    with pytest.raises(ValueError, match=r"one per scene \(3\), got 2"):
        fit_many(config, scenes, registration=[(0.0, 0.0), None])
    with pytest.raises(ValueError, match=r"registration\[1\]"):
        fit_many(config, scenes, registration=[(0.0, 0.0), "centre", None])


def test_fit_many_refuses_configs_that_disagree_on_training() -> None:
    scenes = [make_scene(0), make_scene(1)]
    with pytest.raises(ValueError, match="steps"):
        fit_many([small_config(steps=10), small_config(steps=20)], scenes)


# ---------------------------------------------------------------------------------------------- fusion


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("task", "bands_low", "bands_high", "ratio"), [("pansharpen", 4, 1, 2), ("hsi_msi", 12, 3, 3)])
def test_fuse_returns_a_bands_on_b_grid_in_a_dtype(
    dtype: type, task: str, bands_low: int, bands_high: int, ratio: int
) -> None:
    image_a, image_b = make_scene(20, bands_low=bands_low, bands_high=bands_high, size_low=10, ratio=ratio)
    if dtype is not np.float32:
        top = np.iinfo(dtype).max
        image_a, image_b = (np.rint(x * top).astype(dtype) for x in (image_a, image_b))
    model = MultiplicativeMAUGIF(small_config(task, steps=5))
    fused = model.fuse(image_a, image_b)
    assert model.is_fitted
    assert fused.shape == (10 * ratio, 10 * ratio, bands_low)
    assert fused.dtype == np.dtype(dtype)
    if dtype is np.float32:
        assert fused.min() >= 0.0 and fused.max() <= 1.0
    if bands_high == 1:  # a PAN given as (H, W, 1) is the same image as (H, W)
        assert np.array_equal(model.fuse(image_a, image_b[..., None]), fused)


def test_fuse_reuses_a_fitted_model_unless_refit(fitted_pan) -> None:
    model, image_a, image_b = fitted_pan
    report = model.fit_report
    model.fuse(image_a, image_b)
    assert model.fit_report is report
    clone = MultiplicativeMAUGIF(model.fitted_config())
    clone.load_state_dict(model.state_dict())
    clone.fuse(image_a, image_b, refit=True)
    assert clone.fit_report is not None and clone.fit_report is not report


def with_rule(model: MultiplicativeMAUGIF, **fields) -> MultiplicativeMAUGIF:
    """The same fitted scene under other fusion settings (a config change, the fitted state copied)."""
    clone = MultiplicativeMAUGIF(model.fitted_config().model_copy(update=fields))
    clone.load_state_dict(model.state_dict())
    return clone


def fuse_in_tiles(model: MultiplicativeMAUGIF, low: torch.Tensor, high: torch.Tensor, tile: int, halo: int):
    """Fuse tile by tile on the low-resolution grid (tile and halo in low-resolution pixels) and stitch."""
    r = high.shape[-1] // low.shape[-1]
    h, w = low.shape[-2:]
    out = torch.zeros(high.shape[0], low.shape[1], *high.shape[-2:])
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0, t1, l1 = max(0, top - halo), max(0, left - halo), min(h, bottom + halo), min(w, right + halo)
            fused = model.fuse_tensor(low[..., t0:t1, l0:l1], high[..., r * t0 : r * t1, r * l0 : r * l1])
            out[..., r * top : r * bottom, r * left : r * right] = fused[
                ..., r * (top - t0) : r * (bottom - t0), r * (left - l0) : r * (right - l0)
            ]
    return out


@pytest.mark.parametrize(("fusion", "steps"), [("injection", 0), ("injection", 2), ("decoder", 0)])
def test_tiled_fusion_with_halo_equals_whole_image(
    fitted_pan, fusion: str, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, image_a, image_b = fitted_pan
    model = with_rule(base, fusion=fusion, consistency_steps=steps)
    r = model.ratio
    halo = -(-model.receptive_field_radius // r)  # in low-resolution pixels
    if fusion == "decoder":
        assert model.receptive_field_radius == 1
    low, high = to_nchw(image_a), to_nchw(image_b)
    with torch.no_grad():
        whole = model.fuse_tensor(low, high)
        tiled = fuse_in_tiles(model, low, high, 3, halo)
        no_halo = fuse_in_tiles(model, low, high, 3, 0)
    assert (tiled - whole).abs().max() < 1e-5
    # Not vacuous: without the halo the tiles disagree with the whole image at their seams.
    assert (no_halo - whole).abs().max() > 1e-4
    # fuse() works in row strips with the same halo; make the strips tiny and compare with the whole.
    monkeypatch.setattr(scene_module, "FUSE_ROWS", 7)
    strips = model.fuse(image_a, image_b)
    assert np.abs(strips - whole[0].permute(1, 2, 0).numpy()).max() < 1e-5


def test_injection_with_zero_gains_is_bicubic_upsampling_on_the_scene_registration(fitted_pan) -> None:
    from maugif_core.baselines import bicubic

    model = with_rule(fitted_pan[0], consistency_steps=0)
    _, image_a, image_b = fitted_pan
    assert model.gains.shape == (5 + 1, 5)  # K decoder channels + the PAN's own detail, onto K coefficients
    assert model.gains.abs().max() > 1e-2  # fitted on the scene, not left at zero
    injected = model.fuse(image_a, image_b)
    model.gains.zero_()
    plain = model.fuse(image_a, image_b)
    sensor = model.sensor_model
    expected = upsample_registered(to_nchw(image_a), model.ratio, (sensor.shift_y, sensor.shift_x))
    assert np.abs(plain - expected[0].permute(1, 2, 0).clamp(0, 1).numpy()).max() < 1e-5
    assert np.abs(injected - plain).max() > 1e-3
    # With the footprint-centre registration, that is the bicubic baseline.
    centred = with_rule(fitted_pan[0], consistency_steps=0)
    centred.set_sensor(SensorModel.fixed(model.ratio))
    centred.gains.zero_()
    assert np.abs(centred.fuse(image_a, image_b) - bicubic(image_a, image_b, task="pansharpen")).max() < 1e-5


def test_back_projection_makes_the_result_consistent_with_the_low_resolution_image(fitted_pan) -> None:
    from maugif_core.multiplicative.injection import consistency_radius, degrade, injection_radius

    base, image_a, image_b = fitted_pan
    low, high = to_nchw(image_a), to_nchw(image_b)
    sensor = base.sensor_model
    errors = []
    for steps in (0, 1, 3):
        model = with_rule(base, consistency_steps=steps)
        assert model.receptive_field_radius == injection_radius(model.ratio) + steps * consistency_radius(model.ratio)
        with torch.no_grad():
            fused = model.fuse_tensor(low, high)
        errors.append(float((degrade(fused, model.ratio, sensor) - low).abs().mean()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0], errors


def test_injection_needs_the_low_resolution_image(fitted_pan) -> None:
    model, _, image_b = fitted_pan
    with pytest.raises(ShapeError, match="image_a.*injection"):
        model.fuse_tensor(None, to_nchw(image_b))
    decoder_rule = with_rule(model, fusion="decoder")
    assert decoder_rule.fuse_tensor(None, to_nchw(image_b)).shape[1] == 5


def detailed_scene(seed: int, ratio: int, bands_low: int = 6, bands_high: int = 1, size_low: int = 48):
    """A scene with known high-resolution truth: abundances with detail finer than the low-resolution grid.

    Returns ``(image_a, image_b, truth)``: H = blur-decimated truth, M = spectral response of the truth.
    """
    rng = np.random.default_rng(seed)
    size_high = size_low * ratio
    smooth = F.interpolate(
        torch.from_numpy(rng.random((1, 3, size_low // 4, size_low // 4)).astype(np.float32)),
        size=(size_high, size_high),
        mode="bicubic",
        align_corners=False,
    )
    fine = F.interpolate(
        torch.from_numpy(rng.random((1, 3, size_high // 2, size_high // 2)).astype(np.float32)),
        size=(size_high, size_high),
        mode="bilinear",
        align_corners=False,
    )
    abundances = (0.6 * smooth + 0.4 * fine)[0].clamp(0, 1)
    spectra = torch.from_numpy(rng.random((bands_low, 3)).astype(np.float32))
    truth = torch.einsum("lk,khw->lhw", spectra, abundances) / 2
    response = torch.from_numpy(rng.random((bands_high, bands_low)).astype(np.float32))
    high = torch.einsum("ml,lhw->mhw", response / response.sum(1, keepdim=True), truth)
    low = decimate(truth[None], ratio, "blur")[0]
    image_b = high.permute(1, 2, 0).numpy()
    return (
        low.permute(1, 2, 0).numpy(),
        image_b[..., 0] if bands_high == 1 else image_b,
        truth.permute(1, 2, 0).numpy(),
    )


@pytest.mark.parametrize(
    ("task", "bands_high", "ratio"), [("pansharpen", 1, 4), ("hsi_msi", 3, 3)], ids=["pansharpen", "hsi_msi"]
)
def test_injection_beats_bicubic_where_the_high_resolution_detail_is_known(
    task: str, bands_high: int, ratio: int
) -> None:
    """The fused image must recover detail that bicubic upsampling cannot: lower RMSE and SAM against the
    known truth, with either detail source — while SPEC's decoder rule, which drops the measured spectra,
    does not get there."""
    from maugif_core.baselines import bicubic

    image_a, image_b, truth = detailed_scene(3, ratio, bands_high=bands_high)
    base = bicubic(image_a, image_b, task=task)
    base_scores = rmse(base, truth), sam_degrees(base, truth)
    # RMSE bounds: measured 0.33x (pansharpen) with M's own detail; 0.83x (pansharpen) and 0.91x (hsi_msi) with
    # D's detail alone.
    for sources, rmse_bound in (("decoder", 0.95), ("decoder+image", 0.6)):
        model = MultiplicativeMAUGIF(small_config(task, steps=300, injection_sources=sources))
        fused = model.fuse(image_a, image_b)
        scores = rmse(fused, truth), sam_degrees(fused, truth)
        print(f"{task} {sources}: rmse/sam {scores} vs bicubic {base_scores}")
        assert scores[0] < rmse_bound * base_scores[0]
        assert scores[1] < base_scores[1]
    decoded = with_rule(model, fusion="decoder").fuse(image_a, image_b)
    assert rmse(decoded, truth) > scores[0] and sam_degrees(decoded, truth) > scores[1]


@pytest.mark.gpu
def _scores(reference: np.ndarray, **images: np.ndarray) -> dict[str, dict[str, float]]:
    """RMSE and SAM (degrees) of each named image against the reference."""
    return {name: {"rmse": rmse(img, reference), "sam": sam_degrees(img, reference)} for name, img in images.items()}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_and_fit_many_on_cuda_match_cpu_closely() -> None:
    scenes = [make_scene(s) for s in (30, 31)]
    config = small_config(steps=50)
    cpu = [MultiplicativeMAUGIF(config) for _ in scenes]
    for model, (a, b) in zip(cpu, scenes, strict=True):
        model.fit(a, b)
    gpu = fit_many(config, scenes, device="cuda")  # grouped convolutions on CUDA
    for one, other, (a, b) in zip(cpu, gpu, scenes, strict=True):
        assert other.basis.is_cuda
        assert np.abs(one.fuse(a, b) - other.fuse(a, b)).max() < 2e-3


def test_state_dict_round_trips_through_safetensors(fitted_pan, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model, image_a, image_b = fitted_pan
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    config = model.fitted_config()
    assert (config.bands_low, config.bands_high, config.rank, config.ratio) == (5, 1, 5, 2)
    rebuilt = MultiplicativeMAUGIF(MultiplicativeConfig.model_validate_json(config.model_dump_json()))
    assert not rebuilt.is_fitted
    rebuilt.load_state_dict(load_file(str(path)))
    assert rebuilt.is_fitted
    assert torch.equal(rebuilt.basis, model.basis)
    assert np.array_equal(rebuilt.fuse(image_a, image_b), model.fuse(image_a, image_b))
    # A model built from the plain (unfitted) config takes its layer shapes from the checkpoint.
    bare = MultiplicativeMAUGIF(model.config)
    bare.load_state_dict(load_file(str(path)))
    assert np.array_equal(bare.fuse(image_a, image_b), model.fuse(image_a, image_b))


# ---------------------------------------------------------------------------------------------- errors


def test_errors_name_the_input_and_what_was_expected(fitted_pan) -> None:
    model, image_a, image_b = fitted_pan
    fresh = MultiplicativeMAUGIF(small_config(steps=1))
    with pytest.raises(RatioError, match="image_b"):
        fresh.fit(image_a, image_b[:-1])  # 39x40 for 20x20: not an integer ratio
    with pytest.raises(RatioError, match="image_b"):
        fresh.fit(image_a, np.zeros((40, 60), np.float32))  # ratios 2 and 3
    with pytest.raises(RatioError, match="r >= 2"):
        fresh.fit(image_a, np.zeros((20, 20), np.float32))
    with pytest.raises(RatioError, match="config ratio"):
        MultiplicativeMAUGIF(small_config(ratio=4)).fit(image_a, image_b)
    with pytest.raises(BandCountError, match="image_a.*at least 2 bands"):
        fresh.fit(image_a[..., 0], image_b)
    with pytest.raises(BandCountError, match="image_a"):
        fresh.fit(image_a[..., :1], image_b)
    # fuse() fits another scene anew (tested in test_multiplicative_sensor.py); the tile path never fits.
    with pytest.raises(BandCountError, match="image_b: the fitted model expects 1 bands, got 3"):
        model.fuse_tensor(to_nchw(image_a), to_nchw(np.repeat(image_b[..., None], 3, axis=2)))
    with pytest.raises(BandCountError, match="image_a: the fitted model expects 5 bands, got 4"):
        model.fuse_tensor(to_nchw(image_a[..., :4]), to_nchw(image_b))
    with pytest.raises(RatioError, match="fitted model is for ratio 2, got ratio 4"):
        model.fuse_tensor(to_nchw(image_a[:10, :10]), to_nchw(image_b))
    with pytest.raises(BandCountError, match="config expects 5 and 1 bands, got 5 and 3"):
        with_rule(model).fuse(image_a, np.repeat(image_b[..., None], 3, axis=2))
    with pytest.raises(BandCountError, match="config expects 5 and 1 bands"):
        MultiplicativeMAUGIF(model.fitted_config()).fit(image_a[..., :4], image_b)
    with pytest.raises(NotFittedError, match="fitted"):
        fresh.fuse_tensor(None, to_nchw(image_b))
    bad = image_a.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="image_a"):
        fresh.fit(bad, image_b)
    with pytest.raises(DTypeError, match="image_b"):
        fresh.fit(image_a, image_b.astype(np.int32))
    assert not fresh.is_fitted


def test_config_band_fields_are_validated_together() -> None:
    with pytest.raises(ValueError, match="bands_low and bands_high"):
        MultiplicativeConfig(bands_low=6)
    with pytest.raises(ValueError, match="decimation_offset"):
        MultiplicativeConfig(ratio=2, decimation_offset=2)


def test_importing_the_core_does_not_import_ray_rasterio_or_fsspec() -> None:
    code = (
        "import sys, maugif_core.multiplicative; "
        "print(','.join(m for m in ('ray', 'rasterio', 'fsspec') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
