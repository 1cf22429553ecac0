"""Tiling: grid geometry, tile → stitch identity, tiled == whole-image fusion, nodata masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError, GridError
from pipeline.io.tiling import (
    TileSpec,
    extract_tile,
    fuse_tiled,
    nodata_mask,
    plan_tiles,
    stitch_tiles,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grids(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(H, W, tile, halo, ratio) with H, W multiples of the ratio, often odd."""
    ratio = draw(st.sampled_from([1, 1, 2, 3, 4]))
    height = ratio * draw(st.integers(1, 60))
    width = ratio * draw(st.integers(1, 60))
    tile = ratio * draw(st.integers(1, 20))
    halo = draw(st.integers(0, 12))
    return height, width, tile, halo, ratio


def _image(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random(shape, dtype=np.float32)
    if kind == "constant":
        return np.full(shape, 0.37, dtype=np.float32)
    rows, cols = np.meshgrid(np.arange(shape[-2]), np.arange(shape[-1]), indexing="ij")
    return np.broadcast_to((rows * 3 + cols * 7).astype(np.float32), shape).copy()


@SETTINGS
@given(grids())
def test_plan_partitions_the_image_with_fixed_clamped_reads(grid: tuple[int, int, int, int, int]) -> None:
    height, width, tile, halo, ratio = grid
    specs = plan_tiles(height, width, tile, halo, ratio)
    effective_halo = -(-halo // ratio) * ratio
    owner = np.zeros((height, width), dtype=np.int32)
    read_shapes = set()
    for spec in specs:
        owner[spec.core.row_off : spec.core.row_end, spec.core.col_off : spec.core.col_end] += 1
        read_shapes.add((spec.read.height, spec.read.width))
        # Read windows lie inside the image and contain the core.
        assert 0 <= spec.read.row_off <= spec.core.row_off and spec.core.row_end <= spec.read.row_end <= height
        assert 0 <= spec.read.col_off <= spec.core.col_off and spec.core.col_end <= spec.read.col_end <= width
        # Context: at least the halo on each side, or the read window reaches the image edge.
        assert spec.halo_top >= effective_halo or spec.read.row_off == 0
        assert spec.halo_left >= effective_halo or spec.read.col_off == 0
        assert spec.halo_bottom >= effective_halo or spec.read.row_end == height
        assert spec.halo_right >= effective_halo or spec.read.col_end == width
        # Aligned to the ratio: the low-resolution window is exact.
        low = spec.read.scaled(ratio)
        assert (low.row_off * ratio, low.height * ratio) == (spec.read.row_off, spec.read.height)
    assert (owner == 1).all(), "cores must cover every pixel exactly once (no skipped last row/column)"
    assert read_shapes == {(min(height, tile + 2 * effective_halo), min(width, tile + 2 * effective_halo))}
    assert len(specs) == -(-height // tile) * -(-width // tile)
    assert [(s.row, s.col) for s in specs] == sorted((s.row, s.col) for s in specs)


def test_last_row_and_column_are_clamped_inside_the_image() -> None:
    specs = plan_tiles(1001, 517, 256, 16)
    last = specs[-1]
    assert (last.row, last.col) == (3, 2)
    assert (last.core.row_end, last.core.col_end) == (1001, 517)
    assert (last.read.row_end, last.read.col_end) == (1001, 517)
    assert (last.read.height, last.read.width) == (288, 288)
    assert last.halo_bottom == 0 and last.halo_right == 0
    assert last.halo_top == 288 - (1001 - 768) and last.halo_left == 288 - (517 - 512)
    first = specs[0]
    assert (first.halo_top, first.halo_left, first.halo_bottom, first.halo_right) == (0, 0, 32, 32)


@SETTINGS
@given(grids(), st.sampled_from(["random", "constant", "gradient"]), st.sampled_from([(), (1,), (3,)]))
def test_tile_then_stitch_is_identity(grid: tuple[int, int, int, int, int], kind: str, lead: tuple[int, ...]) -> None:
    height, width, tile, halo, ratio = grid
    image = _image(kind, (*lead, height, width), seed=height * 1000 + width)
    specs = plan_tiles(height, width, tile, halo, ratio)
    stitched = stitch_tiles(((s, extract_tile(image, s).copy()) for s in specs), height, width)
    assert stitched.shape == image.shape and stitched.dtype == image.dtype
    np.testing.assert_array_equal(stitched, image)


@SETTINGS
@given(grids())
def test_low_resolution_windows_match_the_high_resolution_grid(grid: tuple[int, int, int, int, int]) -> None:
    height, width, tile, halo, ratio = grid
    low = _image("random", (2, height // ratio, width // ratio), seed=7)
    high = np.repeat(np.repeat(low, ratio, axis=1), ratio, axis=2)  # nearest upsampling, aligned origins
    for spec in plan_tiles(height, width, tile, halo, ratio):
        tile_low = extract_tile(low, spec, downscale=ratio)
        tile_high = extract_tile(high, spec)
        np.testing.assert_array_equal(np.repeat(np.repeat(tile_low, ratio, axis=1), ratio, axis=2), tile_high)


def test_stitch_rejects_incomplete_or_misshapen_tiles() -> None:
    specs = plan_tiles(40, 40, 16, 4)
    image = _image("random", (40, 40), 0)
    with pytest.raises(GridError, match="cover"):
        stitch_tiles(((s, extract_tile(image, s)) for s in specs[:-1]), 40, 40)
    with pytest.raises(GridError, match="shape"):
        stitch_tiles([(specs[0], image[:5, :5])], 40, 40)
    with pytest.raises(GridError, match="no tiles"):
        stitch_tiles([], 40, 40)


def test_plan_rejects_unaligned_or_invalid_sizes() -> None:
    with pytest.raises(ConfigError, match="multiple of the resolution ratio"):
        plan_tiles(64, 64, 30, 4, ratio=4)
    with pytest.raises(GridError, match="ratio"):
        plan_tiles(63, 64, 32, 4, ratio=4)
    with pytest.raises(ConfigError):
        plan_tiles(0, 64, 32, 4)
    with pytest.raises(ConfigError):
        plan_tiles(64, 64, 32, -1)
    # The halo is rounded up to the ratio so that low-resolution windows stay exact.
    spec = plan_tiles(64, 64, 16, 3, ratio=4)[5]
    assert spec.halo_top == 4 and spec.halo_left == 4


# --------------------------------------------------------------------------------------- tiled == whole-image
def _conv_stack(kernels: list[int], channels_in: int, seed: int) -> tuple[torch.nn.Module, int]:
    """A fixed random conv net ('same' zero padding) and its receptive-field radius."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = channels_in
    for i, k in enumerate(kernels):
        out = 1 if i == len(kernels) - 1 else 4
        layers.append(torch.nn.Conv2d(width, out, k, padding=k // 2))
        if i < len(kernels) - 1:
            layers.append(torch.nn.Tanh())
        width = out
    return torch.nn.Sequential(*layers).eval(), sum(k // 2 for k in kernels)


def _as_fuse_fn(net: torch.nn.Module, ratio: int = 1):
    def fuse(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(np.ascontiguousarray(tile_a))
        if ratio > 1:
            a = a.repeat_interleave(ratio, dim=-2).repeat_interleave(ratio, dim=-1)
        x = torch.cat([a, torch.from_numpy(np.ascontiguousarray(tile_b))], dim=0)[None]
        with torch.no_grad():
            return net(x)[0].numpy()

    return fuse


@settings(max_examples=25, deadline=None)
@given(
    st.integers(17, 71),
    st.integers(17, 71),
    st.sampled_from([8, 12, 16, 32]),
    st.sampled_from([[3, 3], [5, 1, 3], [11, 9]]),
    st.integers(0, 3),
)
def test_tiled_conv_net_equals_whole_image(height: int, width: int, tile: int, kernels: list[int], extra: int) -> None:
    net, radius = _conv_stack(kernels, channels_in=2, seed=height + width)
    image_a = _image("random", (1, height, width), seed=1)
    image_b = _image("random", (1, height, width), seed=2)
    fuse = _as_fuse_fn(net)
    whole = fuse(image_a, image_b)
    tiled = fuse_tiled(fuse, image_a, image_b, tile, radius + extra)
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() < 1e-5


def test_tiled_conv_net_with_too_small_halo_differs() -> None:
    """The equality above is not vacuous: a halo below the receptive radius produces seams."""
    net, radius = _conv_stack([5, 5], channels_in=2, seed=0)
    image_a, image_b = _image("random", (1, 64, 64), 1), _image("random", (1, 64, 64), 2)
    fuse = _as_fuse_fn(net)
    assert np.abs(fuse_tiled(fuse, image_a, image_b, 16, radius - 2) - fuse(image_a, image_b)).max() > 1e-3


@pytest.mark.parametrize("ratio", [2, 4])
def test_tiled_multiresolution_fusion_equals_whole_image(ratio: int) -> None:
    net, radius = _conv_stack([3, 5], channels_in=4, seed=ratio)
    low = _image("random", (3, 60 // ratio * 1, 84 // ratio), seed=3)
    high = _image("random", (1, 60, 84), seed=4)
    fuse = _as_fuse_fn(net, ratio)
    whole = fuse(low, high)
    tiled = fuse_tiled(fuse, low, high, tile_size=4 * ratio, halo=radius, ratio=ratio)
    assert np.abs(tiled - whole).max() < 1e-5
    with pytest.raises(GridError):
        fuse_tiled(fuse, low[:, :-1], high, tile_size=4 * ratio, halo=radius, ratio=ratio)


@pytest.mark.parametrize("bn_mode", ["per_image", "running"])
def test_tiled_real_model_equals_whole_image(bn_mode: str) -> None:
    """The additive MAUGIF model, fused tile by tile with a halo of its receptive-field radius.

    In per_image mode the BatchNorm statistics are computed once on the whole image and frozen for the tiles.
    """
    maugif_core = pytest.importorskip("maugif_core")
    torch.manual_seed(0)
    model = maugif_core.build_model("vif", bn_mode=bn_mode).eval()
    radius = int(model.receptive_field_radius)
    rng = np.random.default_rng(0)
    luma_a = rng.random((1, 97, 83), dtype=np.float32)
    image_b = rng.random((1, 97, 83), dtype=np.float32)
    whole_a, whole_b = torch.from_numpy(luma_a)[None], torch.from_numpy(image_b)[None]
    stats = model.compute_norm_stats(whole_a, whole_b) if bn_mode == "per_image" else None

    def fuse(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(np.ascontiguousarray(tile_a))[None]
        b = torch.from_numpy(np.ascontiguousarray(tile_b))[None]
        return model.fuse_luma(a, b, norm_stats=stats, details=False)[0][0].numpy()

    whole = fuse(luma_a, image_b)
    tiled = fuse_tiled(fuse, luma_a, image_b, tile_size=32, halo=radius)
    assert np.abs(tiled - whole).max() < 1e-5
    # Not vacuous: without the halo the tiles disagree with the whole image at their seams.
    assert np.abs(fuse_tiled(fuse, luma_a, image_b, tile_size=32, halo=0) - whole).max() > 1e-4


def test_tiled_pansharpening_model_on_the_high_resolution_grid() -> None:
    """The multiplicative model (fitted per scene, basis per scene) fused tile by tile with ratio 4."""
    maugif_core = pytest.importorskip("maugif_core")
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    low = rng.random((13, 11, 4), dtype=np.float32)  # H: (h, w, L)
    pan = rng.random((52, 44), dtype=np.float32)  # M: (4h, 4w)
    model = maugif_core.build_model("pansharpen", steps=5)
    model.fit(low, pan)
    low_chw = np.ascontiguousarray(np.moveaxis(low, -1, 0))
    pan_chw = pan[None]

    def fuse(tile_a: np.ndarray, tile_b: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(np.ascontiguousarray(tile_a))[None]
        b = torch.from_numpy(np.ascontiguousarray(tile_b))[None]
        with torch.no_grad():
            return model.fuse_tensor(a, b)[0].numpy()

    whole = fuse(low_chw, pan_chw)
    tiled = fuse_tiled(fuse, low_chw, pan_chw, tile_size=16, halo=model.receptive_field_radius, ratio=4)
    assert tiled.shape == (4, 52, 44)
    assert np.abs(tiled - whole).max() < 1e-5


# ----------------------------------------------------------------------------------------------------- nodata
def test_nodata_mask_any_band_and_nan() -> None:
    image = np.ones((3, 4, 5), dtype=np.float32)
    image[1, 0, 0] = -9999
    image[2, 3, 4] = np.nan
    mask = nodata_mask(image, -9999)
    assert mask.shape == (4, 5) and mask[0, 0] and mask.sum() == 1
    nan_mask = nodata_mask(image, float("nan"))
    assert nan_mask[3, 4] and nan_mask.sum() == 1
    assert nodata_mask(image, None) is None


def test_fuse_tiled_restores_nodata_where_either_input_is_nodata() -> None:
    net, radius = _conv_stack([3, 3], channels_in=2, seed=5)
    fuse = _as_fuse_fn(net)
    rng = np.random.default_rng(5)
    image_a = rng.random((1, 50, 45), dtype=np.float32)
    image_b = rng.random((1, 50, 45), dtype=np.float32)
    image_a[0, :10, :10] = -1.0  # nodata block in A
    image_b[0, 40:, 30:] = 255.0  # nodata block in B
    fused = fuse_tiled(fuse, image_a, image_b, 16, radius, nodata_a=-1.0, nodata_b=255.0)
    expected_mask = np.zeros((50, 45), bool)
    expected_mask[:10, :10] = True
    expected_mask[40:, 30:] = True
    assert ((fused[0] == -1.0) == expected_mask).all()  # A's nodata value is the output's
    # Valid pixels equal a whole-image fusion of the inputs with nodata filled by the neutral value.
    filled_a, filled_b = image_a.copy(), image_b.copy()
    filled_a[0][expected_mask & (image_a[0] == -1.0)] = 0.0
    filled_b[0][image_b[0] == 255.0] = 0.0
    whole = fuse(filled_a, filled_b)
    assert np.abs(fused[0][~expected_mask] - whole[0][~expected_mask]).max() < 1e-5


def test_fuse_tiled_low_resolution_nodata_is_upsampled() -> None:
    low = np.ones((2, 8, 8), dtype=np.float32)
    low[:, 0, 0] = 0.0
    high = np.ones((1, 32, 32), dtype=np.float32)

    def fuse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, 4, axis=1), 4, axis=2) + b

    fused = fuse_tiled(fuse, low, high, 8, 0, ratio=4, nodata_a=0.0, nodata_out=-5.0)
    assert (fused[:, :4, :4] == -5.0).all()
    assert (fused[:, 4:, :] == 2.0).all() and (fused[:, :, 4:] == 2.0).all()


def test_tilespec_is_a_plain_dataclass() -> None:
    spec = plan_tiles(10, 10, 4, 1)[4]
    assert isinstance(spec, TileSpec) and (spec.row, spec.col) == (1, 1)
    assert spec.core.to_dict() == {"row_off": 4, "col_off": 4, "height": 4, "width": 4}
