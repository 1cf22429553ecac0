"""The multiplicative sensor model (registration + MTF gain per scene) and one fit per scene (issues 13, 15)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maugif_core.config import preset
from maugif_core.errors import RatioError
from maugif_core.multiplicative import MultiplicativeMAUGIF
from maugif_core.multiplicative.sensor import (
    SensorModel,
    degrade_sensor,
    estimate_sensor,
    gain_sigma,
    registration_from_transforms,
    upsample_registered,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def latent_cube(seed: int, size: int, bands: int = 4) -> torch.Tensor:
    """``(1, bands, size, size)``: smooth random abundances × random spectra, plus fine texture."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 5, size // 5, generator=gen)
    abundances = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    spectra = torch.rand(bands, 3, generator=gen)
    cube = torch.einsum("lk,bkhw->blhw", spectra, abundances) / 3
    return cube + 0.05 * torch.rand(1, 1, size, size, generator=gen)


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_registered_upsampling_at_the_footprint_centre_is_torch_bicubic(ratio: int) -> None:
    image = torch.rand(1, 3, 9, 13, generator=torch.Generator().manual_seed(ratio))
    centre = (ratio - 1) / 2
    expected = F.interpolate(image, scale_factor=ratio, mode="bicubic", align_corners=False)
    assert torch.allclose(upsample_registered(image, ratio, (centre, centre)), expected, atol=1e-5)
    # A shift of one high-resolution pixel moves the result by one pixel (away from the borders).
    moved = upsample_registered(image, ratio, (centre + 1, centre))
    assert torch.allclose(
        moved[..., 3 * ratio + 1 : -3 * ratio, :], expected[..., 3 * ratio : -3 * ratio - 1, :], atol=1e-5
    )


