"""The real ``ray up`` / ``ray submit`` / ``ray job submit`` / ``ray down`` cycle on one machine.

``ray_cluster.yaml`` is turned into its local-provider variant (:func:`ops.cluster_config.make_local_variant`): one
head at 127.0.0.1 that the launcher reaches over real SSH. No SSH port is opened: ssh's ``ProxyCommand`` starts
``sshd -i`` with a private config, which serves that one connection on stdin/stdout. The "remote" side logs in as a
dedicated unprivileged user created for the run, so that the ``ray stop`` that ``ray up`` and ``ray down`` run on the
head can only ever stop this cluster's processes, never another Ray instance on the host (those belong to other
users, and signalling them fails). Needs root (to create the user) and Debian's ``openssh-server`` and ``rsync``,
installed with apt-get when missing.

    with LocalProviderCluster.create() as cluster:
        cluster.up()
        cluster.submit("jobs/train.py", ["--output", "/tmp/x"])
        cluster.job_submit(["python", "jobs/batch_fuse.py", "--output", "/tmp/y"])
        cluster.down()
        assert cluster.is_gone()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ops.cluster_config import REPO_ROOT, load_cluster_config, make_local_variant, validate_cluster_config
from ops.local_ray import (
    RAY_CLI,
    VENV_BIN,
    dashboard_get,
    free_ports,
    kill_processes_mentioning,
    local_ports,
    processes_mentioning,
    short_temp_dir,
    wait_for,
)

__all__ = ["LocalProviderCluster", "LocalSshHost", "ensure_system_packages", "missing_system_packages"]

SSHD = "/usr/sbin/sshd"
_PACKAGES = {"openssh-server": SSHD, "rsync": "/usr/bin/rsync", "openssh-client": "/usr/bin/ssh"}


def missing_system_packages(packages: dict[str, str] | None = None) -> list[str]:
    """Debian packages (name → binary they provide) whose binary is absent."""
    return [name for name, binary in (packages or _PACKAGES).items() if not os.path.exists(binary)]


def ensure_system_packages(packages: dict[str, str] | None = None) -> None:
    """apt-get install the missing packages (CI runs as root); raise RuntimeError saying what is missing otherwise."""
    missing = missing_system_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"missing system packages {missing}: install them with apt-get (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env, capture_output=True
    )
    still = missing_system_packages(packages)
    if still:
        raise RuntimeError(f"apt-get ran but {still} are still missing")


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
    return pids


@dataclass
class LocalSshHost:
    """An SSH "host" that is this machine: a dedicated user plus an ``sshd -i`` ProxyCommand with a private config."""

    workdir: Path
    user: str
    uid: int = -1

    @classmethod
    def create(cls, workdir: Path | None = None) -> LocalSshHost:
        if os.geteuid() != 0:
            raise RuntimeError("the local SSH host needs root (it creates a dedicated user)")
        ensure_system_packages()
        workdir = Path(workdir or short_temp_dir("mgssh-"))
        workdir.mkdir(parents=True, exist_ok=True)
        host = cls(workdir=workdir, user=f"mgops{secrets.token_hex(3)}")
        host._setup()
        return host

    @property
    def home(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir)

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def proxy_command(self) -> str:
        # Absolute path: sshd refuses to re-execute itself otherwise.
        return f"{SSHD} -i -f {self.workdir / 'sshd_config'}"

    def _setup(self) -> None:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", self.user], check=True)
        self.uid = pwd.getpwnam(self.user).pw_uid
        for key in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(self.workdir / key)], check=True
            )
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(self.workdir / "client_key.pub", ssh_dir / "authorized_keys")
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, self.uid, self.uid)
        (self.workdir / "sshd_config").write_text(
            "\n".join(
                [
                    f"HostKey {self.workdir / 'host_key'}",
                    f"AllowUsers {self.user}",
                    "PermitRootLogin no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PidFile none",
                    "AllowTcpForwarding yes",  # `ray dashboard` forwards the dashboard port
                    "PrintMotd no",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir Debian's sshd requires

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run one command on the "remote" side (a login shell, like the cluster launcher's)."""
        return subprocess.run(
            [
                "ssh", "-i", str(self.client_key), "-o", f"ProxyCommand={self.proxy_command}",
                "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}", "-o", "IdentitiesOnly=yes",
                "-o", "LogLevel=ERROR", f"{self.user}@127.0.0.1", "bash", "--login", "-c", command,
            ],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def user_processes(self) -> list[int]:
        return _uid_processes(self.uid) if self.uid >= 0 else []

    def teardown(self) -> None:
        """Kill every process of the dedicated user and of this SSH setup, delete the user and the workdir."""
        kill_processes_mentioning(str(self.workdir))
        for _ in range(3):
            pids = self.user_processes()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        with contextlib.suppress(KeyError):
            pwd.getpwnam(self.user)
            subprocess.run(["userdel", "--remove", self.user], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class LocalProviderCluster:
    """``ray_cluster.yaml``'s local-provider variant on a :class:`LocalSshHost`, driven through the real CLI."""

    host: LocalSshHost
    yaml_path: Path = field(init=False)
    config: dict[str, Any] = field(init=False)
    ray_tmpdir: str = field(init=False)
    launcher_tmpdir: str = field(init=False)
    token_file: Path = field(init=False)
    token: str = field(init=False)
    log: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, source: Path | None = None) -> LocalProviderCluster:
        host = LocalSshHost.create()
        try:
            cluster = cls(host=host)
            cluster._prepare(source)
        except BaseException:
            host.teardown()
            raise
        return cluster

    def _prepare(self, source: Path | None) -> None:
        work = self.host.workdir
        # Launcher state (cluster-<name>.state, locks) goes to a private RAY_TMPDIR, not the host's /tmp/ray.
        self.launcher_tmpdir = str(work / "launcher")
        os.makedirs(self.launcher_tmpdir)
        # The cluster's token, made the way users make theirs (`ray get-auth-token --generate` writes
        # $HOME/.ray/auth_token), with HOME pointed at the workdir so the host's own token is untouched.
        subprocess.run(
            [RAY_CLI, "get-auth-token", "--generate"], env={**self.launcher_env(), "HOME": str(work)},
            check=True, capture_output=True,
        )  # fmt: skip
        self.token_file = work / ".ray" / "auth_token"
        self.token = self.token_file.read_text().strip()
        # The "remote" side: Ray state under its own short dir, the virtualenv at ~/maugif-venv (a link to the
        # launcher's: the local variant checks the pinned versions instead of installing them).
        self.ray_tmpdir = short_temp_dir("mgr-")
        os.chown(self.ray_tmpdir, self.host.uid, self.host.uid)
        venv_link = self.host.home / "maugif-venv"
        venv_link.symlink_to(VENV_BIN.parent)
        os.lchown(venv_link, self.host.uid, self.host.uid)
        ports = local_ports()
        self.config = make_local_variant(
            load_cluster_config(source) if source else load_cluster_config(),
            cluster_name=f"maugif-local-{self.host.user}",
            ssh_user=self.host.user,
            ssh_private_key=str(self.host.client_key),
            ssh_proxy_command=self.host.proxy_command,
            ports=ports,
            token_file=str(self.token_file),
            remote_env={"RAY_TMPDIR": self.ray_tmpdir, "RAY_ADDRESS": f"127.0.0.1:{ports.gcs}"},
        )
        validate_cluster_config(self.config)
        self.yaml_path = work / "cluster.yaml"
        self.yaml_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def ports(self) -> dict[str, int]:
        start = self.config["head_start_ray_commands"][-1]
        return {
            flag: int(start.split(f"--{flag}=")[1].split()[0])
            for flag in ("port", "dashboard-port", "metrics-export-port")
        }

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    def launcher_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        env["RAY_TMPDIR"] = self.launcher_tmpdir
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        env.update(extra)
        return env

    def client_env(self) -> dict[str, str]:
        """Environment of a client on the launcher machine: token mode with the cluster's token."""
        return self.launcher_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))

    def ray(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the ray CLI from the repository root; raise with its output on failure."""
        started = time.monotonic()
        result = subprocess.run(
            [RAY_CLI, *args], cwd=REPO_ROOT, env=env or self.launcher_env(), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.log.append(f"$ ray {' '.join(args)}  ({time.monotonic() - started:.1f} s, rc={result.returncode})")
        self.log.append((result.stdout + result.stderr)[-6000:])
        if result.returncode != 0:
            raise RuntimeError(f"`ray {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def up(self, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.ray("up", "-y", "--no-config-cache", str(self.yaml_path), timeout=timeout)

    def submit(self, script: str, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        return self.ray("submit", str(self.yaml_path), script, "--", *args, timeout=timeout)

    def exec(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.ray("exec", str(self.yaml_path), command, timeout=timeout)

    def job_submit(
        self, entrypoint: list[str], *, address: str | None = None, submission_id: str | None = None,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess:  # fmt: skip
        """``ray job submit --working-dir .`` with the cluster's token, waiting for the job to finish."""
        args = ["job", "submit", "--address", address or self.dashboard_url, "--working-dir", "."]
        if submission_id:
            args += ["--submission-id", submission_id]
        return self.ray(*args, "--", *entrypoint, timeout=timeout, env=self.client_env())

    @contextlib.contextmanager
    def dashboard_forward(self, timeout: float = 60):
        """``ray dashboard <yaml>``: forward the head's dashboard to a local port over SSH; yields the local URL."""
        (local,) = free_ports(1)
        process = subprocess.Popen(
            [RAY_CLI, "dashboard", str(self.yaml_path), "--port", str(local),
             "--remote-port", str(self.ports["dashboard-port"])],
            cwd=REPO_ROOT, env=self.launcher_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{local}"
        try:
            wait_for(lambda: dashboard_get(f"{url}/api/version", self.token)[0] == 200, timeout, what="ray dashboard")
            yield url
        finally:
            kill_processes_mentioning("", also=[process.pid])

    def down(self, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.ray("down", "-y", str(self.yaml_path), timeout=timeout)

    def ray_processes(self) -> list[int]:
        """Pids of this cluster's Ray processes (their command lines name its private temp dir)."""
        return processes_mentioning(self.ray_tmpdir)

    def is_gone(self, wait_s: float = 30) -> bool:
        """No Ray process of the cluster is left and its GCS port accepts no connection."""
        import socket

        def gone() -> bool:
            if self.ray_processes():
                return False
            with socket.socket() as s:
                s.settimeout(1)
                return s.connect_ex(("127.0.0.1", self.ports["port"])) != 0

        try:
            return bool(wait_for(gone, wait_s, what="cluster shutdown"))
        except TimeoutError:
            return False

    def close(self) -> None:
        """Kill whatever is left (only this cluster's processes) and remove the user, keys and temp dirs."""
        kill_processes_mentioning(self.ray_tmpdir)
        self.host.teardown()
        shutil.rmtree(self.ray_tmpdir, ignore_errors=True)

    def __enter__(self) -> LocalProviderCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
