"""Classical fusion baselines on the same interface as the MAUGIF models (SPEC §1.3).

Additive tasks (:mod:`.additive`): ``average``, ``maxabs``, ``dwt``, ``laplacian`` — two co-registered
images of one size; only the luma is fused, colour follows the model's rules. Pansharpening and HS–MS fusion
(:mod:`.spectral`): ``bicubic``, ``brovey``, ``gihs``, ``gsa``, ``mtf_glp`` — a low-resolution spectral image A and a
high-resolution image B at an integer ratio. Every method returns an image in A's dtype; see the submodules
for shapes, options and conventions.

Example:
    >>> fused = fuse("laplacian", image_a, image_b, task="mff")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maugif_core.baselines._options import OptionError
from maugif_core.baselines.additive import (
    CHROMA_RULES,
    average,
    build_laplacian_pyramid,
    collapse_laplacian_pyramid,
    dwt,
    laplacian,
    maxabs,
)
from maugif_core.baselines.spectral import (
    bicubic,
    brovey,
    downsample_block_mean,
    gihs,
    gsa,
    infer_ratio,
    mtf_glp,
    upsample_bicubic,
)
from maugif_core.errors import UnknownMethodError

__all__ = [
    "ADDITIVE_METHODS",
    "CHROMA_RULES",
    "METHODS",
    "SPECTRAL_METHODS",
    "OptionError",
    "average",
    "bicubic",
    "brovey",
    "build_laplacian_pyramid",
    "collapse_laplacian_pyramid",
    "downsample_block_mean",
    "dwt",
    "fuse",
    "gihs",
    "gsa",
    "infer_ratio",
    "laplacian",
    "maxabs",
    "mtf_glp",
    "upsample_bicubic",
]

ADDITIVE_METHODS = ("average", "maxabs", "dwt", "laplacian")
SPECTRAL_METHODS = ("bicubic", "brovey", "gihs", "gsa", "mtf_glp")
METHODS = ADDITIVE_METHODS + SPECTRAL_METHODS

_REGISTRY: dict[str, Callable[..., np.ndarray]] = {
    "average": average,
    "maxabs": maxabs,
    "dwt": dwt,
    "laplacian": laplacian,
    "bicubic": bicubic,
    "brovey": brovey,
    "gihs": gihs,
    "gsa": gsa,
    "mtf_glp": mtf_glp,
}


def fuse(method: str, image_a: np.ndarray, image_b: np.ndarray, **options) -> np.ndarray:
    """Fuse two images with the baseline ``method``.

    Args:
        method: one of :data:`METHODS`.
        image_a: additive methods: base image ``(H, W[, C])``; spectral methods: low-resolution
            ``(h, w[, L])``.
        image_b: additive methods: ``(H, W[, C])``; spectral methods: high-resolution ``(r·h, r·w[, l])``.
        **options: keyword options of the method's function (``chroma``, ``task``, ``levels``, ``wavelet``,
            ``weights``, ...); an option the method does not take raises ``TypeError``.

    Returns:
        The fused image in image A's dtype.

    Raises:
        UnknownMethodError: ``method`` is not one of :data:`METHODS`.
    """
    try:
        function = _REGISTRY[method]
    except (KeyError, TypeError):
        raise UnknownMethodError(f"method: expected one of {', '.join(METHODS)}, got {method!r}") from None
    return function(image_a, image_b, **options)
