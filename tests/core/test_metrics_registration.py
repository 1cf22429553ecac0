"""QNR's D_s with the PAN degraded at the data's registration (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from maugif_core.metrics import degrade_pan
from maugif_core.metrics.evaluate import evaluate_full


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_registered_pan_degradation_equals_the_default_at_the_default_phase(ratio: int) -> None:
    pan = np.random.default_rng(ratio).random((12 * ratio, 10 * ratio))
    phase = ratio // 2
    assert np.abs(degrade_pan(pan, ratio, registration=(phase, phase)) - degrade_pan(pan, ratio)).max() < 1e-9


def test_registered_pan_degradation_samples_at_fractional_positions() -> None:
    # A linear ramp survives the Gaussian low-pass unchanged away from the borders, so the samples are the
    # ramp's values at the registered positions (float64 reference: the ramp itself).
    ratio, dy, dx = 4, -0.5, 1.25
    rows, cols = np.meshgrid(np.arange(64.0), np.arange(64.0), indexing="ij")
    pan = 0.01 * rows + 0.002 * cols
    low = degrade_pan(pan, ratio, registration=(dy, dx))
    i, j = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    expected = 0.01 * (ratio * i + dy) + 0.002 * (ratio * j + dx)
    assert np.abs(low[3:-3, 3:-3] - expected[3:-3, 3:-3]).max() < 1e-9


def test_d_s_with_the_true_registration_rewards_the_registered_fusion() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    ratio, shift = 2, -0.5  # MS pixel i centred on PAN pixel 2i - 0.5
    latent = ndimage.gaussian_filter(rng.random((128, 128, 4)), (1.5, 1.5, 0))
    latent = latent * np.array([1.0, 0.8, 0.6, 0.9])
    pan = latent.mean(axis=2)
    sigma = ratio * np.sqrt(-2.0 * np.log(0.3)) / np.pi
    blurred = ndimage.gaussian_filter(latent, (sigma, sigma, 0))
    grid = np.meshgrid(ratio * np.arange(64) + shift, ratio * np.arange(64) + shift, indexing="ij")
    ms = np.stack([ndimage.map_coordinates(blurred[..., k], grid, order=3, mode="nearest") for k in range(4)], 2)
    default = evaluate_full(latent, ms, pan, ratio)
    registered = evaluate_full(latent, ms, pan, ratio, registration=(shift, shift))
    assert registered["d_s"] < default["d_s"]
    assert registered["d_lambda"] == default["d_lambda"]
