"""``ray_cluster.yaml``: offline validation, and the single-machine variants derived from it.

The AWS file is the source. The variants used by tests and benchmarks are computed from it, never written by
hand, so the launch path that is exercised here and the file users run cannot drift apart:

* :func:`make_local_variant` swaps the provider for ``local`` (head 127.0.0.1, SSH through a ProxyCommand), keeps
  the file mounts, the setup commands that need no network and the ``ray start`` flags, and moves every port and
  the temp dir out of the way of other Ray instances on the machine.
* :func:`make_fake_multinode_config` keeps the worker node types (resources, priorities, labels, scaling bounds)
  for Ray's ``fake_multinode`` provider, which starts real raylets on this machine as "nodes".

Command line: ``python -m ops.cluster_config validate [FILE]`` validates a cluster YAML and prints the
resolved node types; ``fake [FILE] --gcs-address ADDR`` prints the fake multi-node autoscaling config.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "ray_cluster.yaml"

__all__ = [
    "CLUSTER_YAML",
    "ClusterConfigError",
    "LocalPorts",
    "load_cluster_config",
    "make_fake_multinode_config",
    "make_local_variant",
    "pinned_project_version",
    "ray_schema",
    "rewrite_ray_start",
    "uncommented_keys",
    "validate_cluster_config",
]

_PIN = re.compile(r"maugif-ray==([0-9][0-9A-Za-z.+-]*)")
# Setup commands that need the network or root: replaced in the single-machine variant (see
# make_local_variant).
_NEEDS_NETWORK = ("apt-get", "pip install")
_SAFE_SHELL = re.compile(r"^[A-Za-z0-9_\-=.,:/~@%+]+$")


class ClusterConfigError(ValueError):
    """A cluster YAML that Ray's launcher would reject; the message names the offending key."""


def load_cluster_config(path: str | os.PathLike[str] = CLUSTER_YAML) -> dict[str, Any]:
    """Parse a cluster YAML into a plain dict."""
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ClusterConfigError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    return config


def ray_schema() -> dict[str, Any]:
    """The JSON schema of cluster YAMLs shipped in the installed ray wheel
    (``ray/autoscaler/ray-schema.json``)."""
    import ray.autoscaler

    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        return json.load(f)


