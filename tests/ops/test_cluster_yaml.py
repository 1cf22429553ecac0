"""``ray_cluster.yaml`` validated offline as ``ray up`` would, and its single-machine variants derived from it."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops.cluster_config import (
    CLUSTER_YAML,
    ClusterConfigError,
    LocalPorts,
    load_cluster_config,
    make_fake_multinode_config,
    make_local_variant,
    pinned_project_version,
    rewrite_ray_start,
    uncommented_keys,
    validate_cluster_config,
)

REPO_ROOT = CLUSTER_YAML.parent


@pytest.fixture(scope="module")
def config() -> dict:
    return load_cluster_config()


def _worker_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def test_passes_rays_schema_and_config_preparation(config):
    prepared = validate_cluster_config(config)
    assert prepared["provider"]["type"] == "aws"
    # prepare_config merged the AWS defaults and the common setup into head/worker setup, as `ray up` does.
    assert prepared["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert set(prepared["available_node_types"]) == {"head", "gpu_spot", "gpu_ondemand", "cpu_decode"}


def test_every_key_is_commented():
    text = CLUSTER_YAML.read_text()
    assert uncommented_keys(text) == []
    # The check itself can fail: a key without a comment is reported with its line.
    assert uncommented_keys("# about a\na: 1\n\nb:\n  # about c\n  c: 2\n") == [(4, "b")]


def test_head_is_cpu_only_and_schedules_nothing(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "InstanceMarketOptions" not in head["node_config"]  # the control plane is never preempted


def test_gpu_workers_autoscale_from_zero_with_explicit_resources(config):
    workers = _worker_types(config)
    gpu = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) > 0}
    assert set(gpu) == {"gpu_spot", "gpu_ondemand"}
    for spec in gpu.values():
        assert spec["min_workers"] == 0 and spec["max_workers"] >= 1
        assert spec["resources"]["CPU"] > 0 and spec["resources"]["GPU"] >= 1
        assert spec["node_config"]["InstanceType"].split(".")[0] in ("g5", "g6")
    spot, ondemand = gpu["gpu_spot"], gpu["gpu_ondemand"]
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in ondemand["node_config"]
    # The fallback satisfies exactly the same demand, is preferred less, and is capped lower.
    assert ondemand["resources"] == spot["resources"]
    assert spot["priority"] > ondemand["priority"]
    assert ondemand["max_workers"] < spot["max_workers"]
    assert "RAY_enable_autoscaler_v2=1" in " ".join(config["head_start_ray_commands"])  # honours `priority`
    # The v1 autoscaler ignores `priority` but breaks equal scores by type name (reverse-sorted): spot wins
    # too.
    assert sorted(gpu, reverse=True)[0] == "gpu_spot"


def test_cpu_worker_type_for_decode_stages(config):
    cpu = _worker_types(config)["cpu_decode"]
    assert cpu["min_workers"] == 0 and cpu["resources"]["CPU"] >= 8 and "GPU" not in cpu["resources"]
    prepared = validate_cluster_config(config)
    assert prepared["max_workers"] >= sum(t["max_workers"] for t in _worker_types(config).values()) // 2


def test_project_installed_at_pinned_version_with_the_torch_constraint(config):
    version = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert pinned_project_version(config) == version
    setup = config["setup_commands"]
    install = next(c for c in setup if "maugif-ray==" in c)
    assert "-c ~/maugif/constraints.txt" in install and "pip install" in install
    torch = next(c for c in setup if "torch" in c and "pip install" in c)
    # GPU nodes: PyPI's (CUDA) build of the pinned version; CPU nodes: the same version from the CPU index.
    assert "nvidia-smi" in torch and "download.pytorch.org/whl/cpu" in torch
    assert torch.count("-c ~/maugif/constraints.txt") == 2
    assert setup.index(torch) < setup.index(install)  # torch is resolved before the project can pull it
    constraints = (REPO_ROOT / "constraints.txt").read_text().split()
    import ray

    assert f"ray=={ray.__version__}" in constraints  # cluster Ray == launcher Ray
    assert any(c.startswith("torch==") for c in constraints)


def test_configs_constraints_and_token_are_mounted(config):
    mounts = config["file_mounts"]
    assert mounts["~/maugif/configs"] == "./configs" and (REPO_ROOT / "configs").is_dir()
    assert mounts["~/maugif/constraints.txt"] == "./constraints.txt"
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_token_auth_and_a_private_dashboard_everywhere(config):
    head, worker = config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]
    for command in (head, worker):
        assert "RAY_AUTH_MODE=token" in command and "--metrics-export-port=" in command
    assert "--dashboard-host=127.0.0.1" in head
    # Remote login shells (ray exec/submit, and the `ray stop` of `ray down`) find the venv's ray and use the
    # token.
    assert any("maugif-venv/bin:$PATH" in c and ".bashrc" in c for c in config["setup_commands"])
    assert any("RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in config["setup_commands"])
    # `ray submit` scripts attach to the cluster (our jobs start a private Ray unless given an address).
    assert any("RAY_ADDRESS=auto" in c and ".bashrc" in c for c in config["setup_commands"])


def _break(config: dict, path: list, value) -> dict:
    broken = copy.deepcopy(config)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["max_worker"], 3, "max_worker"),  # unknown top-level key (typo of max_workers)
        (["available_node_types", "gpu_spot", "min_worker"], 0, "min_worker"),  # unknown node-type key
        (["max_workers"], "sixteen", "sixteen"),  # wrong type
        (["available_node_types", "gpu_spot", "resources", "GPU"], "one", "one"),  # wrong type in resources
        (["idle_timeout_minutes"], [5], "idle_timeout_minutes|5"),
        (["head_node_type"], "head_typo", "head_node_type"),  # Ray's cross-field validation
        (["available_node_types", "cpu_decode", "min_workers"], 50, "min_workers"),  # sum(min) > max_workers
    ],
)
def test_a_broken_copy_fails_validation(config, path, value, message):
    with pytest.raises(ClusterConfigError, match=message):
        validate_cluster_config(_break(config, path, value))


def test_cli_validates_a_file_and_rejects_a_broken_one(config, tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "ops.cluster_config", "validate"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "gpu_spot: resources={'CPU': 8, 'GPU': 1} workers=0..8" in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(_break(config, ["available_node_types", "gpu_spot", "resource"], {"GPU": 1})))
    bad = subprocess.run(
        [sys.executable, "-m", "ops.cluster_config", "validate", str(broken)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "resource" in bad.stderr


def test_rewrite_ray_start_sets_and_removes_flags():
    command = "ulimit -n 65536; RAY_AUTH_MODE=token ray start --head --port=6379 --dashboard-host=127.0.0.1"
    out = rewrite_ray_start(
        command,
        {"--port": "7000", "--block": "", "--dashboard-host": None},
        env={"X": "1", "RAY_AUTH_MODE": None},
    )
    assert out == "ulimit -n 65536; X=1 ray start --head --port=7000 --block"
    with pytest.raises(ClusterConfigError):
        rewrite_ray_start("ray stop", {"--port": "1"})


def test_local_variant_is_derived_from_the_aws_file_and_valid(config):
    ports = LocalPorts(*range(20001, 20010))
    local = make_local_variant(
        config,
        cluster_name="t",
        ssh_user="root",
        ssh_private_key="/k",
        ssh_proxy_command="sshd -i",
        ports=ports,
        token_file="/tok",
        remote_env={"RAY_TMPDIR": "/tmp/x"},
    )
    prepared = validate_cluster_config(local)
    assert prepared["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert local["auth"]["ssh_proxy_command"] == "sshd -i"
    # Mounts: same remote paths; the token comes from the given file; configs from this checkout.
    assert local["file_mounts"]["~/.ray/auth_token"] == "/tok"
    assert local["file_mounts"]["~/maugif/configs"] == str(REPO_ROOT / "configs")
    # Setup: no network, no root; the AWS commands that put the venv and token mode in the login shell are
    # kept.
    setup = local["setup_commands"]
    assert not any("apt-get" in c or "pip install" in c for c in setup)
    kept = [c for c in config["setup_commands"] if "apt-get" not in c and "pip install" not in c]
    assert setup[1:-1] == kept and any("maugif-venv/bin:$PATH" in c for c in kept)
    assert "export RAY_TMPDIR=/tmp/x" in setup[0]
    assert f"'{pinned_project_version(config)}'" in setup[-1]
    # Start: every flag and the environment of the AWS command, with private ports.
    head = local["head_start_ray_commands"][-1]
    aws_head = config["head_start_ray_commands"][-1]
    for token in (
        "RAY_AUTH_MODE=token",
        "RAY_enable_autoscaler_v2=1",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
        "--dashboard-host=127.0.0.1",
        "ulimit -n 65536",
    ):
        assert token in aws_head and token in head
    assert f"--port={ports.gcs}" in head and f"--dashboard-port={ports.dashboard}" in head
    assert "6379" not in head and "8265" not in head and "--num-cpus=2" in head


def test_fake_multinode_config_keeps_the_worker_types(config):
    fake = make_fake_multinode_config(config, gcs_address="127.0.0.1:1", cpus_per_node=2, max_workers_per_type=1)
    types = fake["available_node_types"]
    assert fake["provider"]["type"] == "fake_multinode" and fake["provider"]["gcs_address"] == "127.0.0.1:1"
    assert types["ray.head.default"]["resources"] == {"CPU": 0}
    for name, spec in _worker_types(config).items():
        assert types[name]["resources"].get("GPU") == spec["resources"].get("GPU")
        assert types[name]["resources"]["CPU"] == 2
        assert types[name].get("priority") == spec.get("priority")
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] == 1
    # Complete: the autoscaler reads it as is, and Ray's schema accepts it.
    import jsonschema

    from ops.cluster_config import ray_schema

    jsonschema.validate(fake, ray_schema())
    assert Path(REPO_ROOT / "ray_cluster.yaml").exists()
