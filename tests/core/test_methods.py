"""The fusion-method registry: built-in methods, the protocol, third-party methods through entry points."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from maugif_core import baselines
from maugif_core.errors import UnknownMethodError
from maugif_core.methods import (
    DEFAULT_METHOD,
    FusionMethod,
    MethodLoadError,
    available_methods,
    get_method,
    method_names,
    supports_task,
)


def _install(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


def _pair(shape=(24, 20, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)


def test_builtin_methods_are_registered_in_order():
    names = method_names()
    assert names[0] == DEFAULT_METHOD == "maugif"
    assert set(baselines.METHODS) <= set(names)
    for name in names[: 1 + len(baselines.METHODS)]:
        method = get_method(name)
        assert isinstance(method, FusionMethod)
        assert method.mechanism in ("additive", "multiplicative", "any") and method.halo >= 0


def test_baseline_method_equals_the_baseline_function():
    a, b = _pair()
    np.testing.assert_array_equal(get_method("laplacian").fuse(a, b, task="mff"), baselines.laplacian(a, b, task="mff"))


def test_mechanisms_pick_tasks():
    assert supports_task(get_method("laplacian"), "vif") and not supports_task(get_method("laplacian"), "pansharpen")
    assert supports_task(get_method("gsa"), "hsi_msi") and not supports_task(get_method("gsa"), "mff")
    assert supports_task(get_method("maugif"), "mff") and supports_task(get_method("maugif"), "pansharpen")


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(UnknownMethodError) as info:
        get_method("laplace")
    message = str(info.value)
    assert "'laplace'" in message and "maugif" in message and "laplacian" in message and "mtf_glp" in message


def test_entry_point_plugin_is_found_and_loaded(monkeypatch, method_plugin):
    assert "brighter" not in method_names()
    _install(monkeypatch, method_plugin)
    assert method_names()[-1] == "brighter"
    assert available_methods()["brighter"] == "maugif_brighter:BrighterMethod"
    method = get_method("brighter")
    a, b = _pair(seed=1)
    np.testing.assert_array_equal(method.fuse(a, b), np.maximum(a, b))
    assert method.mechanism == "additive" and method.halo == 0


def test_a_broken_plugin_fails_with_its_name_and_reason(monkeypatch, tmp_path):
    info = tmp_path / "bad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[maugif.methods]\nmissing = no_such_module:Method\nnohalo = maugif_nohalo:Method\n"
    )
    (tmp_path / "maugif_nohalo.py").write_text(
        "class Method:\n    mechanism = 'additive'\n    halo = -1\n    def fuse(self, a, b, *, task=None):\n"
        "        return a\n"
    )
    _install(monkeypatch, tmp_path)
    with pytest.raises(MethodLoadError, match=r"'missing'.*no_such_module:Method.*cannot be loaded"):
        get_method("missing")
    with pytest.raises(MethodLoadError, match=r"'nohalo'.*halo must be an integer >= 0 pixels, got -1"):
        get_method("nohalo")
