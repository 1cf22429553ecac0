"""Multiplicative mechanism of MAUGIF: spectral basis × spatial coefficients (SPEC §1.2).

For ``pansharpen`` (A = multispectral, B = panchromatic) and ``hsi_msi`` (A = hyperspectral, B =
multispectral): Φ = leading left singular vectors of A, Z = Φᵀ A, a spectral encoder E (Z → B's bands at low
resolution) and decoder D (B's bands → Z) fitted per scene. Fusion at B's resolution: by default our
``injection`` rule ``X̂ = up(A) + Φ · Gᵀ · [D(B) − up(D(B↓)), B − up(B↓)]`` (the measured spectra for the low
frequencies, high-frequency detail injected with per-scene gains G fitted at reduced scale; :mod:`.injection`),
or SPEC §1.2's
``X̂ = Φ · D(B)`` with ``fusion="decoder"``.
"""

from maugif_core.multiplicative.batch import fit_many
from maugif_core.multiplicative.fitting import FitReport
from maugif_core.multiplicative.injection import detail_features, fit_injection_gains, injection_radius
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
    "detail_features",
    "fit_many",
    "fit_injection_gains",
    "injection_radius",
    "multiplicative_loss",
    "spectral_basis",
]
