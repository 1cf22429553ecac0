"""``jobs/batch_fuse.py --method NAME``: a classical baseline and a third-party plugin (``maugif.methods`` entry
point) fuse through the same batch job (outputs, manifest, summary, resume); an unknown method exits 2 before Ray.

The job runs as a user runs it, in a subprocess, attached to the session's Ray instance (``--address``) so no
cluster is started per test; the plugin folder is on the job's PYTHONPATH, which Ray passes on to its workers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from factories import BATCH_FUSE_WRAPPER
from PIL import Image

from maugif_core import baselines
from pipeline.io.manifest import latest_status

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "mff"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def pair_folder(tmp_path: Path) -> Path:
    """The bundled MFI-WHU pairs in the vi/ + ir/ folder layout."""
    root = tmp_path / "pairs"
    for side, source in (("vi", "source1"), ("ir", "source2")):
        (root / side).mkdir(parents=True)
        for path in sorted((SAMPLES / source).glob("*.png")):
            shutil.copy(path, root / side / path.name)
    return root


def _run_job(*args: str, pythonpath: list[Path] = (), attach: bool = True) -> subprocess.CompletedProcess:
    """Run the job; ``attach``: on the session's Ray instance (needs ``ray_session``), else on a local instance
    of its own, whose workers inherit the job's PYTHONPATH (as on nodes where the plugin is installed)."""
    import ray

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *map(str, pythonpath)])}
    address = ["--address", ray.get_runtime_context().gcs_address] if attach else []
    return subprocess.run(
        [sys.executable, "jobs/batch_fuse.py", *args, *address, "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _manifest(output: Path) -> dict[str, str]:
    table = latest_status(str(output))
    return dict(zip(table.column("pair_id").to_pylist(), table.column("status").to_pylist(), strict=True))


def test_laplacian_fuses_a_folder_through_the_batch_job_and_resumes(ray_session, pair_folder, tmp_path, capsys):
    output = tmp_path / "fused"
    args = ("--input", str(pair_folder), "--output", str(output), "--method", "laplacian")
    first = _run_job(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    stems = sorted(p.stem for p in (pair_folder / "vi").glob("*.png"))
    for stem in stems:
        expected = baselines.laplacian(
            _read(pair_folder / "vi" / f"{stem}.png"), _read(pair_folder / "ir" / f"{stem}.png"), task="vif"
        )
        np.testing.assert_array_equal(_read(output / f"{stem}.png"), expected)
    assert _manifest(output) == dict.fromkeys(stems, "ok")
    summary = json.loads((output / "_summary.json").read_text())
    assert summary["method"] == "laplacian" and summary["pairs_ok"] == len(stems)
    assert "method: laplacian" in first.stdout

    second = _run_job(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"0 ok, 0 failed, {len(stems)} already done" in second.stdout

    # The same output under another method would skip every pair as done: refused before Ray starts.
    from pipeline.cli.fuse import main

    assert main(["--input", str(pair_folder), "--output", str(output), "--quiet"], label="batch_fuse") == 2
    err = capsys.readouterr().err
    assert f"batch_fuse: error: output '{output}' holds results of method 'laplacian'" in err
    assert "expected a new output location for 'maugif'" in err


def test_a_plugin_method_runs_through_the_batch_job(pair_folder, tmp_path, method_plugin):
    """Installed where the job and its workers run (PYTHONPATH of a local Ray instance), the plugin fuses every
    pair through the batch job."""
    output = tmp_path / "fused"
    args = ("--input", str(pair_folder), "--output", str(output), "--method", "brighter")
    done = _run_job(*args, pythonpath=[method_plugin], attach=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in sorted((pair_folder / "vi").glob("*.png")):
        a, b = _read(path), _read(pair_folder / "ir" / path.name)
        np.testing.assert_array_equal(_read(output / path.name), np.maximum(a, b))
    assert json.loads((output / "_summary.json").read_text())["method"] == "brighter"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "laplace"], "method: unknown method 'laplace': expected one of maugif, average, maxabs, dwt, "
                                  "laplacian, bicubic, brovey, gihs, gsa, mtf_glp"),
        (["--method", "gsa", "--task", "vif"], "method: 'gsa' is a multiplicative method; it cannot fuse task 'vif'"),
    ],
)  # fmt: skip
def test_a_wrong_method_exits_2_before_ray(tmp_path, args, expected):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", BATCH_FUSE_WRAPPER, "--input", str(SAMPLES), "--output", str(tmp_path / "o"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "RAY_IMPORTED=False" in done.stderr


@pytest.mark.slow
def test_a_plugin_missing_on_the_workers_fails_its_pairs_with_the_reason(
    ray_session, pair_folder, tmp_path, method_plugin
):
    """Installed on the driver only (the session's workers lack it): every pair fails with the reason, the job
    finishes and exits 1 (never an actor crash loop)."""
    output = tmp_path / "fused"
    missing = _run_job(
        "--input", str(pair_folder), "--output", str(output), "--method", "brighter", pythonpath=[method_plugin]
    )  # fmt: skip
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "method 'brighter' cannot be loaded on this worker" in missing.stdout
