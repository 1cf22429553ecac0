"""Multiplicative mechanism of MAUGIF: spectral basis × spatial coefficients (SPEC §1.2).

For ``pansharpen`` (A = multispectral, B = panchromatic) and ``hsi_msi`` (A = hyperspectral, B =
multispectral): Φ = leading left singular vectors of A, Z = Φᵀ A, a spectral encoder E (Z → B's bands at low
resolution) and decoder D (B's bands → Z) fitted per scene, and fusion ``X̂ = Φ · D(B)`` at B's resolution.
"""

from maugif_core.multiplicative.batch import fit_many
from maugif_core.multiplicative.fitting import FitReport
from maugif_core.multiplicative.model import MultiplicativeMAUGIF, NotFittedError
from maugif_core.multiplicative.networks import (
    MultiplicativeLoss,
    SpectralDecoder,
    SpectralEncoder,
    multiplicative_loss,
)
from maugif_core.multiplicative.spectral import blur_sigma, decimate, default_offset, spectral_basis

__all__ = [
    "FitReport",
    "MultiplicativeLoss",
    "MultiplicativeMAUGIF",
    "NotFittedError",
    "SpectralDecoder",
    "SpectralEncoder",
    "blur_sigma",
    "decimate",
    "default_offset",
    "fit_many",
    "multiplicative_loss",
    "spectral_basis",
]
