"""The cluster launcher's whole lifecycle on one machine, with the local-provider variant of
``ray_cluster.yaml``.

``ray up`` → ``ray exec`` → ``ray dashboard`` (SSH port forward) → ``ray submit … jobs/train.py`` →
``ray job submit … jobs/batch_fuse.py`` (token auth) → ``ray down``, and the cluster is really gone. Real SSH
(an ``sshd -i`` ProxyCommand), real rsync, the real Ray CLI; see testsupport/local_cluster.py for the isolation that
keeps the launcher's ``ray stop`` away from other Ray instances on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from ops.metrics import dashboard_get
from testsupport.local_cluster import LocalProviderCluster, missing_system_packages

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: private namespaces and sshd (CI runs as root)"),
    pytest.mark.skipif(
        bool(missing_system_packages()) and not shutil.which("apt-get"),
        reason="needs Debian's openssh-server and rsync (installed by the test with apt-get when possible)",
    ),
]


@pytest.fixture
def cluster():
    with LocalProviderCluster.create() as cluster:  # apt-get installs openssh-server/rsync when missing
        try:
            yield cluster
        finally:
            if cluster.ray_processes():  # a failed test still tears the cluster down, as a user would
                with contextlib.suppress(RuntimeError):
                    cluster.down()
            print("\n".join(cluster.log)[-20000:])


def test_up_submit_job_submit_down(cluster, crop_pairs, tmp_path):
    out = Path(cluster.ray_tmpdir) / "outputs"
    cluster.up()
    assert cluster.ray_processes(), "ray up started no Ray process"

    # The login shell of the head finds the venv's ray (else `ray down` would leave the cluster running) and
    # speaks to the cluster with the token.
    shell = cluster.exec("which ray; echo RAY_AUTH_MODE=$RAY_AUTH_MODE; ray status").stdout
    assert "/maugif-venv/bin/ray" in shell and "RAY_AUTH_MODE=token" in shell
    assert "2.0 CPU" in shell, shell

    # `ray dashboard <yaml>` forwards the dashboard; token auth is on: no token, no API.
    with cluster.dashboard_forward() as url:
        assert dashboard_get(f"{url}/api/version")[0] == 401
        status, version = dashboard_get(f"{url}/api/version", cluster.token)
        assert status == 200 and version["ray_version"] == "2.60.0"

        # `ray submit`: the script is rsynced to the head and run there, attached to the cluster.
        configs = cluster.host.home / "maugif" / "configs"
        train_out = out / "train"
        cluster.submit(
            "jobs/train.py",
            [
                "--config", str(configs / "train_default.yaml"),  # mounted by file_mounts
                "--input", str(REPO_ROOT / "samples" / "mff"),
                "--output", str(train_out),
                "--set", "train.epochs_stage1=1", "--set", "train.epochs_stage2=1",
                "--set", "train.crop_size=32", "--set", "train.batch_size=2",
            ],
        )  # fmt: skip
        assert (train_out / "final" / "model.safetensors").stat().st_size > 0
        # It ran on this cluster (RAY_ADDRESS=auto in the head's shell), not on a private Ray it started itself.
        status, jobs = dashboard_get(f"{url}/api/jobs/", cluster.token)
        assert status == 200
        assert any(j["type"] == "DRIVER" and "train.py" in (j.get("entrypoint") or "") for j in jobs), jobs

        # `ray job submit --working-dir .` through the forwarded dashboard, with the token.
        fused = out / "fused"
        cluster.job_submit(
            ["python", "jobs/batch_fuse.py", "--input", str(crop_pairs), "--output", str(fused)], address=url
        )
    pair_ids = [line.split(",")[0] for line in crop_pairs.read_text().splitlines()[1:]]
    assert sorted(p.stem for p in fused.glob("*.png")) == sorted(pair_ids)

    cluster.down()
    assert cluster.is_gone(), f"processes left after ray down: {cluster.ray_processes()}"
