"""The public API: ``import pipeline`` is light, the documented names import, and the README's example runs as
written (the code block is read from README.md, so the two cannot drift)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import maugif_core

REPO = Path(__file__).resolve().parents[2]


def readme_api_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- api-example:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md: no ```python block after the <!-- api-example --> marker"
    return match.group(1)


def test_import_pipeline_imports_neither_ray_nor_torch():
    code = (
        "import sys, pipeline\n"
        "assert 'ray' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "from pipeline import read_pairs, FusionPredictor, decode_row, write_fused, FusedImageDatasink\n"
        "print(sorted(pipeline.__all__))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "'read_pairs'" in done.stdout and "'write_fused'" in done.stdout


def test_unknown_name_is_an_attribute_error():
    import pipeline

    with pytest.raises(AttributeError, match="has no attribute 'read_pair'"):
        pipeline.read_pair  # noqa: B018


@pytest.mark.timeout(240)
def test_readme_api_example_runs(ray_session, tmp_path, monkeypatch, capsys):
    """Run from a folder laid out like the repository root (``samples/``), the example fuses the four bundled
    multi-focus pairs into ``outputs/api-example`` exactly as ``maugif_core`` fuses them."""
    (tmp_path / "samples").symlink_to(REPO / "samples")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_api_example(), "README.md:api-example", "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.strip() == "4 pairs fused"
    out = tmp_path / "outputs" / "api-example"
    fused = sorted(p.name for p in out.glob("*.png"))
    assert fused == ["mfiwhu_1.png", "mfiwhu_3.png", "mfiwhu_5.png", "mfiwhu_7.png"]
    model = maugif_core.pretrained("mff")
    a = np.asarray(Image.open(REPO / "samples/mff/source1/mfiwhu_3.png"))
    b = np.asarray(Image.open(REPO / "samples/mff/source2/mfiwhu_3.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "mfiwhu_3.png")), model.fuse(a, b))
    assert (out / "_manifest").is_dir()
