"""A ``ray start --head`` of a benchmark's own (temp dir, free ports), stopped by pid: never another Ray on the
machine (``ray stop`` would stop every Ray of this user). Used by benchmarks/bench_million.py."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
MB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    """A ``ray start --head`` of this script's own (temp dir, ports); stopped by killing its processes by pid."""

    def __init__(self, work: Path, num_cpus: int, object_store_mb: int | None, env: dict) -> None:
        self.temp = work / "ray"
        self.address = f"127.0.0.1:{free_port()}"
        ports = {
            "--port": self.address.split(":")[1],
            "--ray-client-server-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}"]
        cmd += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp}"]
        cmd += [f"{k}={v}" for k, v in ports.items()]
        if object_store_mb:
            cmd.append(f"--object-store-memory={object_store_mb * MB}")
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        self.state = None

    def store_stats(self) -> dict:
        """Object store use and spill totals from the raylet (what ``ray memory --stats-only`` prints)."""
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        if self.state is None:
            self.state = get_state_from_address(self.address)
        s = get_memory_info_reply(self.state, timeout_seconds=20).store_stats
        return {
            "used_mb": s.object_store_bytes_used / MB,
            "avail_mb": s.object_store_bytes_avail / MB,
            "fallback_mb": s.object_store_bytes_fallback / MB,
            "spilled_mb": s.spilled_bytes_total / MB,
            "spilled_objects": s.spilled_objects_total,
            "restored_mb": s.restored_bytes_total / MB,
        }

    def stop(self) -> None:
        """Stop this head's processes: those naming its temp dir or its GCS port (the client server names the
        port on the host's own IP), never another Ray on the machine."""
        import psutil

        mine = re.compile(re.escape(str(self.temp)) + r"|:" + self.address.split(":")[1] + r"\b")
        ours = [
            p
            for p in psutil.process_iter(["cmdline", "uids"])
            if p.pid != os.getpid()
            and p.info["uids"].real == os.getuid()
            and mine.search(" ".join(p.info["cmdline"] or []))
        ]
        for p in ours:
            p.terminate()
        _, alive = psutil.wait_procs(ours, timeout=10)
        for p in alive:
            p.kill()
