"""Private Ray clusters on one machine, for tests and benchmarks that share the host with other Ray users.

Everything a cluster started here listens on is a fresh free port, everything it writes is under its own short
temp dir, and tearing it down kills exactly the processes whose command line names that temp dir (or that
descend from the ``ray start`` we launched): never ``ray stop``, which would stop every Ray instance of the
user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.cluster_config import REPO_ROOT, LocalPorts
from ops.metrics import dashboard_get

VENV_BIN = Path(sys.executable).parent
RAY_CLI = str(VENV_BIN / "ray")

__all__ = [
    "HeadNode",
    "RAY_CLI",
    "SMALL_STEPS",
    "free_ports",
    "generate_auth_token",
    "isolated_ray_env",
    "kill_processes_mentioning",
    "local_ports",
    "private_ray_tmpdir",
    "processes_mentioning",
    "ray_job_submit",
    "run_ray",
    "short_temp_dir",
    "token_client_env",
    "wait_for",
]

# batch_fuse overrides that make progress visible pair by pair (2-pair batches, decode blocks and write tasks), so
# that a fault or a kill lands in the middle of a job: shared by the fault-injection and kill/resume tests.
SMALL_STEPS = [
    "--set",
    "fusion.batch_size=2",
    "--set",
    "resources.rows_per_write=2",
    "--set",
    "resources.rows_per_decode=2",
]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def local_ports() -> LocalPorts:
    """A full set of free ports for one head node."""
    return LocalPorts(*free_ports(9))


def short_temp_dir(prefix: str = "mgo-") -> str:
    """A fresh temp dir with a short path (Ray's Unix socket paths must stay under ~107 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@contextlib.contextmanager
def private_ray_tmpdir(prefix: str = "mgt-") -> Iterator[str]:
    """A short temp dir to use as ``RAY_TMPDIR`` of Ray instances started by subprocesses; on exit every process
    whose command line names it (what such an instance leaves running, e.g. after its driver was killed) is
    killed, and the dir removed."""
    path = short_temp_dir(prefix)
    try:
        yield path
    finally:
        kill_processes_mentioning(path)
        shutil.rmtree(path, ignore_errors=True)


def isolated_ray_env(ray_tmpdir: str, **extra: str) -> dict[str, str]:
    """Environment of a job subprocess that starts its own local Ray: private ``RAY_TMPDIR``, no ``RAY_ADDRESS``
    of another cluster, token auth off (a loopback test cluster), no progress bars, the venv first on PATH."""
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir, "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def wait_for(predicate: Any, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the predicate probes a service that may not be up yet
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def _parent_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_mentioning(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (Linux /proc)."""
    return [
        pid
        for pid in _parent_map()
        if pid != os.getpid() and _alive(pid) and any(marker in part for part in _cmdline(pid))
    ]


def kill_processes_mentioning(marker: str, *, also: list[int] | None = None, grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, every process whose command line contains ``marker``, plus the ``also`` pids,
    and all their descendants. Returns how many processes were signalled. Never touches anything else."""
    parents = _parent_map()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    roots = set(processes_mentioning(marker) if marker else []) | set(also or [])
    targets: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in targets or pid == os.getpid() or pid <= 1:
            continue
        targets.add(pid)
        stack.extend(children.get(pid, []))
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in targets):
        time.sleep(0.2)
    for pid in targets:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return len(targets)


def run_ray(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The virtualenv's ``ray`` CLI run from the repository root (so ``--working-dir .`` is the checkout), stdin
    closed, output captured as text; the caller checks the return code."""
    return subprocess.run(
        [RAY_CLI, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def generate_auth_token(home: str | os.PathLike[str], env: dict[str, str] | None = None) -> tuple[Path, str]:
    """Make a cluster token the way users make theirs: ``ray get-auth-token --generate`` writes
    ``$HOME/.ray/auth_token``. Here HOME is ``home``, so the host's own token (which other Ray instances on this
    machine use) is never touched. Returns the token file and the token."""
    subprocess.run(
        [RAY_CLI, "get-auth-token", "--generate"],
        env={**(env or os.environ), "HOME": str(home)},
        check=True,
        capture_output=True,
    )
    path = Path(home) / ".ray" / "auth_token"
    return path, path.read_text().strip()


def token_client_env(base: dict[str, str], token_path: str | os.PathLike[str], **extra: str) -> dict[str, str]:
    """``base`` made a Ray CLI client of a token-auth cluster: token mode, the token read from ``token_path``, no
    other cluster's address or token."""
    env = {k: v for k, v in base.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), **extra})
    return env


