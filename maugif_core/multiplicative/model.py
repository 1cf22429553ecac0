"""The multiplicative MAUGIF model: a per-scene fitted spectral basis, encoder and decoder (SPEC §1.2).

A fitted model belongs to one scene: Φ is that scene's spectral basis and E, D were fitted on it (and, for the
``injection`` rule, the injection gains G, and the scene's sensor: registration of H on M and MTF gain,
:mod:`maugif_core.multiplicative.sensor`). ``fuse`` fits on the scene it is given unless the model is already
fitted on that very scene (a fingerprint of the data, :func:`scene_fingerprint`): one scene's fit is never
applied to another scene through ``fuse``.

Fusion rules (``config.fusion``):

* ``injection`` (default, ours): ``X̂ = up(H) + Φ · Gᵀ · [D(M) − up(D(M↓)), M − up(M↓)]`` — the low
  frequencies come from the measured H, only high-frequency detail is injected, with per-scene gains G fitted
  at reduced scale (:mod:`maugif_core.multiplicative.injection` says why and how). A local map of H and M with
  receptive-field radius :func:`~maugif_core.multiplicative.injection.injection_radius`.
* ``decoder``: SPEC §1.2's ``X̂ = Φ · D(M)``, a map of M alone with receptive-field radius 1.

Either way, tiles cut on the low-resolution grid with a halo of :attr:`MultiplicativeMAUGIF.receptive_field_radius`
(rounded up to a multiple of r) and cropped equal the whole image.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from maugif_core.config import MultiplicativeConfig
from maugif_core.errors import BandCountError, NotFittedError, RatioError, ShapeError
from maugif_core.imaging import check_image, from_unit_float
from maugif_core.multiplicative.fitting import FitReport, fit_stacked
from maugif_core.multiplicative.injection import (
    consistency_radius,
    fit_injection_gains,
    inject_detail,
    injection_radius,
)
from maugif_core.multiplicative.networks import (
    DECODER_RECEPTIVE_FIELD_RADIUS,
    SpectralDecoder,
    SpectralEncoder,
    init_stacked_parameters,
    multiplicative_loss,
)
from maugif_core.multiplicative.scene import check_geometry, fuse_in_strips, ratio_of, scene_fingerprint, to_chw
from maugif_core.multiplicative.sensor import SensorModel, estimate_sensor
from maugif_core.multiplicative.spectral import decimate, spectral_basis

__all__ = ["MultiplicativeMAUGIF", "NotFittedError", "scene_fingerprint", "to_chw"]

logger = logging.getLogger(__name__)

_SENSOR_SOURCES = ("fixed", "estimated", "georeferencing")
_FINGERPRINT_BYTES = 32


class MultiplicativeMAUGIF(nn.Module):
    """Multiplicative-mechanism MAUGIF: per-scene spectral basis Φ ``(L, K)``, encoder E and decoder D.

    Before fitting (and unless ``config.bands_low``/``bands_high`` are set) the model has no layers; ``fit``
    builds them for the scene's band counts. The whole fitted state lives in ``state_dict()`` — ``basis``,
    ``fitted`` and the E/D weights — and :meth:`fitted_config` returns a config from which the same parameter
    shapes are rebuilt, so a checkpoint round-trips:
    ``MultiplicativeMAUGIF(m.fitted_config()).load_state_dict(m.state_dict())``.

    Args:
        config: model configuration; defaults to the ``pansharpen`` preset values.
    """

    basis: Tensor
    fitted: Tensor
    gains: Tensor
    sensor: Tensor
    fingerprint: Tensor

    def __init__(self, config: MultiplicativeConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MultiplicativeConfig()
        self.fit_report: FitReport | None = None
        self._ratio: int | None = self.config.ratio
        self.register_module("encoder", None)
        self.register_module("decoder", None)
        self.register_buffer("basis", torch.zeros(0, 0))
        self.register_buffer("gains", torch.zeros(0))
        self.register_buffer("fitted", torch.tensor(False))
        # The scene's sensor [shift_y, shift_x, gain, source code, residual] (see sensor_model) and the
        # fingerprint of the scene the model was fitted on (all zeros: unknown); scene-level state, so both
        # live in the state_dict and tiles fused elsewhere use the same sensor.
        self.register_buffer("sensor", torch.tensor([0.0, 0.0, 0.3, 0.0, float("nan")], dtype=torch.float64))
        self.register_buffer("fingerprint", torch.zeros(_FINGERPRINT_BYTES, dtype=torch.uint8))
        if self.config.bands_low is not None and self.config.bands_high is not None:
            self._build(self.config.bands_low, self.config.bands_high)

    # ------------------------------------------------------------------ structure

    def _build(self, bands_low: int, bands_high: int) -> None:
        """(Re)create E, D and Φ for L = ``bands_low``, l = ``bands_high``, on the model's device."""
        device = self.basis.device
        K = min(self.config.rank, bands_low)
        self.encoder = SpectralEncoder(K, bands_high).to(device)
        self.decoder = SpectralDecoder(K, bands_high).to(device)
        self.basis = torch.zeros(bands_low, K, device=device)
        self.gains = torch.zeros(self._injection_features(K, bands_high), K, device=device)
        self.fitted = torch.tensor(False, device=device)

    @property
    def receptive_field_radius(self) -> int:
        """Receptive-field radius of fusion, in high-resolution pixels (an upper bound).

        ``decoder`` rule: D's, 1 (a 1x1 then a 3x3 convolution). ``injection`` rule:
        :func:`~maugif_core.multiplicative.injection.injection_radius` of the scene's ratio plus
        ``consistency_steps`` × :func:`~maugif_core.multiplicative.injection.consistency_radius`; the ratio must be
        known (fitted, loaded, or ``config.ratio``).

        Raises:
            NotFittedError: ``injection`` rule and no ratio known yet.
        """
        if self.config.fusion == "decoder":
            return DECODER_RECEPTIVE_FIELD_RADIUS
        if self._ratio is None:
            raise NotFittedError(
                "MultiplicativeMAUGIF.receptive_field_radius: the injection rule's radius depends on the ratio; "
                "expected a fitted model or config.ratio, got neither"
            )
        return self._radius_for(self._ratio)

    def _radius_for(self, ratio: int) -> int:
        """Receptive-field radius of fusion at ratio r, in high-resolution pixels."""
        if self.config.fusion == "decoder":
            return DECODER_RECEPTIVE_FIELD_RADIUS
        chroma = self.config.chroma_window * ratio
        return injection_radius(ratio) + chroma + self.config.consistency_steps * consistency_radius(ratio)

    def _injection_features(self, rank: int, bands_high: int) -> int:
        """F, the number of detail channels the injection gains weight (K, or K + l with M's own detail)."""
        return rank + (bands_high if self.config.injection_sources == "decoder+image" else 0)

    @property
    def is_fitted(self) -> bool:
        """Whether Φ, E and D hold a fitted scene (also true after loading a fitted state_dict)."""
        return bool(self.fitted.item())

    @property
    def bands_low(self) -> int | None:
        """L of the fitted (or configured) layers; None before."""
        return None if self.basis.numel() == 0 else int(self.basis.shape[0])

    @property
    def bands_high(self) -> int | None:
        """l of the fitted (or configured) layers; None before."""
        return None if self.decoder is None else int(self.decoder.conv1.in_channels)

    @property
    def rank(self) -> int | None:
        """K, the number of basis vectors in use (``config.rank`` capped at L); None before fitting."""
        return None if self.basis.numel() == 0 else int(self.basis.shape[1])

    @property
    def ratio(self) -> int | None:
        """r of the fitted scene (or of the config); None when not known yet."""
        return self._ratio

    @property
    def sensor_model(self) -> SensorModel:
        """The scene's sensor: registration of H on M and MTF gain (estimated at fit time, or fixed)."""
        shift_y, shift_x, gain, source, residual = (float(v) for v in self.sensor.tolist())
        return SensorModel(shift_y, shift_x, gain, _SENSOR_SOURCES[int(source)], residual)  # type: ignore[arg-type]

    @property
    def details(self) -> dict[str, float | str]:
        """What was estimated for the fitted scene, as plain values (for a manifest's extras)."""
        self._require_fitted()
        return self.sensor_model.as_dict()

    def set_sensor(self, sensor: SensorModel) -> None:
        """Install a scene's sensor (what :meth:`prepare_scene` estimates)."""
        values = [sensor.shift_y, sensor.shift_x, sensor.gain, _SENSOR_SOURCES.index(sensor.source), sensor.residual]
        with torch.no_grad():
            self.sensor.copy_(torch.tensor(values, dtype=torch.float64))

    def remember_scene(self, image_a: np.ndarray, image_b: np.ndarray) -> None:
        """Record the fingerprint of the scene just fitted (``fuse`` refits any other scene)."""
        with torch.no_grad():
            digest = torch.frombuffer(bytearray(scene_fingerprint(image_a, image_b)), dtype=torch.uint8)
            self.fingerprint.copy_(digest)

    def fitted_config(self) -> MultiplicativeConfig:
        """This model's config with ``bands_low``, ``bands_high``, ``rank`` (effective K) and ``ratio`` set.

        Raises:
            NotFittedError: the model has not been fitted.
        """
        self._require_fitted()
        fields = self.config.model_dump()
        fields.update(bands_low=self.bands_low, bands_high=self.bands_high, rank=self.rank, ratio=self._ratio)
        return MultiplicativeConfig(**fields)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                "MultiplicativeMAUGIF: expected a fitted model (call fit(image_a, image_b) first, or load "
                "a fitted state_dict), got an unfitted one"
            )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # An unfitted, unconfigured model has no layers yet: build them from the checkpoint's shapes so that
        # load_state_dict also works on MultiplicativeMAUGIF(config) without bands in the config.
        basis = state_dict.get(prefix + "basis")
        weight = state_dict.get(prefix + "decoder.conv1.weight")
        if self.decoder is None and basis is not None and weight is not None and basis.ndim == 2:
            self._build(int(basis.shape[0]), int(weight.shape[1]))
        # Checkpoints written before the sensor was estimated: the fixed sensor, and an unknown scene.
        if prefix + "sensor" not in state_dict and basis is not None:
            ratio = self._ratio or self.config.ratio or 2
            fixed = SensorModel.fixed(ratio)
            values = [fixed.shift_y, fixed.shift_x, fixed.gain, 0.0, float("nan")]
            state_dict[prefix + "sensor"] = torch.tensor(values, dtype=torch.float64)
        if prefix + "fingerprint" not in state_dict and basis is not None:
            state_dict[prefix + "fingerprint"] = torch.zeros(_FINGERPRINT_BYTES, dtype=torch.uint8)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ validation

    def check_scene(self, image_a: np.ndarray, image_b: np.ndarray) -> tuple[int, int, int]:
        """Validate a NumPy scene against the config; return its band counts and ratio ``(L, l, r)``.

        Raises:
            BandCountError, RatioError, ShapeError, DTypeError, NonFiniteError: see :meth:`fit`.
        """
        check_image(image_a, "image_a", allow_bands=True)
        check_image(image_b, "image_b", allow_bands=True)
        L = image_a.shape[2] if image_a.ndim == 3 else 1
        l = image_b.shape[2] if image_b.ndim == 3 else 1
        return (L, l, self._check_geometry(L, l, image_a.shape[:2], image_b.shape[:2]))

    def _check_geometry(self, L: int, l: int, low_hw: tuple[int, int], high_hw: tuple[int, int]) -> int:
        return check_geometry(self.config, L, l, low_hw, high_hw)

    def _check_fitted(self, L: int | None, l: int, r: int | None) -> None:
        """Refuse a scene whose band counts or ratio differ from the fitted ones."""
        if L is not None and self.bands_low != L:
            raise BandCountError(f"image_a: the fitted model expects {self.bands_low} bands, got {L}")
        if self.bands_high != l:
            raise BandCountError(f"image_b: the fitted model expects {self.bands_high} bands, got {l}")
        if r is not None and self._ratio is not None and r != self._ratio:
            raise RatioError(f"image_b/image_a: the fitted model is for ratio {self._ratio}, got ratio {r}")

    # ------------------------------------------------------------------ fitting

    def prepare_scene(
        self, image_a: Tensor, image_b: Tensor, ratio: int, *, registration: tuple[float, float] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Φ, Z and M↓ of one scene; also sets the scene's sensor (:attr:`sensor_model`).

        Sensor: ``config.sensor == "estimate"`` estimates it from Z and M
        (:func:`~maugif_core.multiplicative.sensor.estimate_sensor`; with ``registration``, only its MTF gain);
        ``"fixed"`` takes the footprint centre and gain 0.3 (or ``registration`` with gain 0.3). The ``plain``
        decimation of the loss samples M at the sensor's registration rounded to a pixel
        (``config.decimation_offset`` overrides it).

        Args:
            image_a: H, ``(L, m, n)`` unit-float.
            image_b: M, ``(l, r·m, r·n)`` unit-float.
            ratio: r.
            registration: H's pixel ``(i, j)`` centred on M's ``(r·i + dy, r·j + dx)``, e.g. from the rasters'
                georeferencing (:func:`~maugif_core.multiplicative.sensor.registration_from_transforms`).

        Returns:
            ``basis (L, K)``, ``coeffs (K, m, n)`` and ``target_low (l, m, n)``, float32.
        """
        basis = spectral_basis(image_a, self.config.rank)
        coeffs = torch.einsum("lk,lhw->khw", basis, image_a.to(torch.float32))
        if self.config.sensor == "estimate":
            sensor = estimate_sensor(coeffs, image_b, ratio, registration=registration)
        elif registration is not None:
            sensor = SensorModel(registration[0], registration[1], 0.3, "georeferencing")
        else:
            sensor = SensorModel.fixed(ratio)
        self.set_sensor(sensor)
        high = image_b[None].to(torch.float32)
        if self.config.decimation == "blur":
            target = decimate(high, ratio, "blur")
        elif self.config.decimation_offset is not None:
            target = decimate(high, ratio, "plain", self.config.decimation_offset)
        else:
            oy, ox = (min(ratio - 1, max(0, round(s))) for s in (sensor.shift_y, sensor.shift_x))
            target = high[..., oy::ratio, ox::ratio]
        return basis, coeffs, target[0]

    def compute_loss(self, coeffs: Tensor, target_low: Tensor) -> Tensor:
        """The fitting loss of this model's E and D on one or more scenes.

        Args:
            coeffs: Z, ``(B, K, m, n)``.
            target_low: M↓, ``(B, l, m, n)``.

        Returns:
            ``(B,)`` losses ``w·‖D(E(Z)) − Z‖ + ‖E(Z) − M↓‖``, differentiable w.r.t. E and D.
        """
        if self.encoder is None or self.decoder is None:
            raise NotFittedError("MultiplicativeMAUGIF.compute_loss: the model has no layers yet (fit it first)")
        encoded = self.encoder(coeffs)
        return multiplicative_loss(coeffs, encoded, self.decoder(encoded), target_low, self.config.loss_w_recon)

    def install_fit(self, basis: Tensor, weights: dict[str, Tensor], ratio: int, bands_high: int) -> None:
        """Make this model the fit of a scene: Φ ``(L, K)``, E/D ``weights`` by parameter name, r and l."""
        if self.bands_low != basis.shape[0] or self.bands_high != bands_high or self.rank != basis.shape[1]:
            self._build(basis.shape[0], bands_high)
        device = self.basis.device
        with torch.no_grad():
            self.basis.copy_(basis.to(device))
            for name, value in self.named_parameters():
                value.copy_(weights[name].to(device))
            self.fitted.fill_(True)
        self._ratio = ratio

    def calibrate_injection(self, coeffs: Tensor, image_b: Tensor) -> None:
        """Fit the scene's injection gains G (the ``gains`` buffer, ``(F, K)``) on the fitted decoder.

        Least squares at reduced scale (see :func:`~maugif_core.multiplicative.injection.fit_injection_gains`),
        the simulated degradation being the scene's sensor (:attr:`sensor_model`). Called by :meth:`fit` and
        :func:`~maugif_core.multiplicative.fit_many`; cheap (D at low resolution and an F×F solve).

        Args:
            coeffs: the scene's Z, ``(K, m, n)``.
            image_b: the scene's M, ``(l, r·m, r·n)`` unit-float.
        """
        self._require_fitted()
        assert self.decoder is not None and self._ratio is not None  # guaranteed by _require_fitted
        device = self.basis.device
        gains = fit_injection_gains(
            self.decoder,
            coeffs.to(device, torch.float32),
            image_b.to(device, torch.float32),
            self._ratio,
            self.config.injection_sources == "decoder+image",
            self.config.injection_ridge,
            self.sensor_model,
        )
        with torch.no_grad():
            self.gains.copy_(gains)

    def fit(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        warm_start: bool = False,
        registration: tuple[float, float] | None = None,
    ) -> FitReport:
        """Fit Φ, E and D to one scene (always anew: a previous fit is replaced), then the injection gains G.

        Runs on the model's device (move it with ``.to(device)`` first). Deterministic on CPU for a given
        ``config.seed``.

        Args:
            image_a: H, ``(h, w, L)`` with L ≥ 2, uint8 / uint16 / float in [0, 1].
            image_b: M, ``(r·h, r·w)`` or ``(r·h, r·w, l)``, same dtype rules; r an integer ≥ 2.
            warm_start: start E and D from the current weights when their shapes fit this scene (instead of
                the seeded initialisation) — cheaper for similar scenes; Φ is always recomputed.
            registration: the registration of H on M when known (e.g. from georeferencing,
                :func:`~maugif_core.multiplicative.sensor.registration_from_transforms`); else estimated (see
                :meth:`prepare_scene`).

        Returns:
            The :class:`FitReport` (also kept as ``self.fit_report``).

        Raises:
            BandCountError: L < 2, or band counts that differ from ``config.bands_low``/``bands_high``.
            RatioError: sizes not related by one integer r ≥ 2 (or not ``config.ratio``).
            ShapeError, DTypeError, NonFiniteError: from :func:`check_image`.
        """
        L, l, r = self.check_scene(image_a, image_b)
        device = self.basis.device
        image_b_t = to_chw(image_b).to(device)
        basis, coeffs, target = self.prepare_scene(to_chw(image_a).to(device), image_b_t, r, registration=registration)
        K = basis.shape[1]
        if warm_start and self.encoder is not None and (self.bands_high, self.rank) == (l, K):
            init = {name: p.detach()[None].clone() for name, p in self.named_parameters()}
        else:
            init = init_stacked_parameters(K, l, [self.config.seed], device)
        weights, reports = fit_stacked(init, coeffs[None], target[None], self.config)
        self.install_fit(basis, weights[0], r, l)
        self.calibrate_injection(coeffs, image_b_t)
        self.remember_scene(image_a, image_b)
        self.fit_report = reports[0]
        logger.debug("fitted scene: %s", self.fit_report)
        return self.fit_report

    # ------------------------------------------------------------------ fusion

    def forward(self, image_b: Tensor, image_a: Tensor | None = None) -> Tensor:
        """``fuse_tensor(image_a, image_b)``: ``(B, l, H, W)`` (and ``(B, L, h, w)``) → ``(B, L, H, W)``."""
        return self.fuse_tensor(image_a, image_b)

    def fuse_tensor(self, image_a: Tensor | None, image_b: Tensor) -> Tensor:
        """Fuse unit-float tensors with the fitted state (never fits: a tile must not get its own basis).

        Args:
            image_a: H or a tile of it, ``(B, L, h, w)``, unit-float. Required by the ``injection`` rule (the
                tile of H whose r×r footprints are exactly ``image_b``'s tile: cut both on the low-resolution
                grid); only checked (band count, integer ratio) by the ``decoder`` rule, which accepts None.
            image_b: M or a tile of it, ``(B, l, H, W)``, unit-float, on the model's device.

        Returns:
            ``(B, L, H, W)`` float32 in [0, 1]. Each output pixel depends on the inputs within
            :attr:`receptive_field_radius` high-resolution pixels of it, so tiles cut on the low-resolution grid
            with that halo (rounded up to a multiple of r) and cropped equal the whole image.

        Raises:
            NotFittedError: the model is not fitted.
            ShapeError: ``image_a`` is None under the ``injection`` rule, or a tensor is not 4-D.
            BandCountError: band counts differ from the fitted ones.
            RatioError: ``image_b`` is not an integer multiple ≥ 2 of ``image_a``, or not the fitted ratio.
        """
        self._require_fitted()
        if image_b.ndim != 4:
            raise ShapeError(f"image_b: expected shape (B, l, H, W), got {tuple(image_b.shape)}")
        injection = self.config.fusion == "injection"
        if image_a is None and injection:
            raise ShapeError(
                "image_a: the 'injection' fusion rule needs the low-resolution image H (or the tile of it under "
                "image_b's tile), got None; pass it, or use fusion='decoder'"
            )
        if image_a is not None:
            if image_a.ndim != 4:
                raise ShapeError(f"image_a: expected shape (B, L, h, w), got {tuple(image_a.shape)}")
            r = ratio_of(tuple(image_a.shape[-2:]), tuple(image_b.shape[-2:]), "image_a", "image_b")
            self._check_fitted(int(image_a.shape[1]), int(image_b.shape[1]), r)
            if image_a.shape[0] != image_b.shape[0]:
                raise ShapeError(
                    f"image_a/image_b: expected the same batch size, got {image_a.shape[0]} and {image_b.shape[0]}"
                )
        else:
            self._check_fitted(None, int(image_b.shape[1]), None)
        assert self.decoder is not None  # guaranteed by _require_fitted
        dtype = self.basis.dtype
        if not injection:
            coeffs = self.decoder(image_b.to(dtype))
            return torch.einsum("lk,bkhw->blhw", self.basis, coeffs).clamp_(0.0, 1.0)
        assert image_a is not None
        return inject_detail(
            self.basis, self.gains, self.decoder, image_a.to(dtype), image_b.to(dtype), self.sensor_model, self.config
        )

    def fuse(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        refit: bool = False,
        registration: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Fuse one scene given as NumPy arrays, fitting first when needed.

        A fitted model belongs to one scene, so ``fuse`` fits when the model is not fitted, when ``refit`` is
        True, or when the scene is not the one the model was fitted on (its :func:`scene_fingerprint` differs;
        logged at INFO) — one scene's fit is never applied to another. A fitted state loaded from an older
        checkpoint without a fingerprint is reused (logged as a warning). Runs in strips of rows cut on the
        low-resolution grid with the receptive-field halo (memory bound, same result).

        Args:
            image_a: H, ``(h, w, L)``, L ≥ 2, uint8 / uint16 / float32 / float64 (floats in [0, 1]).
            image_b: M, ``(r·h, r·w)`` or ``(r·h, r·w, l)``.
            refit: fit on this scene even if already fitted on it.
            registration: passed to :meth:`fit` when fitting (georeferencing), see there.

        Returns:
            ``(r·h, r·w, L)``: A's bands on B's grid, clamped to [0, 1], in ``image_a``'s dtype.

        Raises:
            BandCountError: L < 2, or band counts that differ from the fitted model's (without ``refit``).
            RatioError: not an integer ratio ≥ 2, or (without ``refit``) not the fitted model's ratio.
            RatioError, ShapeError, DTypeError, NonFiniteError: see :meth:`fit`.
        """
        L, l, r = self.check_scene(image_a, image_b)
        if not refit and self.is_fitted:
            stored = bytes(self.fingerprint.cpu().numpy().tobytes())
            if not any(stored):
                logger.warning("fuse: the fitted state carries no scene fingerprint (older checkpoint); reusing it")
            elif stored != scene_fingerprint(image_a, image_b):
                logger.info("fuse: this scene is not the one the model was fitted on; fitting it")
                refit = True
        if refit or not self.is_fitted:
            self.fit(image_a, image_b, registration=registration)
        else:
            self._check_fitted(L, l, r)
        device = self.basis.device
        image_a_t = to_chw(image_a).to(device)[None]
        image_b_t = to_chw(image_b).to(device)[None]
        fused = fuse_in_strips(self.fuse_tensor, image_a_t, image_b_t, r, self._radius_for(r))
        fused_np = fused[0].permute(1, 2, 0).cpu().numpy()
        return from_unit_float(fused_np, image_a.dtype)
