"""Fixtures of the operations tests: cluster definition, launcher, dashboard, autoscaling, faults.

Tests that need a cluster of another shape than the session's (``ray start --head`` with a dashboard, fake
multi-node, ``ray.cluster_utils.Cluster``, the local-provider launcher) run it in subprocesses, on private
ports and a private ``RAY_TMPDIR``, and tear down exactly their own processes: other Ray users share the
machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `ops` is repository tooling, not part of the installed package
    sys.path.insert(0, str(REPO_ROOT))

from testsupport.sample_pairs import write_crop_pairs  # noqa: E402


@pytest.fixture(scope="session")
def crop_pairs(tmp_path_factory) -> Path:
    """A manifest of 24 small multi-focus pairs (64x64 crops of the bundled MFI-WHU samples)."""
    return write_crop_pairs(tmp_path_factory.mktemp("crops"), 24, size=64, seed=0)
