"""Layering rules of HOUSE_STYLE.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_core_imports_neither_ray_nor_rasterio():
    loaded = _modules_after(
        "import maugif_core; maugif_core.build_model('vif'); maugif_core.metrics; maugif_core.baselines"
    )
    assert "maugif_core.metrics" in loaded and "maugif_core.baselines" in loaded
    for forbidden in ("ray", "rasterio", "fsspec", "s3fs"):
        assert forbidden not in loaded, f"maugif_core imported {forbidden}"
