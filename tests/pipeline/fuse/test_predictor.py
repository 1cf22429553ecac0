"""The fusion actor's callable, without Ray: micro-batching, per-pair isolation, equality with ``model.fuse``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import maugif_core
from pipeline import schema as S
from pipeline.fuse.predictor import FusionPredictor, PredictorConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "mff.safetensors"
    maugif_core.save_checkpoint(maugif_core.build_model("mff"), path)
    return str(path)


def _batch(images: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, list]:
    meta = json.dumps({"nodata": None})
    return {
        S.PAIR_ID: [f"p{i}" for i in range(len(images))],
        S.TASK: ["mff"] * len(images),
        S.IMAGE_A: [a for a, _ in images],
        S.IMAGE_B: [b for _, b in images],
        S.META_A: [meta] * len(images),
        S.META_B: [meta] * len(images),
        S.STATUS: [S.STATUS_OK] * len(images),
    }


def _pairs(n: int, shape: tuple[int, ...], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)
    ]


@pytest.mark.parametrize("shape", [(24, 20, 3), (17, 31)])
@pytest.mark.parametrize("max_batch_pixels", [1, 24 * 20 * 2, 10**9])
def test_micro_batches_equal_one_pair_at_a_time(checkpoint, shape, max_batch_pixels):
    """However a same-size group is split into forward passes, every pair's output equals ``model.fuse``."""
    pairs = _pairs(5, shape)
    predictor = FusionPredictor(
        PredictorConfig(checkpoints={"mff": checkpoint}, device="cpu", max_batch_pixels=max_batch_pixels)
    )
    out = predictor(_batch(pairs))
    model = maugif_core.load_checkpoint(checkpoint)
    assert out[S.STATUS] == [S.STATUS_OK] * 5
    for fused, (a, b) in zip(out[S.FUSED], pairs, strict=True):
        expected = model.fuse(a, b)
        expected = np.moveaxis(expected, -1, 0) if expected.ndim == 3 else expected[None]
        np.testing.assert_array_equal(S.decode_array(fused).reshape(expected.shape), expected)


def test_cpu_default_splits_large_groups_and_cuda_default_does_not():
    cpu = FusionPredictor(PredictorConfig(device="cpu"))
    assert cpu.max_batch_pixels == 256 * 256
    assert FusionPredictor(PredictorConfig(device="cpu", max_batch_pixels=7)).max_batch_pixels == 7


def test_a_bad_pair_fails_alone(checkpoint):
    """A pair whose images disagree in size fails with a reason; its batch-mates are fused."""
    pairs = _pairs(3, (16, 16, 3))
    pairs[1] = (pairs[1][0], pairs[1][1][:8])
    predictor = FusionPredictor(PredictorConfig(checkpoints={"mff": checkpoint}, device="cpu"))
    out = predictor(_batch(pairs))
    by_id = dict(zip(out[S.PAIR_ID], zip(out[S.STATUS], out[S.ERROR], strict=True), strict=True))
    assert by_id["p0"][0] == by_id["p2"][0] == S.STATUS_OK
    assert by_id["p1"][0] == S.STATUS_FAILED and by_id["p1"][1]


@pytest.mark.parametrize("bn_mode", ["per_image", "running"])
def test_tiled_additive_fusion_equals_whole_image_in_both_batchnorm_modes(tmp_path, bn_mode):
    """Images above ``max_untiled_pixels`` go through the tiled path: per-image statistics are taken once from the
    whole image and frozen for its tiles, running statistics need none; either way the tiles equal the whole."""
    torch.manual_seed(5)
    model = maugif_core.build_model("mff", bn_mode=bn_mode)
    path = tmp_path / f"{bn_mode}.safetensors"
    maugif_core.save_checkpoint(model, path)
    pairs = _pairs(1, (70, 90, 3), seed=4)
    config = PredictorConfig(checkpoints={"mff": str(path)}, device="cpu", tile_size=32, max_untiled_pixels=1000)
    out = FusionPredictor(config)(_batch(pairs))
    assert out[S.STATUS] == [S.STATUS_OK]
    expected = np.moveaxis(maugif_core.load_checkpoint(path).fuse(*pairs[0]), -1, 0)
    fused = S.decode_array(out[S.FUSED][0]).reshape(expected.shape)
    assert np.abs(fused.astype(int) - expected.astype(int)).max() <= 1
