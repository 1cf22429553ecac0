"""A single-node Ray cluster with token authentication on, a dashboard on 127.0.0.1, and optionally a
Prometheus server scraping its metrics agent: what ``docs/OPERATIONS.md`` describes, small enough for one
machine.

Used by tests/ops/test_dashboard.py and by ``python -m testsupport.token_cluster`` (which refreshes the screenshots in
docs/img/).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from ops.cluster_config import REPO_ROOT
from ops.metrics import dashboard_get, metrics_endpoints
from testsupport.local_ray import (
    HeadNode,
    free_ports,
    generate_auth_token,
    kill_processes_mentioning,
    ray_job_submit,
    run_ray,
    short_temp_dir,
    token_client_env,
    wait_for,
)

__all__ = ["PrometheusServer", "TokenCluster"]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class TokenCluster:
    """``ray start --head`` with ``RAY_AUTH_MODE=token``; the token is made by ``ray get-auth-token
    --generate``."""

    workdir: str = field(default_factory=lambda: short_temp_dir("mgtok-"))
    num_cpus: int = 2
    head: HeadNode | None = None
    token: str = ""

    @property
    def token_path(self) -> str:
        return os.path.join(self.workdir, ".ray", "auth_token")

    @property
    def dashboard_url(self) -> str:
        assert self.head is not None
        return self.head.dashboard_url

    def start(self) -> TokenCluster:
        _, self.token = generate_auth_token(self.workdir)
        head_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}
        self.head = HeadNode(env=head_env, num_cpus=self.num_cpus)
        self.head.start()
        # The job API needs the node's dashboard agent: wait until the node (and its metrics port) is listed.
        wait_for(lambda: metrics_endpoints(self.dashboard_url, self.token), 120, what="the head node's agent")
        return self

    def client_env(self, **extra: str) -> dict[str, str]:
        """A CLI client of this cluster: token mode, the token's file, no other cluster's address."""
        assert self.head is not None
        return token_client_env(self.head.process_env(), self.token_path, **extra)

    def ray(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_ray(*args, env=env or self.client_env(), timeout=timeout)

    def submit(self, entrypoint: list[str], submission_id: str) -> subprocess.CompletedProcess:
        """``ray job submit --no-wait --working-dir .`` with the token; raises on a CLI error."""
        return ray_job_submit(
            self.dashboard_url, entrypoint, env=self.client_env(), submission_id=submission_id, wait=False
        )

    def job(self, submission_id: str) -> dict[str, Any]:
        """The job's record from the dashboard REST API (``GET /api/jobs/<id>`` with the bearer token)."""
        status, body = dashboard_get(f"{self.dashboard_url}/api/jobs/{submission_id}", self.token)
        if status != 200:
            raise RuntimeError(f"GET /api/jobs/{submission_id}: HTTP {status}: {body}")
        return body

    def wait_job(self, submission_id: str, timeout: float = 600, on_poll: Any = None) -> dict[str, Any]:
        """Follow the job through the REST API until it ends; ``on_poll(record)`` runs on every poll."""

        def ended() -> dict[str, Any] | None:
            record = self.job(submission_id)
            if on_poll is not None:
                on_poll(record)
            return record if record["status"] in TERMINAL else None

        return wait_for(ended, timeout, interval=2.0, what=f"job {submission_id}")

    def stop(self) -> None:
        if self.head is not None:
            self.head.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TokenCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PrometheusServer:
    """Debian's ``prometheus`` scraping the given metrics endpoints every ``interval_s`` (private port and data)."""

    targets: list[str]
    interval_s: int = 2
    workdir: str = field(default_factory=lambda: short_temp_dir("mgprom-"))
    port: int = 0
    process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("prometheus") is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        (self.port,) = free_ports(1)
        hosts = [t.split("//", 1)[1].split("/", 1)[0] for t in self.targets]
        config = {
            "global": {
                "scrape_interval": f"{self.interval_s}s",
                "evaluation_interval": f"{self.interval_s}s",
            },
            "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": hosts}]}],
        }
        Path(self.workdir, "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={self.workdir}/prometheus.yml",
                f"--storage.tsdb.path={self.workdir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(self.workdir, "prometheus.log"), "wb"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                log = Path(self.workdir, "prometheus.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{log}")
            return dashboard_get(f"{self.url}/-/ready")[0] == 200

        wait_for(ready, 60, what="prometheus")
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant PromQL query; the result vector."""
        from urllib.parse import quote

        status, body = dashboard_get(f"{self.url}/api/v1/query?query={quote(expr)}")
        if status != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {expr!r}: HTTP {status}: {body}")
        return body["data"]["result"]

    def stop(self) -> None:
        if self.process is not None:
            kill_processes_mentioning(self.workdir, also=[self.process.pid])
        shutil.rmtree(self.workdir, ignore_errors=True)


def _capture_docs(out_dir: Path, pairs: int) -> None:
    """Run a small batch_fuse job on a token-auth cluster and screenshot the dashboard and its metrics."""
    from testsupport.sample_pairs import write_crop_pairs
    from testsupport.screenshot import capture_pages

    with TokenCluster() as cluster:
        data = Path(cluster.workdir) / "pairs"
        manifest = write_crop_pairs(data, pairs, size=128, seed=1)
        prometheus = PrometheusServer(metrics_endpoints(cluster.dashboard_url, cluster.token)).start()
        try:
            cluster.submit(
                ["python", "jobs/batch_fuse.py", "--input", str(manifest), "--output", str(data / "fused")],
                "maugif-batch-fuse-demo",
            )
            record = cluster.wait_job("maugif-batch-fuse-demo")
            print(f"job {record['submission_id']}: {record['status']}")
            time.sleep(3 * prometheus.interval_s)
            base = cluster.dashboard_url
            query = {
                "g0.expr": "sum by (task) (ray_maugif_pairs_fused_total)",
                "g0.tab": "0",
                "g0.range_input": "2m",
                "g1.expr": "sum by (stage) (ray_maugif_stage_seconds_sum)"
                " / sum by (stage) (ray_maugif_stage_seconds_count)",
                "g1.tab": "0",
                "g1.range_input": "2m",
            }
            shots = capture_pages(
                [
                    (f"{base}/#/jobs", out_dir / "dashboard_jobs.png"),
                    (f"{base}/#/jobs/maugif-batch-fuse-demo", out_dir / "dashboard_job.png"),
                    (f"{prometheus.url}/graph?{urlencode(query)}", out_dir / "prometheus_job_metrics.png", 1500),
                ],
                token=cluster.token,
            )
            for path, _ in shots:
                print(f"wrote {path}")
        finally:
            prometheus.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refresh the dashboard screenshots of docs/OPERATIONS.md.")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "img"), help="Folder for the PNGs.")
    parser.add_argument("--pairs", type=int, default=400, help="Pairs the demo job fuses.")
    args = parser.parse_args(argv)
    if not PrometheusServer.available():
        print("needs Debian's prometheus and chromium: apt-get install prometheus chromium", file=sys.stderr)
        return 2
    _capture_docs(Path(args.out), args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