@pytest.mark.parametrize(
    ("ratio", "shift", "gain"), [(2, (0.0, 0.5), 0.3), (4, (1.5, -0.25), 0.2), (3, (2.75, 1.0), 0.45)]
)
def test_sensor_degradation_matches_a_float64_reference(ratio: int, shift: tuple[float, float], gain: float) -> None:
    image = torch.rand(1, 2, 8 * ratio, 6 * ratio, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = degrade_sensor(image.float(), ratio, SensorModel(shift[0], shift[1], gain))
    sigma = gain_sigma(ratio, gain)
    x = image[0].numpy()
    H, W = x.shape[1:]

    def weights(n: int, centre: float) -> np.ndarray:
        pos = np.arange(n, dtype=np.float64)
        w = np.exp(-0.5 * ((pos - centre) / sigma) ** 2) * (np.abs(pos - centre) <= math.ceil(3 * sigma) + 1)
        return w

    # Reference on a replicate-padded copy, so that the borders' taps land on edge pixels.
    pad = 4 * ratio + 8
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    ref = np.empty((2, H // ratio, W // ratio))
    for i in range(H // ratio):
        wy = weights(H + 2 * pad, ratio * i + shift[0] + pad)
        for j in range(W // ratio):
            wx = weights(W + 2 * pad, ratio * j + shift[1] + pad)
            ref[:, i, j] = np.einsum("y,x,cyx->c", wy, wx, padded) / (wy.sum() * wx.sum())
    assert np.abs(got[0].double().numpy() - ref).max() < 1e-5


@pytest.mark.parametrize(
    ("ratio", "truth"),
    [(2, SensorModel(0.0, 0.5, 0.3)), (4, SensorModel(1.5, 1.5, 0.2)), (4, SensorModel(2.0, 0.75, 0.45))],
)
def test_estimate_recovers_the_registration_and_gain_of_a_scene(ratio: int, truth: SensorModel) -> None:
    cube = latent_cube(0, 40 * ratio)
    image_a = degrade_sensor(cube, ratio, truth)[0]
    pan = cube[0].mean(dim=0, keepdim=True)
    found = estimate_sensor(image_a, pan, ratio)
    assert (found.shift_y, found.shift_x, found.gain) == (truth.shift_y, truth.shift_x, truth.gain)
    assert found.source == "estimated" and found.residual < 1e-6
    # Given a registration (georeferencing), only the gain is searched.
    given = estimate_sensor(image_a, pan, ratio, registration=(truth.shift_y, truth.shift_x))
    assert given.source == "georeferencing" and given.gain == truth.gain


def test_registration_from_transforms() -> None:
    # Corner-aligned grids (the same origin, pixel 4x larger): H's pixel centre on M's footprint centre.
    low = (40.0, 0.0, 1000.0, 0.0, -40.0, 5000.0)
    high = (10.0, 0.0, 1000.0, 0.0, -10.0, 5000.0)
    assert registration_from_transforms(low, high, 4) == (1.5, 1.5)
    # H's origin half a low-resolution pixel west and north: H's pixel centre on M's pixel 0.
    shifted = (40.0, 0.0, 980.0, 0.0, -40.0, 5020.0)
    assert registration_from_transforms(shifted, high, 4) == (-0.5, -0.5)
    with pytest.raises(RatioError, match="pixel sizes in ratio 2"):
        registration_from_transforms(low, high, 2)


def scene(seed: int, ratio: int = 2, size_low: int = 20, truth: SensorModel | None = None):
    cube = latent_cube(seed, size_low * ratio, bands=5)
    truth = truth or SensorModel(0.0, 0.0, 0.3)
    image_a = degrade_sensor(cube, ratio, truth)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    image_b = cube[0].mean(dim=0).clamp(0, 1).numpy()
    return image_a, image_b


def test_fit_estimates_the_scene_sensor_and_exposes_it() -> None:
    image_a, image_b = scene(1, truth=SensorModel(0.0, 0.5, 0.2))
    model = MultiplicativeMAUGIF(preset("pansharpen", steps=20))
    model.fit(image_a, image_b)
    assert (model.sensor_model.shift_y, model.sensor_model.shift_x, model.sensor_model.gain) == (0.0, 0.5, 0.2)
    assert model.details["sensor_source"] == "estimated" and model.details["sensor_gain"] == 0.2
    # The sensor is scene-level state: it travels in the state_dict.
    clone = MultiplicativeMAUGIF(model.fitted_config())
    clone.load_state_dict(model.state_dict())
    assert clone.sensor_model == model.sensor_model
    # A registration from georeferencing is used as given; "fixed" keeps the footprint centre and gain 0.3.
    model.fit(image_a, image_b, registration=(0.25, 0.75))
    assert (model.sensor_model.shift_y, model.sensor_model.shift_x) == (0.25, 0.75)
    assert model.sensor_model.source == "georeferencing"
    fixed = MultiplicativeMAUGIF(preset("pansharpen", steps=20, sensor="fixed"))
    fixed.fit(image_a, image_b)
    assert fixed.sensor_model == SensorModel.fixed(2)


def test_fuse_never_applies_one_scenes_fit_to_another(caplog: pytest.LogCaptureFixture) -> None:
    first, second = scene(2), scene(3)
    model = MultiplicativeMAUGIF(preset("pansharpen", steps=20))
    model.fuse(*first)
    report = model.fit_report
    # The same scene again: reused (no new fit).
    model.fuse(*first)
    assert model.fit_report is report
    # Another scene: fitted anew, exactly as a fresh model fits it.
    with caplog.at_level(logging.INFO, logger="maugif_core.multiplicative.model"):
        fused = model.fuse(*second)
    assert model.fit_report is not report
    assert "not the one the model was fitted on" in caplog.text
    fresh = MultiplicativeMAUGIF(preset("pansharpen", steps=20)).fuse(*second)
    assert np.array_equal(fused, fresh)
    # One changed pixel is another scene.
    changed_a = second[0].copy()
    changed_a[5, 7, 2] += 0.01
    report = model.fit_report
    model.fuse(changed_a, second[1])
    assert model.fit_report is not report
    # A loaded state keeps its scene's fingerprint: fusing that scene reuses the loaded fit.
    clone = MultiplicativeMAUGIF(model.fitted_config())
    clone.load_state_dict(model.state_dict())
    assert clone.fit_report is None
    clone.fuse(changed_a, second[1])
    assert clone.fit_report is None


def test_a_checkpoint_without_sensor_or_fingerprint_loads_and_is_reused_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    image_a, image_b = scene(4)
    model = MultiplicativeMAUGIF(preset("pansharpen", steps=20))
    model.fit(image_a, image_b)
    old = {k: v for k, v in model.state_dict().items() if k not in ("sensor", "fingerprint")}
    clone = MultiplicativeMAUGIF(model.fitted_config())
    clone.load_state_dict(old)
    assert clone.sensor_model == SensorModel.fixed(2)
    with caplog.at_level(logging.WARNING, logger="maugif_core.multiplicative.model"):
        clone.fuse(image_a, image_b)
    assert clone.fit_report is None and "no scene fingerprint" in caplog.text
