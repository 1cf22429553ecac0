"""Additive fusion of band stacks (channel counts other than 1, 3, 4): the intensity is the mean of the bands and
the change fusion makes to it is added to every band (issue 12, N-band inputs)."""

from __future__ import annotations

import numpy as np
import pytest

import maugif_core
from maugif_core.additive import prepare_pair


def _stack(bands: int, seed: int, height: int = 24, width: int = 28) -> np.ndarray:
    """Smooth band mixes of one textured scene, in [0.2, 0.8] so the rule is not hidden by clamping."""
    rng = np.random.default_rng(seed)
    scene = rng.random((height, width)).astype(np.float32)
    weights = np.linspace(0.6, 1.0, bands, dtype=np.float32)
    return (0.2 + 0.6 * scene[..., None] * weights).astype(np.float32)


@pytest.mark.parametrize(("bands_a", "bands_b"), [(5, 5), (5, 1), (2, 8), (7, 3)])
def test_band_stack_gets_the_intensity_change_in_every_band(bands_a: int, bands_b: int) -> None:
    a = _stack(bands_a, seed=0)
    b = _stack(bands_b, seed=1)
    model = maugif_core.pretrained("vif")
    fused = model.fuse(a, b)
    assert fused.shape == a.shape and fused.dtype == a.dtype
    change = fused - a
    inside = ((fused > 0) & (fused < 1)).all(axis=2)  # pixels no band was clamped at
    assert inside.mean() > 0.9
    spread = change.max(axis=2) - change.min(axis=2)
    assert spread[inside].max() < 1e-5  # one change for all bands: A's band differences are kept
    intensity = prepare_pair(a, b).luma_a
    np.testing.assert_allclose(intensity, a.mean(axis=2), rtol=1e-6)
    assert np.abs(change).max() > 1e-3  # fusion did inject something


def test_band_stack_in_integers_and_grey_partner() -> None:
    a = (_stack(5, seed=2) * 65535).astype(np.uint16)
    b = (_stack(1, seed=3)[..., 0] * 255).astype(np.uint8)
    fused = maugif_core.pretrained("mff").fuse(a, b)
    assert fused.shape == a.shape and fused.dtype == np.uint16
    change = fused.astype(np.int64) - a.astype(np.int64)
    assert (change.max(axis=2) - change.min(axis=2)).max() <= 1  # uint16 rounding only
