"""The real ``ray up`` / ``ray submit`` / ``ray job submit`` / ``ray down`` cycle on one machine.

``ray_cluster.yaml`` is turned into its local-provider variant
(:func:`ops.cluster_config.make_local_variant`): one head at 127.0.0.1 that the launcher reaches over real
SSH. No SSH port is opened: ssh's ``ProxyCommand`` starts ``sshd -i`` with a private config, which serves that
one connection on stdin/stdout. The "remote" side runs in a private PID and mount namespace, so that the ``ray
stop`` that ``ray up`` and ``ray down`` run on the head can only ever stop this cluster's processes, never
another Ray instance on the host. Needs root (namespaces, sshd) and Debian's ``openssh-server`` and ``rsync``,
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
import getpass
import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ops.cluster_config import REPO_ROOT, load_cluster_config, make_local_variant, validate_cluster_config
from ops.metrics import dashboard_get
from testsupport.local_ray import (
    RAY_CLI,
    VENV_BIN,
    free_ports,
    generate_auth_token,
    kill_processes_mentioning,
    local_ports,
    processes_mentioning,
    ray_job_submit,
    run_ray,
    short_temp_dir,
    token_client_env,
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
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        capture_output=True,
    )
    still = missing_system_packages(packages)
    if still:
        raise RuntimeError(f"apt-get ran but {still} are still missing")


# Runs as pid 1 of the private PID namespace: gives root a private home (a private /etc/passwd and /etc/shadow
# bind-mounted in the private mount namespace), says it is ready, then reaps orphans (Ray daemonizes) forever.
_NAMESPACE_INIT = """
import os, subprocess, sys, time
passwd, shadow = sys.argv[1:3]
subprocess.run(["mount", "--bind", passwd, "/etc/passwd"], check=True)
subprocess.run(["mount", "--bind", shadow, "/etc/shadow"], check=True)
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


