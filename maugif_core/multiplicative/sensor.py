"""The multiplicative mechanism's sensor model: sub-pixel registration of H on M and the MTF gain, per scene.

H is a spatial degradation of the latent cube; *which* degradation differs between real pairs (sensor
conventions, how the data were resampled, co-registration error). Under Wald's protocol on Landsat-7, two
registrations a quarter of a low-resolution pixel apart gave opposite verdicts against bicubic upsampling
(issue 15). The model therefore estimates its sensor per scene instead of assuming one:

* **registration** ``(shift_y, shift_x)``: H's pixel ``(i, j)`` is centred on M's continuous pixel coordinate
  ``(r·i + shift_y, r·j + shift_x)`` (M's pixel k covers ``[k − ½, k + ½)``). ``(r − 1)/2`` is the footprint
  centre (corner-aligned grids, what ``F.interpolate(align_corners=False)`` assumes), ``0`` puts H's pixel on
  M's pixel ``r·i``, MATLAB ``imresize(..., 'nearest')`` after an MTF filter samples ``r // 2``.
* **MTF gain** g: the degradation is a separable Gaussian whose gain at H's Nyquist frequency 1/(2r) is g
  (σ = r·√(−2 ln g)/π high-resolution pixels), centred on that registration.

Estimate (:func:`estimate_sensor`), from the data at H's scale: M's intensity proxy (M itself, or the mean of
its bands) is degraded with every candidate ``(shift_y, shift_x, g)`` of a small grid and regressed on H's
spectral coefficients plus a constant; the candidate with the smallest relative residual wins (the degraded
PAN that best matches a linear combination of H's bands, the same regression GSA uses for its intensity).
The separable degradation makes the search cheap: one vertical pass per ``(shift_y, g)``, one horizontal pass
per ``shift_x`` of it, and a projection on a precomputed orthonormal basis. When both rasters carry
georeferencing, :func:`registration_from_transforms` gives the registration instead and only g is searched.

Everything that brings an image of the scene to H's grid or back uses the sensor: :func:`degrade_sensor` and
:func:`upsample_registered` (bicubic, Keys a = −0.75, placing H's pixel i at ``r·i + shift``; equal to
``F.interpolate(mode="bicubic", align_corners=False)`` for the footprint-centre shift).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from maugif_core.errors import RatioError, ShapeError

__all__ = [
    "GAIN_GRID",
    "GAIN_MAX",
    "GAIN_MIN",
    "SensorModel",
    "degrade_sensor",
    "estimate_sensor",
    "registration_from_transforms",
    "sensor_reach",
    "shift_grid",
    "upsample_registered",
]

logger = logging.getLogger(__name__)

GAIN_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
"""MTF gains at H's Nyquist frequency searched by :func:`estimate_sensor`."""
GAIN_MIN, GAIN_MAX = GAIN_GRID[0], GAIN_GRID[-1]
SHIFT_STEP = 0.25
"""Resolution of the registration search, in high-resolution pixels."""
# Low-resolution pixels left out of the regression at each border (edge replication biases the match there).
_BORDER = 2


@dataclass(frozen=True)
class SensorModel:
    """One scene's sensor: registration of H on M and the MTF gain (see the module docstring).

    Attributes:
        shift_y, shift_x: H's pixel ``(i, j)`` is centred on M's pixel coordinate ``(r·i + shift_y, r·j +
            shift_x)``, in high-resolution pixels.
        gain: the Gaussian MTF's gain at H's Nyquist frequency, in (0, 1).
        source: ``"estimated"`` (registration and gain from the scene), ``"georeferencing"`` (registration from
            the rasters' transforms, gain from the scene) or ``"fixed"`` (the footprint centre and gain 0.3).
        residual: relative residual of the winning match (``"fixed"``: NaN); not compared by ``==``.
    """

    shift_y: float
    shift_x: float
    gain: float
    source: Literal["estimated", "georeferencing", "fixed"] = "fixed"
    residual: float = field(default=math.nan, compare=False)

    @staticmethod
    def fixed(ratio: int, gain: float = 0.3) -> SensorModel:
        """The footprint-centre registration with gain 0.3: the sensor assumed before estimation existed."""
        centre = (ratio - 1) / 2
        return SensorModel(centre, centre, gain, "fixed")

    def as_dict(self) -> dict[str, float | str]:
        """Plain values for a manifest's extras or a result's details."""
        return {
            "sensor_shift_y": float(self.shift_y),
            "sensor_shift_x": float(self.shift_x),
            "sensor_gain": float(self.gain),
            "sensor_source": self.source,
            "sensor_residual": float(self.residual),
        }


def gain_sigma(ratio: int, gain: float) -> float:
    """σ (high-resolution pixels) of the Gaussian with gain ``gain`` at frequency 1/(2r)."""
    return ratio * math.sqrt(-2.0 * math.log(gain)) / math.pi


def shift_grid(ratio: int) -> tuple[float, ...]:
    """Registrations searched per axis: −½ … r − ½ high-resolution pixels in steps of :data:`SHIFT_STEP`."""
    count = int(round(ratio / SHIFT_STEP))
    return tuple(-0.5 + SHIFT_STEP * k for k in range(count + 1))


