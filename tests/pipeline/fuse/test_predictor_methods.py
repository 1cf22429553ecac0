"""The fusion actor's callable with plain rows (HWC arrays, no metadata) and with non-MAUGIF methods."""

from __future__ import annotations

import json

import numpy as np
import pytest

import maugif_core
from maugif_core import baselines
from pipeline import schema as S
from pipeline.fuse.predictor import FusionPredictor, PredictorConfig


def _pair(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    high = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, high, shape, dtype=dtype), rng.integers(0, high, shape, dtype=dtype)


@pytest.mark.parametrize("shape", [(24, 20, 3), (17, 31)])
def test_plain_rows_without_metadata_give_hwc_like_maugif_core(shape):
    """Rows with only pair_id, task and two arrays fuse; the result is what ``model.fuse`` returns (HWC, or 2-D
    for a 2-D A)."""
    a, b = _pair(shape)
    predictor = FusionPredictor({"device": "cpu"})
    out = predictor({S.PAIR_ID: ["p"], S.TASK: ["mff"], S.IMAGE_A: [a], S.IMAGE_B: [b]})
    assert out[S.STATUS] == [S.STATUS_OK], out.get(S.ERROR)
    fused = S.decode_array(out[S.FUSED][0])
    np.testing.assert_array_equal(fused, maugif_core.pretrained("mff").fuse(a, b))


def test_baseline_method_equals_the_baseline_and_tiles_with_its_halo():
    """``method="laplacian"``: whole images equal the baseline; a pair above ``max_untiled_pixels`` is tiled with
    the method's halo (64 px) and stays close to the whole-image result (pyramid phases differ per tile)."""
    small, large = _pair((40, 36, 3), seed=1), _pair((150, 170, 3), seed=2)
    config = PredictorConfig(method="laplacian", device="cpu", tile_size=64, max_untiled_pixels=40 * 40)
    out = FusionPredictor(config)(
        {S.PAIR_ID: ["small", "large"], S.TASK: ["vif", "vif"], S.IMAGE_A: [small[0], large[0]],
         S.IMAGE_B: [small[1], large[1]]}
    )  # fmt: skip
    assert out[S.STATUS] == [S.STATUS_OK, S.STATUS_OK], out.get(S.ERROR)
    np.testing.assert_array_equal(S.decode_array(out[S.FUSED][0]), baselines.laplacian(*small, task="vif"))
    tiled = S.decode_array(out[S.FUSED][1]).astype(int)
    whole = baselines.laplacian(*large, task="vif").astype(int)
    assert tiled.shape == whole.shape == (150, 170, 3)
    assert np.abs(tiled - whole).mean() < 2.0


def test_baseline_method_keeps_nodata_and_refuses_the_wrong_mechanism():
    """Nodata of A (from meta_a) stays nodata in the result; a spectral task under an additive method fails that
    pair with the reason, its batch-mate is fused."""
    a, b = _pair((30, 32, 1), seed=3, dtype=np.uint16)
    a[:5] = 0
    meta = json.dumps({"nodata": 0})
    out = FusionPredictor(PredictorConfig(method="maxabs", device="cpu"))(
        {S.PAIR_ID: ["geo", "ps"], S.TASK: ["vif", "pansharpen"], S.IMAGE_A: [a, a], S.IMAGE_B: [b, b],
         S.META_A: [meta, meta], S.META_B: [json.dumps({}), json.dumps({})]}
    )  # fmt: skip
    assert out[S.STATUS] == [S.STATUS_OK, S.STATUS_FAILED]
    fused = S.decode_array(out[S.FUSED][0])
    assert fused.dtype == np.uint16 and fused.shape == (30, 32, 1)
    assert (fused[:5] == 0).all() and (fused[5:] > 0).any()
    assert "'maxabs' is additive" in out[S.ERROR][1] and "'pansharpen'" in out[S.ERROR][1]
