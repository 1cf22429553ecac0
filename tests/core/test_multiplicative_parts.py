"""The multiplicative model's parts: the spectral basis, decimation and the encoder/decoder networks against
float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_multiplicative import small_config  # shared helpers and fixtures

from maugif_core.multiplicative import (
    MultiplicativeMAUGIF,
    SpectralDecoder,
    SpectralEncoder,
    blur_sigma,
    decimate,
    spectral_basis,
)
from maugif_core.multiplicative.networks import (
    init_stacked_parameters,
    stacked_decoder,
    stacked_encoder,
)
from maugif_core.multiplicative.spectral import blur_sample

# ---------------------------------------------------------------------------------------------- fixtures


# ---------------------------------------------------------------------------------------------- basis


@pytest.mark.parametrize(("bands", "rank", "expected_k"), [(6, 15, 6), (20, 15, 15), (20, 4, 4)])
def test_basis_is_orthonormal_leading_subspace_with_rank_capped(bands: int, rank: int, expected_k: int) -> None:
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((bands, 9, 11)).astype(np.float32))
    basis = spectral_basis(image, rank)
    assert basis.shape == (bands, expected_k)
    gram = basis.double().T @ basis.double()
    assert torch.allclose(gram, torch.eye(expected_k, dtype=torch.float64), atol=1e-5)
    u, _, _ = np.linalg.svd(image.reshape(bands, -1).double().numpy(), full_matrices=False)
    # Same vectors as NumPy's SVD up to sign, and signs fixed so each vector sums to a positive number.
    overlap = np.abs(basis.double().numpy().T @ u[:, :expected_k])
    assert np.allclose(overlap, np.eye(expected_k), atol=1e-4)
    assert (basis.sum(0) > 0).all()


def test_basis_does_not_depend_on_sign_of_solver() -> None:
    image = torch.rand(7, 12, 12, generator=torch.Generator().manual_seed(3))
    assert torch.equal(spectral_basis(image, 15), spectral_basis(image.clone(), 15))


# ---------------------------------------------------------------------------------------------- decimation


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_plain_decimation_takes_the_centre_phase_and_offset_zero_is_the_reference(ratio: int) -> None:
    image = torch.arange(4 * ratio * 4 * ratio, dtype=torch.float32).reshape(1, 1, 4 * ratio, 4 * ratio)
    default = decimate(image, ratio)
    assert torch.equal(default, image[..., ratio // 2 :: ratio, ratio // 2 :: ratio])
    assert torch.equal(decimate(image, ratio, offset=0), image[..., ::ratio, ::ratio])
    assert default.shape == (1, 1, 4, 4)


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_blur_decimation_is_normalised_and_centred_on_each_footprint(ratio: int) -> None:
    n_low = 12
    ramp = torch.arange(n_low * ratio, dtype=torch.float32).repeat(n_low * ratio, 1)[None, None]
    low = decimate(ramp, ratio, "blur")
    assert low.shape == (1, 1, n_low, n_low)
    # A symmetric, normalised kernel maps a linear ramp to its value at the footprint centre.
    interior = slice(3, n_low - 3)
    centres = torch.arange(n_low, dtype=torch.float32) * ratio + (ratio - 1) / 2
    assert torch.allclose(low[0, 0, interior, interior], centres[interior].expand(n_low - 6, -1), atol=1e-4)
    constant = decimate(torch.full((1, 2, 4 * ratio, 4 * ratio), 0.3), ratio, "blur")
    assert torch.allclose(constant, torch.full_like(constant, 0.3), atol=1e-6)
    assert blur_sigma(2) == pytest.approx(2 * 0.4940, abs=1e-3)


@pytest.mark.parametrize(("ratio", "offset"), [(2, 1), (3, 1), (4, 2), (4, 0)])
def test_blur_sample_is_centred_on_the_plain_decimation_phase(ratio: int, offset: int) -> None:
    ramp = torch.arange(16.0 * ratio).view(1, 1, 1, -1).expand(1, 1, 4 * ratio, -1)
    sampled = blur_sample(ramp, ratio, offset)[0, 0, 0]
    interior = slice(3, 13)  # away from the edge-replicated borders
    expected = torch.arange(16.0)[interior] * ratio + offset
    assert torch.allclose(sampled[interior], expected, atol=1e-4)
    if 2 * offset == ratio - 1:  # the footprint's centre: the same filter as blur decimation
        image = torch.rand(1, 2, 6 * ratio, 4 * ratio, generator=torch.Generator().manual_seed(ratio))
        assert torch.allclose(blur_sample(image, ratio, offset), decimate(image, ratio, "blur"), atol=1e-6)


# ---------------------------------------------------------------------------------------------- networks


def _reference_encoder(weights: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """E of the layer table in float64, written independently of the module."""
    w = {k: v.double() for k, v in weights.items()}
    z = z.double()

    def conv(x: torch.Tensor, name: str) -> torch.Tensor:
        weight = w[f"{name}.weight"]
        pad = weight.shape[-1] // 2
        return F.conv2d(F.pad(x, (pad, pad, pad, pad)), weight, w[f"{name}.bias"])

    x1 = torch.sin(conv(z, "conv1"))
    x3 = conv(torch.cat([z, x1], 1), "conv2")
    return conv(torch.cat([z, x1, x3], 1), "conv3")


def _reference_decoder(weights: dict[str, torch.Tensor], m: torch.Tensor) -> torch.Tensor:
    w = {k: v.double() for k, v in weights.items()}
    m = m.double()
    x1 = torch.sin(torch.einsum("kl,blhw->bkhw", w["conv1.weight"][:, :, 0, 0], m) + w["conv1.bias"][:, None, None])
    return F.conv2d(F.pad(torch.cat([m, x1], 1), (1, 1, 1, 1)), w["conv2.weight"], w["conv2.bias"])


@pytest.mark.parametrize(("rank", "bands_high"), [(6, 1), (15, 4)])
def test_encoder_and_decoder_match_float64_reference(rank: int, bands_high: int) -> None:
    torch.manual_seed(0)
    encoder, decoder = SpectralEncoder(rank, bands_high), SpectralDecoder(rank, bands_high)
    shapes = {name: tuple(p.shape) for name, p in encoder.named_parameters()}
    assert shapes["conv1.weight"] == (bands_high, rank, 11, 11)
    assert shapes["conv2.weight"] == (bands_high, rank + bands_high, 9, 9)
    assert shapes["conv3.weight"] == (bands_high, rank + 2 * bands_high, 7, 7)
    z = torch.randn(2, rank, 17, 13)
    m = torch.rand(2, bands_high, 19, 23)
    with torch.no_grad():
        got_e, got_d = encoder(z), decoder(m)
    want_e = _reference_encoder(dict(encoder.state_dict()), z)
    want_d = _reference_decoder(dict(decoder.state_dict()), m)
    assert got_e.shape == (2, bands_high, 17, 13)
    assert got_d.shape == (2, rank, 19, 23)
    assert (got_e.double() - want_e).abs().max() < 1e-4
    assert (got_d.double() - want_d).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["grouped", "loop"])
def test_stacked_networks_equal_per_scene_modules(mode: str) -> None:
    rank, bands_high, seeds = 5, 2, [3, 4, 5]
    params = init_stacked_parameters(rank, bands_high, seeds)
    z = torch.randn(3, rank, 14, 12)
    with torch.no_grad():
        encoded = stacked_encoder(params, z, mode)
        decoded = stacked_decoder(params, encoded, mode)
    for s in range(3):
        model = MultiplicativeMAUGIF(small_config(rank=rank, bands_low=rank, bands_high=bands_high))
        model.load_state_dict({**model.state_dict(), **{k: v[s] for k, v in params.items()}})
        with torch.no_grad():
            assert torch.allclose(model.encoder(z[s : s + 1])[0], encoded[s], atol=1e-5)
            assert torch.allclose(model.decoder(encoded[s : s + 1])[0], decoded[s], atol=1e-5)


def test_loss_sends_gradients_to_encoder_and_decoder() -> None:
    model = MultiplicativeMAUGIF(small_config(rank=4, bands_low=4, bands_high=1))
    torch.nn.init.normal_(model.encoder.conv3.weight, std=0.1)
    loss = model.compute_loss(torch.randn(1, 4, 12, 12), torch.rand(1, 1, 12, 12)).sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"encoder", "decoder"}
