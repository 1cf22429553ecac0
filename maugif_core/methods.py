"""Pluggable fusion methods: the :class:`FusionMethod` protocol and the registry of methods by name.

A fusion method fuses two co-registered ``(H, W[, C])`` NumPy arrays (HWC, as everywhere in ``maugif_core``) and
declares two facts the batch pipeline needs: its ``mechanism`` (which tasks it can take) and its ``halo`` (how far,
in output pixels, the value of a fused pixel may depend on the inputs; the pipeline's tiles overlap by at least
this much).

The registry holds:

* ``maugif`` (the default): the MAUGIF model of the pair's task (the bundled pretrained model, or a checkpoint
  the pipeline loads); declared ``mechanism="any"``, the task picks the additive or multiplicative model;
* the classical baselines of :mod:`maugif_core.baselines`: ``average``, ``maxabs``, ``dwt``, ``laplacian``
  (additive) and ``bicubic``, ``brovey``, ``gihs``, ``gsa``, ``mtf_glp`` (multiplicative);
* third-party methods, from the ``maugif.methods`` entry-point group. An entry point names either a class or
  factory that returns a :class:`FusionMethod` when called with no arguments, or an object that already is one::

      # pyproject.toml of a plugin package
      [project.entry-points."maugif.methods"]
      mymethod = "my_package.fusion:MyMethod"

Example:
    >>> from maugif_core.methods import get_method, method_names
    >>> "laplacian" in method_names()
    True
    >>> fused = get_method("laplacian").fuse(image_a, image_b, task="mff")  # doctest: +SKIP

This module imports neither Ray nor rasterio; the baselines' SciPy / PyWavelets load on first use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from maugif_core.errors import MaugifError, UnknownMethodError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHOD",
    "ENTRY_POINT_GROUP",
    "MECHANISMS",
    "BaselineMethod",
    "FusionMethod",
    "MaugifMethod",
    "MethodLoadError",
    "available_methods",
    "get_method",
    "method_names",
    "supports_task",
]

ENTRY_POINT_GROUP = "maugif.methods"
DEFAULT_METHOD = "maugif"
Mechanism = Literal["additive", "multiplicative", "any"]
MECHANISMS = ("additive", "multiplicative", "any")


class MethodLoadError(MaugifError, ImportError):
    """A ``maugif.methods`` entry point that cannot be loaded, or loads to something that is not a method."""


@runtime_checkable
class FusionMethod(Protocol):
    """What every fusion method provides.

    Attributes:
        name: the registry name (``--method NAME``).
        mechanism: ``"additive"`` (A and B share one grid), ``"multiplicative"`` (A low-resolution spectral
            image, B high-resolution image at an integer ratio) or ``"any"`` (the task decides).
        halo: pixels on the output grid that a fused pixel may depend on in each direction (its receptive-field
            radius); tiled fusion cuts tiles with at least this much overlap. 0 for per-pixel methods.
    """

    name: str
    mechanism: Mechanism
    halo: int

    def fuse(self, image_a: np.ndarray, image_b: np.ndarray, *, task: str | None = None) -> np.ndarray:
        """Fuse one pair.

        Args:
            image_a: ``(H, W[, C])`` base image (additive) or ``(h, w[, L])`` low-resolution spectral image.
            image_b: ``(H, W[, C])`` (additive) or ``(r·h, r·w[, l])`` high-resolution image.
            task: the pair's task (``vif``, ``mff``, ``pansharpen``, ...), or None.

        Returns:
            ``(H, W[, C])`` fused image on B's grid, in image A's dtype.
        """
        ...


@dataclass(frozen=True)
class BaselineMethod:
    """A classical baseline of :mod:`maugif_core.baselines` as a :class:`FusionMethod`."""

    name: str
    mechanism: Mechanism
    halo: int

    def fuse(self, image_a: np.ndarray, image_b: np.ndarray, *, task: str | None = None) -> np.ndarray:
        from maugif_core import baselines

        return baselines.fuse(self.name, image_a, image_b, task=task)


class MaugifMethod:
    """MAUGIF as a :class:`FusionMethod`: the bundled pretrained model of an additive task, a fresh per-scene fit
    of a multiplicative one. (The batch pipeline runs MAUGIF through its own batched, checkpoint-aware path; this
    adapter serves plain NumPy callers and the registry's listing.)"""

    name = DEFAULT_METHOD
    mechanism: Mechanism = "any"

    @property
    def halo(self) -> int:
        """The largest receptive-field radius of the additive presets (the fusion decoder's plus the source
        decision's, 39 px for mff / mef). The batch pipeline tiles each MAUGIF model with its own radius."""
        from maugif_core.additive import DECODER_RADIUS
        from maugif_core.config import ADDITIVE_TASKS, preset
        from maugif_core.decision import decision_radius

        return DECODER_RADIUS + max(decision_radius(preset(task)) for task in ADDITIVE_TASKS)

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def fuse(self, image_a: np.ndarray, image_b: np.ndarray, *, task: str | None = None) -> np.ndarray:
        import maugif_core

        if task is None:
            raise UnknownMethodError("method maugif: expected a task (vif, medical, mff, mef, general, ...), got None")
        if task in maugif_core.MULTIPLICATIVE_TASKS:
            return maugif_core.build_model(task).fuse(image_a, image_b, refit=True)
        model = self._models.get(task)
        if model is None:
            model = self._models[task] = maugif_core.pretrained(task).eval()
        return model.fuse(image_a, image_b)


# Halos: pyramid and wavelet methods reach across their coarsest level (Burt-Adelson 5-tap kernel / db2 filters
# over 4 levels: ~2 * 2**4 * 2 pixels); per-pixel rules need none; the spectral methods' bicubic upsampling
# reaches 2 low-resolution pixels (the ratio is per pair, so 8 covers up to r = 4). Global statistics (GSA's
# regression, MTF-GLP's gains) are per tile when a scene is tiled, as documented in docs/METHODS.md.
_BASELINES: tuple[tuple[str, Mechanism, int], ...] = (
    ("average", "additive", 0),
    ("maxabs", "additive", 0),
    ("dwt", "additive", 64),
    ("laplacian", "additive", 64),
    ("bicubic", "multiplicative", 8),
    ("brovey", "multiplicative", 8),
    ("gihs", "multiplicative", 8),
    ("gsa", "multiplicative", 8),
    ("mtf_glp", "multiplicative", 16),
)


def _builtin_factories() -> dict[str, Callable[[], Any]]:
    factories: dict[str, Callable[[], Any]] = {DEFAULT_METHOD: MaugifMethod}
    for name, mechanism, halo in _BASELINES:
        factories[name] = lambda n=name, m=mechanism, h=halo: BaselineMethod(n, m, h)
    return factories


def _entry_points() -> dict[str, Any]:
    """The ``maugif.methods`` entry points of the installed distributions, by name (first one wins)."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry)
    return found


def method_names() -> tuple[str, ...]:
    """Every method name: ``maugif`` first, then the baselines, then third-party entry points (sorted)."""
    builtin = tuple(_builtin_factories())
    plugins = sorted(name for name in _entry_points() if name not in builtin)
    return builtin + tuple(plugins)


def available_methods() -> dict[str, str]:
    """Method name → where it comes from (``builtin`` or the entry point's ``module:attr``)."""
    out = dict.fromkeys(_builtin_factories(), "builtin")
    for name, entry in sorted(_entry_points().items()):
        if name in out:
            logger.warning("entry point %s = %s ignored: %r is a built-in method", name, entry.value, name)
            continue
        out[name] = entry.value
    return out


def _check_method(obj: Any, name: str, origin: str) -> Any:
    missing = [attr for attr in ("mechanism", "halo", "fuse") if not hasattr(obj, attr)]
    if missing:
        raise MethodLoadError(
            f"method {name!r} ({origin}): expected a FusionMethod with mechanism, halo and fuse(), "
            f"missing {', '.join(missing)}"
        )
    if obj.mechanism not in MECHANISMS:
        raise MethodLoadError(
            f"method {name!r} ({origin}): mechanism must be one of {', '.join(MECHANISMS)}, got {obj.mechanism!r}"
        )
    halo = obj.halo
    if isinstance(halo, bool) or not isinstance(halo, (int, np.integer)) or halo < 0:
        raise MethodLoadError(f"method {name!r} ({origin}): halo must be an integer >= 0 pixels, got {halo!r}")
    return obj


def get_method(name: str) -> FusionMethod:
    """A new instance of the method registered as ``name``.

    Raises:
        UnknownMethodError: no built-in method or entry point has that name; the message lists the available ones.
        MethodLoadError: the entry point cannot be imported, or does not give a :class:`FusionMethod`.
    """
    builtin = _builtin_factories()
    if name in builtin:
        return builtin[name]()
    entry = _entry_points().get(name)
    if entry is None:
        raise UnknownMethodError(f"method: expected one of {', '.join(method_names())}, got {name!r}")
    try:
        target = entry.load()
    except Exception as e:
        raise MethodLoadError(f"method {name!r}: entry point {entry.value!r} cannot be loaded: {e}") from e
    obj = target() if isinstance(target, type) or (callable(target) and not hasattr(target, "fuse")) else target
    method = _check_method(obj, name, f"entry point {entry.value}")
    if getattr(method, "name", None) != name:
        # a frozen object keeps its own name; the registry's name is what the pipeline records
        with contextlib.suppress(AttributeError):
            method.name = name
    return method


def supports_task(method: FusionMethod, task: str) -> bool:
    """Whether ``method``'s declared mechanism can take ``task``."""
    from maugif_core.config import ADDITIVE_TASKS, MULTIPLICATIVE_TASKS

    if method.mechanism == "any":
        return task in ADDITIVE_TASKS or task in MULTIPLICATIVE_TASKS
    return task in (ADDITIVE_TASKS if method.mechanism == "additive" else MULTIPLICATIVE_TASKS)