@dataclass
class LocalSshHost:
    """An SSH "host" that is this machine, isolated enough for ``ray stop`` to be harmless.

    The "remote" side lives in a private PID + mount namespace (``unshare``): ``ray stop``, which the launcher
    runs on the head during ``ray up`` and ``ray down``, sees and stops only the processes of this namespace,
    never another Ray instance on the host; killing the namespace's init kills everything left in it. The
    login user is root (the launcher's virtualenv lives under /root) with a private home: inside the namespace
    a copy of /etc/passwd points root's home at ``workdir/home``, so setup commands edit that ``~/.bashrc``,
    not the host's. SSH needs no listening port: the ProxyCommand ``nsenter … sshd -i`` serves each connection
    on stdin/stdout.
    """

    workdir: Path
    init_pid: int = -1
    process: subprocess.Popen | None = None

    @classmethod
    def create(cls, workdir: Path | None = None) -> LocalSshHost:
        if os.geteuid() != 0:
            raise RuntimeError("the local SSH host needs root (namespaces, sshd)")
        ensure_system_packages()
        host = cls(workdir=Path(workdir or short_temp_dir("mgssh-")))
        try:
            host._setup()
        except BaseException:
            host.teardown()
            raise
        return host

    @property
    def user(self) -> str:
        return "root"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def proxy_command(self) -> str:
        # sshd wants an absolute path to re-execute itself; nsenter forks it into the namespace.
        return f"nsenter --target {self.init_pid} --pid --mount {SSHD} -i -f {self.workdir / 'sshd_config'}"

    def _setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(self.workdir / key)],
                check=True,
            )
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        os.chmod(self.home, 0o700)
        shutil.copy(self.workdir / "client_key.pub", ssh_dir / "authorized_keys")
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        shutil.copy("/etc/skel/.bashrc", self.home / ".bashrc") if os.path.exists("/etc/skel/.bashrc") else None
        passwd = [
            f"root:x:0:0:root:{self.home}:/bin/bash" if line.startswith("root:") else line
            for line in Path("/etc/passwd").read_text().splitlines()
        ]
        (self.workdir / "passwd").write_text("\n".join(passwd) + "\n")
        shadow = [
            "root:*:" + line.split(":", 2)[2] if line.startswith("root:") else line
            for line in Path("/etc/shadow").read_text().splitlines()
        ]
        (self.workdir / "shadow").write_text("\n".join(shadow) + "\n")
        os.chmod(self.workdir / "shadow", 0o600)
        (self.workdir / "sshd_config").write_text(
            "\n".join(
                [
                    f"HostKey {self.workdir / 'host_key'}",
                    "AllowUsers root",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PidFile none",
                    "AllowTcpForwarding yes",  # `ray dashboard` forwards the dashboard port
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir Debian's sshd requires
        self.process = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                str(VENV_BIN / "python"),
                "-c",
                _NAMESPACE_INIT,
                str(self.workdir / "passwd"),
                str(self.workdir / "shadow"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = self.process.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"namespace init failed: {line} {self.process.stderr.read().decode()[-2000:]}")
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
            self.init_pid = int(f.read().split()[0])

    def namespace_processes(self) -> list[int]:
        """Host pids of every process in the private namespace except its init."""
        ns = _pid_namespace(self.init_pid)
        if ns is None:
            return []
        return [
            int(e)
            for e in os.listdir("/proc")
            if e.isdigit() and int(e) != self.init_pid and _pid_namespace(int(e)) == ns
        ]

    def teardown(self) -> None:
        """Kill the namespace (and with it every process inside), the SSH masters, and remove the workdir."""
        if self.init_pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        kill_processes_mentioning(str(self.workdir))  # ssh ControlMaster processes on the launcher side
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
        cluster = cls(host=LocalSshHost.create())
        try:
            cluster._prepare(source)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _prepare(self, source: Path | None) -> None:
        work = self.host.workdir
        # Launcher state (cluster-<name>.state, locks) goes to a private RAY_TMPDIR, not the host's /tmp/ray.
        self.launcher_tmpdir = str(work / "launcher")
        os.makedirs(self.launcher_tmpdir)
        # The cluster's token, made the way users make theirs, in the workdir (the host's own token is untouched).
        self.token_file, self.token = generate_auth_token(work, self.launcher_env())
        # The "remote" side: Ray state under its own short dir, the virtualenv at ~/maugif-venv (a link to the
        # launcher's: the local variant checks the pinned versions instead of installing them).
        self.ray_tmpdir = short_temp_dir("mgr-")
        (self.host.home / "maugif-venv").symlink_to(VENV_BIN.parent)
        ports = local_ports()
        self.config = make_local_variant(
            load_cluster_config(source) if source else load_cluster_config(),
            cluster_name=f"maugif-local-{Path(self.host.workdir).name}",
            ssh_user=self.host.user,
            ssh_private_key=str(self.host.client_key),
            ssh_proxy_command=self.host.proxy_command,
            ports=ports,
            token_file=str(self.token_file),
            # Ray's files (and the address `ray start` records, which RAY_ADDRESS=auto finds) under a private dir.
            remote_env={"RAY_TMPDIR": self.ray_tmpdir},
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
        env["TMPDIR"] = self.launcher_tmpdir  # the launcher's config cache and bootstrap files
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        env.update(extra)
        return env

    def client_env(self) -> dict[str, str]:
        """Environment of a client on the launcher machine: token mode with the cluster's token."""
        return token_client_env(self.launcher_env(), self.token_file)

    def _logged(self, args: list[str], run: Any) -> subprocess.CompletedProcess:
        """Run ``run()`` (a ray CLI call), keep the command, its duration and its output tail in :attr:`log`."""
        started = time.monotonic()
        try:
            result = run()
        except RuntimeError as e:  # a failed `ray job submit`: its message holds the output
            self.log.append(f"$ ray {' '.join(args)}  ({time.monotonic() - started:.1f} s, failed)\n{str(e)[-6000:]}")
            raise
        self.log.append(f"$ ray {' '.join(args)}  ({time.monotonic() - started:.1f} s, rc={result.returncode})")
        self.log.append((result.stdout + result.stderr)[-6000:])
        return result

    def ray(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the ray CLI from the repository root; raise with its output on failure."""
        result = self._logged(list(args), lambda: run_ray(*args, env=env or self.launcher_env(), timeout=timeout))
        if result.returncode != 0:
            raise RuntimeError(
                f"`ray {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def up(self, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.ray("up", "-y", "--no-config-cache", str(self.yaml_path), timeout=timeout)

    def submit(self, script: str, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        return self.ray("submit", str(self.yaml_path), script, "--", *args, timeout=timeout)

    def exec(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.ray("exec", str(self.yaml_path), command, timeout=timeout)

    def job_submit(
        self, entrypoint: list[str], *, address: str | None = None, submission_id: str | None = None,
        wait: bool = True, timeout: float = 900,
    ) -> subprocess.CompletedProcess:  # fmt: skip
        """``ray job submit --working-dir .`` with the cluster's token; with ``wait``, until the job has finished."""
        address = address or self.dashboard_url
        return self._logged(
            ["job", "submit", "--address", address, "--", *entrypoint],
            lambda: ray_job_submit(
                address, entrypoint, env=self.client_env(), submission_id=submission_id, wait=wait, timeout=timeout
            ),
        )

    @contextlib.contextmanager
    def dashboard_forward(self, timeout: float = 60):
        """``ray dashboard <yaml>``: forward the head's dashboard to a local port over SSH; yields the local URL."""
        (local,) = free_ports(1)
        process = subprocess.Popen(
            [
                RAY_CLI,
                "dashboard",
                str(self.yaml_path),
                "--port",
                str(local),
                "--remote-port",
                str(self.ports["dashboard-port"]),
            ],
            cwd=REPO_ROOT,
            env=self.launcher_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{local}"
        try:
            wait_for(
                lambda: dashboard_get(f"{url}/api/version", self.token)[0] == 200,
                timeout,
                what="ray dashboard",
            )
            yield url
        finally:
            kill_processes_mentioning("", also=[process.pid])

    def down(self, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.ray("down", "-y", str(self.yaml_path), timeout=timeout)

    def ray_processes(self) -> list[int]:
        """Host pids of the Ray processes on the "remote" side (everything in its namespace but SSH sessions)."""
        pids = set(processes_mentioning(self.ray_tmpdir))
        for pid in self.host.namespace_processes():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ray" in f.read():
                    pids.add(pid)
        return sorted(pids)

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
        """Kill whatever is left (only this cluster's processes); remove the namespace, keys and temp dirs."""
        ray_tmpdir = getattr(self, "ray_tmpdir", None)
        if ray_tmpdir:
            kill_processes_mentioning(ray_tmpdir)
        self.host.teardown()
        if ray_tmpdir:
            shutil.rmtree(ray_tmpdir, ignore_errors=True)
        if hasattr(self, "config"):
            # The SSH ControlPath folder of this cluster (Ray hard-codes it under /tmp; named as Ray names it).
            user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
            name = hashlib.sha256(self.config["cluster_name"].encode()).hexdigest()[:10]
            shutil.rmtree(f"/tmp/ray_ssh_{user}/{name}", ignore_errors=True)

    def __enter__(self) -> LocalProviderCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