def ray_job_submit(
    address: str,
    entrypoint: list[str],
    *,
    env: dict[str, str],
    submission_id: str | None = None,
    wait: bool = True,
    timeout: float = 900,
    agent_wait_s: float = 90,
) -> subprocess.CompletedProcess:
    """``ray job submit --address ADDRESS --working-dir . [--submission-id ID] [--no-wait] -- ENTRYPOINT``.

    Retries for up to ``agent_wait_s`` while the dashboard answers "No available agent" (a node's agent registers
    a little after the dashboard is up), as an operator would.

    Raises:
        RuntimeError: with the CLI's output, when the submission (or, with ``wait``, the job) failed.
    """
    args = ["job", "submit", "--address", address, "--working-dir", "."]
    if submission_id:
        args += ["--submission-id", submission_id]
    if not wait:
        args.append("--no-wait")
    deadline = time.monotonic() + agent_wait_s
    while True:
        result = run_ray(*args, "--", *entrypoint, env=env, timeout=timeout)
        if result.returncode == 0 or "No available agent" not in result.stdout + result.stderr:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    if result.returncode != 0:
        raise RuntimeError(f"`ray {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class HeadNode:
    """``ray start --head --block`` on private ports and a private temp dir, stopped by :meth:`stop`.

    Args:
        env: extra environment of the head (and so of every Ray process it starts), e.g. ``RAY_AUTH_MODE``.
        num_cpus / num_gpus: advertised resources.
        autoscaling_config: path of an autoscaler YAML (fake multi-node clusters).
        dashboard: start the dashboard (on 127.0.0.1).
    """

    env: dict[str, str] = field(default_factory=dict)
    num_cpus: int = 2
    num_gpus: int | None = None
    object_store_memory: int = 300 * 1024**2
    autoscaling_config: str | None = None
    dashboard: bool = True
    extra_args: list[str] = field(default_factory=list)
    ports: LocalPorts = field(default_factory=local_ports)
    temp_dir: str = field(default_factory=short_temp_dir)
    process: subprocess.Popen | None = None

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}"

    def command(self) -> list[str]:
        flags = dict(self.ports.flags())
        if not self.dashboard:
            flags.pop("--dashboard-port")
        args = [RAY_CLI, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        args += [f"{k}={v}" for k, v in flags.items()]
        args += [
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_memory}",
            f"--include-dashboard={'true' if self.dashboard else 'false'}",
        ]
        if self.dashboard:
            args.append("--dashboard-host=127.0.0.1")
        if self.num_gpus is not None:
            args.append(f"--num-gpus={self.num_gpus}")
        if self.autoscaling_config:
            args.append(f"--autoscaling-config={self.autoscaling_config}")
        return args + self.extra_args

    def process_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.pop("RAY_ADDRESS", None)
        return env

    def start(self, timeout: float = 90.0) -> HeadNode:
        log = open(Path(self.temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 - lives as long as the head
        self.process = subprocess.Popen(
            self.command(),
            env=self.process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            with socket.create_connection(("127.0.0.1", self.ports.gcs), timeout=1):
                pass
            if self.dashboard:
                status, _ = dashboard_get(f"{self.dashboard_url}/api/version", self.env.get("RAY_AUTH_TOKEN"))
                return status in (200, 401)
            return True

        try:
            wait_for(up, timeout, what=f"Ray head on {self.gcs_address}")
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, chars: int = 4000) -> str:
        path = Path(self.temp_dir) / "ray-start.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, remove_temp_dir: bool = True) -> None:
        """Kill this cluster's processes (and only them); remove its temp dir."""
        pids = [self.process.pid] if self.process is not None else []
        kill_processes_mentioning(self.temp_dir, also=pids)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if remove_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> HeadNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