def sensor_reach(ratio: int) -> int:
    """High-resolution pixels, beyond a low-resolution pixel's ``r``-cell, that any sensor of the search reads.

    An upper bound over shifts in ``[−½, r − ½]`` (and registrations up to one pixel outside it) and gains down
    to :data:`GAIN_MIN` — for receptive-field radii that do not depend on the estimate.
    """
    return math.ceil(3 * gain_sigma(ratio, GAIN_MIN)) + 2


def _check_hr(image: Tensor, ratio: int) -> None:
    if image.ndim != 4:
        raise ShapeError(f"image: expected shape (B, C, H, W), got {tuple(image.shape)}")
    if int(ratio) != ratio or ratio < 2:
        raise RatioError(f"ratio: expected an integer >= 2, got {ratio}")
    if image.shape[-2] % ratio or image.shape[-1] % ratio:
        raise RatioError(
            f"image: expected height and width divisible by ratio {ratio}, got {image.shape[-2]}x{image.shape[-1]}"
        )


def _degrade_axis(x: Tensor, ratio: int, shift: float, sigma: float, dim: int) -> Tensor:
    """Gaussian of σ centred on ``r·i + shift`` along ``dim`` (−2 or −1), one sample per i; edge-replicated."""
    whole = math.floor(shift)
    frac = shift - whole
    reach = math.ceil(3 * sigma) + 1
    positions = torch.arange(-reach, reach + 2, dtype=torch.float64) - frac
    taps = torch.exp(-0.5 * (positions / sigma) ** 2) * (positions.abs() <= reach)  # symmetric truncation
    taps = (taps / taps.sum()).to(device=x.device, dtype=torch.float32)
    n = x.shape[dim]
    pad = reach + abs(whole) + ratio
    start = pad + whole - reach  # index in the padded axis of tap 0 for sample 0
    B, C = x.shape[:2]
    if dim == -2:
        flat = F.pad(x.reshape(B * C, 1, n, x.shape[-1]), (0, 0, pad, pad), mode="replicate")
        out = F.conv2d(flat[..., start:, :], taps.view(1, 1, -1, 1), stride=(ratio, 1))[..., : n // ratio, :]
    else:
        flat = F.pad(x.reshape(B * C, 1, x.shape[-2], n), (pad, pad, 0, 0), mode="replicate")
        out = F.conv2d(flat[..., start:], taps.view(1, 1, 1, -1), stride=(1, ratio))[..., : n // ratio]
    return out.reshape(B, C, *out.shape[-2:])


def degrade_sensor(image: Tensor, ratio: int, sensor: SensorModel) -> Tensor:
    """What the sensor records of a high-resolution image: its Gaussian MTF sampled at its registration.

    Args:
        image: ``(B, C, H, W)`` with H and W multiples of ``ratio``.
        ratio: r.
        sensor: registration and gain.

    Returns:
        ``(B, C, H / r, W / r)`` float32. Low-resolution pixel i reads high-resolution pixels within
        ``ceil(3σ) + 1`` of ``r·i + shift`` (edge-replicated beyond the image).
    """
    _check_hr(image, ratio)
    sigma = gain_sigma(ratio, sensor.gain)
    x = _degrade_axis(image.to(torch.float32), ratio, sensor.shift_y, sigma, -2)
    return _degrade_axis(x, ratio, sensor.shift_x, sigma, -1)


def _cubic_weights(t: Tensor, a: float = -0.75) -> Tensor:
    """Keys cubic weights of the 4 taps at offsets −1, 0, 1, 2 from ``floor(u)``, for ``t = u − floor(u)``."""
    x = torch.stack([t + 1, t, 1 - t, 2 - t], dim=-1).abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, far)


def _upsample_axis(x: Tensor, ratio: int, shift: float, dim: int) -> Tensor:
    n = x.shape[dim]
    y = torch.arange(n * ratio, dtype=torch.float64)
    u = (y - shift) / ratio
    base = torch.floor(u)
    weights = _cubic_weights(u - base).to(device=x.device, dtype=x.dtype)  # (N, 4)
    index = (base.long()[:, None] + torch.arange(-1, 3)[None]).clamp_(0, n - 1).to(x.device)  # (N, 4)
    gathered = x.index_select(dim, index.reshape(-1))
    if dim == -2:
        gathered = gathered.reshape(*x.shape[:-2], n * ratio, 4, x.shape[-1])
        return (gathered * weights[:, :, None]).sum(dim=-2)
    gathered = gathered.reshape(*x.shape[:-1], n * ratio, 4)
    return (gathered * weights).sum(dim=-1)


def upsample_registered(image: Tensor, ratio: int, shift: tuple[float, float]) -> Tensor:
    """Bicubic ``(B, C, h, w)`` → ``(B, C, r·h, r·w)`` with H's pixel i at high-resolution ``r·i + shift``.

    Keys a = −0.75 with clamped (edge-replicated) taps, as ``F.interpolate``; for ``shift = (r − 1)/2`` it equals
    ``F.interpolate(mode="bicubic", align_corners=False)`` up to float rounding. Reads low-resolution pixels
    within 2 of ``(y − shift)/r`` for output row y.
    """
    if image.ndim != 4:
        raise ShapeError(f"image: expected shape (B, C, h, w), got {tuple(image.shape)}")
    return _upsample_axis(_upsample_axis(image, ratio, shift[0], -2), ratio, shift[1], -1)


def registration_from_transforms(
    transform_a: Sequence[float], transform_b: Sequence[float], ratio: int
) -> tuple[float, float]:
    """The registration ``(shift_y, shift_x)`` of H on M from the two rasters' affine transforms.

    Transforms are GDAL/rasterio's ``(a, b, c, d, e, f)`` (``x = a·col + b·row + c``, ``y = d·col + e·row +
    f``), north-up (b = d = 0). The centre of H's pixel 0, mapped into M's pixel coordinates, minus nothing:
    ``shift = (world(H, ½) − origin_M) / pixel_M − ½`` per axis.

    Raises:
        RatioError: rotated grids, or pixel sizes whose ratio is not ``ratio``.
    """
    a_a, b_a, c_a, d_a, e_a, f_a = (float(v) for v in tuple(transform_a)[:6])
    a_b, b_b, c_b, d_b, e_b, f_b = (float(v) for v in tuple(transform_b)[:6])
    if b_a or d_a or b_b or d_b:
        raise RatioError("transform_a/transform_b: expected north-up grids (no rotation terms), got rotated ones")
    for name, low, high in (("x", a_a, a_b), ("y", e_a, e_b)):
        if high == 0 or abs(low / high - ratio) > 1e-6 * ratio:
            raise RatioError(
                f"transform_a/transform_b: expected {name} pixel sizes in ratio {ratio}, got {low:g} and {high:g}"
            )
    shift_x = (c_a + 0.5 * a_a - c_b) / a_b - 0.5
    shift_y = (f_a + 0.5 * e_a - f_b) / e_b - 0.5
    return (shift_y, shift_x)


def estimate_sensor(
    image_a: Tensor,
    image_b: Tensor,
    ratio: int,
    *,
    registration: tuple[float, float] | None = None,
    gains: Sequence[float] = GAIN_GRID,
) -> SensorModel:
    """Estimate the scene's sensor by matching degraded M to a linear combination of H's bands.

    Args:
        image_a: H, or its spectral coefficients, ``(L, m, n)`` unit-float.
        image_b: M, ``(l, r·m, r·n)``; its band mean is the intensity proxy.
        ratio: r.
        registration: a known registration (e.g. :func:`registration_from_transforms`); then only the gain
            is searched.
        gains: candidate MTF gains.

    Returns:
        The best :class:`SensorModel` (``source`` ``"estimated"`` or ``"georeferencing"``). A scene too small
        to estimate from (fewer than 3×3 low-resolution pixels inside the border) gets :meth:`SensorModel.fixed`
        (or the given registration with gain 0.3).
    """
    L, m, n = image_a.shape
    proxy = image_b.to(torch.float32).mean(dim=0, keepdim=True)[None]  # (1, 1, H, W)
    _check_hr(proxy, ratio)
    b = _BORDER if min(m, n) > 2 * _BORDER + 2 else 0
    if min(m, n) - 2 * b < 3:
        logger.warning("scene of %dx%d low-resolution pixels is too small to estimate its sensor", m, n)
        if registration is None:
            return SensorModel.fixed(ratio)
        return SensorModel(registration[0], registration[1], 0.3, "georeferencing")
    design = image_a[:, b : m - b, b : n - b].reshape(L, -1).T.to(torch.float64)
    design = torch.cat([design, torch.ones(design.shape[0], 1, dtype=torch.float64)], dim=1)
    q, _ = torch.linalg.qr(design)  # (N, L + 1) orthonormal
    shifts_y = shift_grid(ratio) if registration is None else (registration[0],)
    shifts_x = shift_grid(ratio) if registration is None else (registration[1],)
    best = (math.inf, 0.0, 0.0, 0.3)
    with torch.no_grad():
        for gain in gains:
            sigma = gain_sigma(ratio, gain)
            for sy in shifts_y:
                rows = _degrade_axis(proxy, ratio, sy, sigma, -2)
                cols = torch.cat([_degrade_axis(rows, ratio, sx, sigma, -1) for sx in shifts_x], dim=1)
                y = cols[0, :, b : m - b, b : n - b].reshape(len(shifts_x), -1).T.to(torch.float64)  # (N, S)
                centred = y - y.mean(dim=0, keepdim=True)
                total = (centred * centred).sum(dim=0).clamp_min(1e-30)
                explained = ((q.T @ y) ** 2).sum(dim=0) - (y.sum(dim=0) ** 2) / y.shape[0]
                residual = 1.0 - explained / total
                k = int(torch.argmin(residual))
                if float(residual[k]) < best[0]:
                    best = (float(residual[k]), sy, shifts_x[k], gain)
    source = "estimated" if registration is None else "georeferencing"
    sensor = SensorModel(best[1], best[2], best[3], source, best[0])
    logger.debug("estimated sensor: %s", sensor)
    return sensor