def validate_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate like ``ray up`` does before touching a cloud; returns the prepared (defaults-filled) config.

    Three layers: the shipped JSON schema (unknown keys, wrong types), Ray's ``prepare_config`` (merging the
    provider's defaults) and ``validate_config`` (cross-field rules such as head_node_type and worker bounds).

    Raises:
        ClusterConfigError: naming the key path and what was wrong.
    """
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        jsonschema.validate(copy.deepcopy(config), ray_schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ClusterConfigError(f"cluster config fails Ray's schema at {where}: {e.message}") from e
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except (ValueError, RuntimeError, KeyError, jsonschema.ValidationError) as e:
        raise ClusterConfigError(f"cluster config rejected by Ray's config preparation: {e}") from e
    return prepared


def uncommented_keys(text: str) -> list[tuple[int, str]]:
    """Mapping keys (1-based line, key) that have neither a comment on their line nor a comment line right
    above.

    Keys of a flow mapping (``resources: {CPU: 8, GPU: 1}``) count as documented by their line's comment.
    """
    lines = text.splitlines()
    missing: list[tuple[int, str]] = []

    def documented(line_no: int) -> bool:
        if "#" in lines[line_no].split(": ", 1)[-1] or lines[line_no].lstrip().startswith("#"):
            return True
        prev = line_no - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        return prev >= 0 and lines[prev].lstrip().startswith("#")

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                line_no = key.start_mark.line
                if not documented(line_no):
                    missing.append((line_no + 1, str(key.value)))
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    root = yaml.compose(text)
    if root is not None:
        walk(root)
    return missing


def pinned_project_version(config: dict[str, Any]) -> str:
    """The ``maugif-ray==X`` version the setup commands install."""
    for command in config.get("setup_commands", []):
        match = _PIN.search(command)
        if match:
            return match.group(1)
    raise ClusterConfigError("setup_commands install no pinned 'maugif-ray==<version>'")


def _quote(token: str) -> str:
    # shlex.quote would also quote '~', which Ray expands itself in --autoscaling-config=~/...
    return token if _SAFE_SHELL.match(token) else shlex.quote(token)


def rewrite_ray_start(command: str, flags: dict[str, str | None], env: dict[str, str | None] | None = None) -> str:
    """Rewrite the ``ray start`` part of a shell command line.

    Args:
        command: e.g. ``"ulimit -n 65536; RAY_AUTH_MODE=token ray start --head --port=6379"``.
        flags: ``{"--port": "6380", "--num-cpus": "2", "--block": "", "--object-manager-port": None}``: set
            (``""`` for a bare flag) or remove (None) each flag.
        env: environment assignments in front of ``ray start`` to set or remove (None), same convention.
    """
    parts = [p.strip() for p in command.split(";")]
    for i, part in enumerate(parts):
        tokens = shlex.split(part)
        if "ray" not in tokens or tokens[tokens.index("ray") + 1 : tokens.index("ray") + 2] != ["start"]:
            continue
        at = tokens.index("ray")
        assignments = dict(t.split("=", 1) for t in tokens[:at])
        for key, value in (env or {}).items():
            if value is None:
                assignments.pop(key, None)
            else:
                assignments[key] = value
        args: dict[str, str] = {}
        for token in tokens[at + 2 :]:
            name, _, value = token.partition("=")
            args[name] = value
        for name, value in flags.items():
            if value is None:
                args.pop(name, None)
            else:
                args[name] = value
        words = [f"{k}={v}" for k, v in assignments.items()] + ["ray", "start"]
        words += [name if value == "" else f"{name}={value}" for name, value in args.items()]
        parts[i] = " ".join(_quote(w) for w in words)
        return "; ".join(parts)
    raise ClusterConfigError(f"no 'ray start' in command {command!r}")


@dataclass(frozen=True)
class LocalPorts:
    """Every port a single-machine head listens on, so that it never collides with another Ray on the host."""

    gcs: int
    dashboard: int
    metrics: int
    object_manager: int
    node_manager: int
    client_server: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int

    def flags(self) -> dict[str, str]:
        return {
            "--port": str(self.gcs),
            "--dashboard-port": str(self.dashboard),
            "--metrics-export-port": str(self.metrics),
            "--object-manager-port": str(self.object_manager),
            "--node-manager-port": str(self.node_manager),
            "--ray-client-server-port": str(self.client_server),
            "--dashboard-agent-listen-port": str(self.dashboard_agent_listen),
            "--dashboard-agent-grpc-port": str(self.dashboard_agent_grpc),
            "--runtime-env-agent-port": str(self.runtime_env_agent),
        }


def make_local_variant(
    config: dict[str, Any],
    *,
    cluster_name: str,
    ssh_user: str,
    ssh_private_key: str,
    ssh_proxy_command: str,
    ports: LocalPorts,
    token_file: str,
    remote_env: dict[str, str] | None = None,
    num_cpus: int = 2,
    object_store_memory: int = 300 * 1024**2,
) -> dict[str, Any]:
    """The same cluster on the ``local`` provider: one head at 127.0.0.1, reached over SSH.

    Kept from the AWS file: file mounts (the token mount now points at ``token_file``), every setup command
    that needs neither network nor root (virtualenv on PATH, RAY_AUTH_MODE), the start/stop commands with all
    their flags and environment. Changed: the provider and auth; the node types (the local provider has one
    node type); the apt/pip installs, replaced by a check that the pinned versions are what ``~/maugif-venv``
    (prepared by the caller, e.g. a link to the launcher's virtualenv) holds; ports, temp dir, CPUs and object
    store of ``ray start`` (the head has CPU 0 on AWS, but here it is the only node).
    """
    aws = copy.deepcopy(config)
    version = pinned_project_version(aws)
    import ray

    local: dict[str, Any] = {
        "cluster_name": cluster_name,
        "upscaling_speed": aws.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": aws.get("idle_timeout_minutes", 5),
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
        "auth": {
            "ssh_user": ssh_user,
            "ssh_private_key": ssh_private_key,
            "ssh_proxy_command": ssh_proxy_command,
        },
    }
    mounts = {}
    for remote, source in aws.get("file_mounts", {}).items():
        if remote.endswith("/.ray/auth_token"):
            mounts[remote] = token_file
        elif remote.endswith("/dist"):
            continue  # the wheel is not built here: the virtualenv already holds the project (checked below)
        else:
            mounts[remote] = str((REPO_ROOT / source).resolve()) if not os.path.isabs(source) else source
    local["file_mounts"] = mounts
    for key in ("cluster_synced_files", "file_mounts_sync_continuously", "rsync_exclude", "rsync_filter"):
        if key in aws:
            local[key] = aws[key]
    setup = [
        f"grep -q '^export {k}=' ~/.bashrc || echo {shlex.quote(f'export {k}={shlex.quote(v)}')} >> ~/.bashrc"
        for k, v in (remote_env or {}).items()
    ]
    setup += [c for c in aws.get("setup_commands", []) if not any(n in c for n in _NEEDS_NETWORK)]
    setup.append(
        "python -c \"import importlib.metadata as m; v = (m.version('maugif-ray'), m.version('ray')); "
        f"assert v == ('{version}', '{ray.__version__}'), v\""
    )
    local["initialization_commands"] = []
    local["setup_commands"] = setup
    local["head_setup_commands"] = aws.get("head_setup_commands", [])
    local["worker_setup_commands"] = aws.get("worker_setup_commands", [])

    start_flags: dict[str, str | None] = {
        **ports.flags(),
        "--num-cpus": str(num_cpus),
        "--object-store-memory": str(object_store_memory),
        "--include-dashboard": "true",
        "--disable-usage-stats": "",
    }
    local["head_start_ray_commands"] = [
        rewrite_ray_start(c, start_flags) if "ray start" in c else c for c in aws["head_start_ray_commands"]
    ]
    local["worker_start_ray_commands"] = aws.get("worker_start_ray_commands", [])
    return local


def make_fake_multinode_config(
    config: dict[str, Any],
    *,
    gcs_address: str,
    cpus_per_node: int = 2,
    max_workers_per_type: int = 1,
    object_store_memory: int = 200 * 1024**2,
    idle_timeout_minutes: float = 1.0,
) -> dict[str, Any]:
    """An autoscaling config for Ray's ``fake_multinode`` provider with the worker types of ``config``.

    Every worker type keeps its GPU count, priority, labels and ``min_workers``; its CPUs are capped at
    ``cpus_per_node`` and its count at ``max_workers_per_type`` (real raylets on one small machine). The head
    is the ``ray start --head`` process itself (``ray.head.default``, as the provider requires) with the AWS
    head's resources. The result is complete (defaults filled): the autoscaler reads it without
    ``prepare_config``.

    The fake provider runs under autoscaler v1 only (v2's config preparation looks for the provider's
    ``example.yaml``, which the wheel does not ship). v1 ignores ``priority``: between equally good node types it
    picks by name, so this config tests resource-driven scaling, not the spot/on-demand preference. Start the head
    with ``RAY_FAKE_CLUSTER=1`` and without ``RAY_enable_autoscaler_v2``.
    """
    aws = copy.deepcopy(config)
    head_type = aws["head_node_type"]
    types: dict[str, Any] = {
        "ray.head.default": {
            "resources": dict(aws["available_node_types"][head_type].get("resources", {})),
            "node_config": {},
            "max_workers": 0,
        }
    }
    total = 0
    for name, spec in aws["available_node_types"].items():
        if name == head_type:
            continue
        resources = dict(spec.get("resources", {}))
        if "CPU" in resources:
            resources["CPU"] = min(int(resources["CPU"]), cpus_per_node)
        resources["object_store_memory"] = object_store_memory
        node_type: dict[str, Any] = {
            "resources": resources,
            "node_config": {},
            "min_workers": int(spec.get("min_workers", 0)),
            "max_workers": min(int(spec.get("max_workers", max_workers_per_type)), max_workers_per_type),
        }
        for key in ("priority", "labels"):
            if key in spec:
                node_type[key] = copy.deepcopy(spec[key])
        types[name] = node_type
        total += node_type["max_workers"]
    return {
        "cluster_name": f"{aws['cluster_name']}-fake",
        "max_workers": total,
        "upscaling_speed": aws.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "launch_multiple": True,
            # the provider starts raylets itself: no SSH updater, no launch-config hashing
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "use_node_id_as_ip": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ops.cluster_config", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate a cluster YAML offline, as `ray up` would")
    check.add_argument("file", nargs="?", default=str(CLUSTER_YAML))
    fake = sub.add_parser("fake", help="print the fake_multinode autoscaling config derived from a cluster YAML")
    fake.add_argument("file", nargs="?", default=str(CLUSTER_YAML))
    fake.add_argument("--gcs-address", default="127.0.0.1:6379", help="the `ray start --head --port` address")
    args = parser.parse_args(argv)
    path = Path(args.file)
    if args.command == "fake":
        print(yaml.safe_dump(make_fake_multinode_config(load_cluster_config(path), gcs_address=args.gcs_address)))
        return 0
    try:
        prepared = validate_cluster_config(load_cluster_config(path))
    except ClusterConfigError as e:
        print(f"{path}: INVALID: {e}", file=sys.stderr)
        return 1
    for line, key in uncommented_keys(path.read_text()):
        print(f"{path}:{line}: key {key!r} has no comment", file=sys.stderr)
    print(f"{path}: valid (Ray schema + prepare_config/validate_config)")
    for name, spec in prepared["available_node_types"].items():
        bounds = f"{spec.get('min_workers', 0)}..{spec['max_workers']}"
        print(f"  {name}: resources={spec['resources']} workers={bounds}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
