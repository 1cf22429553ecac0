"""Fixtures of the operations tests: cluster definition, launcher, dashboard, autoscaling, faults.

Tests that need a cluster of another shape than the session's (``ray start --head`` with a dashboard, fake
multi-node, ``ray.cluster_utils.Cluster``, the local-provider launcher) run it in subprocesses, on private
ports and a private ``RAY_TMPDIR``, and tear down exactly their own processes: other Ray users share the
machine.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `ops` is repository tooling, not part of the installed package
    sys.path.insert(0, str(REPO_ROOT))

from ops.local_ray import kill_processes_mentioning, short_temp_dir  # noqa: E402
from ops.sample_pairs import write_crop_pairs  # noqa: E402


@pytest.fixture(scope="session")
def crop_pairs(tmp_path_factory) -> Path:
    """A manifest of 24 small multi-focus pairs (64x64 crops of the bundled MFI-WHU samples)."""
    return write_crop_pairs(tmp_path_factory.mktemp("crops"), 24, size=64, seed=0)


@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    """A private RAY_TMPDIR for the Ray instances a test's subprocesses start; whatever is left running from
    it is killed afterwards (only those processes)."""
    path = short_temp_dir("mgt-")
    try:
        yield path
    finally:
        kill_processes_mentioning(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def job_env(ray_tmpdir) -> dict[str, str]:
    """Environment of a job subprocess that starts its own local Ray (no RAY_ADDRESS, private temp dir)."""
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env["RAY_AUTH_MODE"] = "disabled"  # loopback test clusters (ENVIRONMENT.md, pitfall 1)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
