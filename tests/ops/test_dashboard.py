"""Dashboard, job API and metrics with token authentication on, as operators use them.

A ``ray start --head`` cluster with ``RAY_AUTH_MODE=token`` (token from ``ray get-auth-token --generate``)
runs ``jobs/batch_fuse.py`` submitted with ``ray job submit``; the job is followed to SUCCEEDED through the
dashboard REST API with the bearer token; its custom metrics are read from the Prometheus endpoint of the
node's metrics agent (port from the dashboard's node info), scraped by a real Prometheus when one is
installed, and queried with the panels of ops/grafana_dashboard.json; headless Chromium screenshots the
authenticated dashboard.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from ops.metrics import dashboard_get, job_metric_totals, metrics_endpoints, parse_prometheus, scrape
from testsupport.local_ray import wait_for
from testsupport.screenshot import capture_pages, find_chromium
from testsupport.token_cluster import PrometheusServer, TokenCluster

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "ops" / "grafana_dashboard.json"
JOB_TAG = "maugif-batch-fuse"  # FuseJobConfig.job_name default: the `job` tag of every metric
SUBMISSION = "maugif-fuse-dashboard-test"


def _metric_families() -> set[str]:
    from pipeline.fuse.job_metrics import METRIC_NAMES

    return set(METRIC_NAMES)


def _exprs(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_grafana_dashboard_charts_every_job_metric():
    dashboard = json.loads(GRAFANA.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all("gridPos" in panel for panel in dashboard["panels"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    used = set()
    for title, expr in _exprs(dashboard):
        names = set(re.findall(r"ray_(maugif_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", expr))
        assert names, f"panel {title!r} queries no job metric: {expr}"
        assert names <= _metric_families(), f"panel {title!r} queries unknown metrics {names - _metric_families()}"
        assert 'job=~"$job"' in expr, f"panel {title!r} ignores the job variable"
        used |= names
    assert used == _metric_families(), f"metrics without a panel: {_metric_families() - used}"


# ------------------------------------------------------------------------------------- a token-auth cluster


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """The cluster, a Prometheus scraping it (when installed), and one finished batch_fuse job."""
    from testsupport.sample_pairs import write_crop_pairs

    data = tmp_path_factory.mktemp("dashboard")
    manifest = write_crop_pairs(data / "pairs", 12, size=64, seed=2)
    # One pair whose image is missing: it must show up as a failed pair (stage read), not kill the job.
    manifest.write_text(manifest.read_text() + f"broken,{data}/missing_a.png,{data}/missing_b.png,mff\n")
    with TokenCluster() as cluster:
        prometheus = None
        if PrometheusServer.available():
            prometheus = PrometheusServer(metrics_endpoints(cluster.dashboard_url, cluster.token)).start()
        try:
            out = data / "fused"
            cluster.submit(
                [
                    "python", "jobs/batch_fuse.py", "--input", str(manifest), "--output", str(out),
                    "--set", "failures.max_fraction=0.2",
                ],
                SUBMISSION,
            )  # fmt: skip
            seen: list[str] = []
            record = cluster.wait_job(SUBMISSION, timeout=600, on_poll=lambda r: seen.append(r["status"]))
            yield {
                "cluster": cluster,
                "record": record,
                "statuses": seen,
                "out": out,
                "prometheus": prometheus,
            }
        finally:
            if prometheus is not None:
                prometheus.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dashboard_and_job_api_demand_the_token(token_cluster):
    cluster = token_cluster["cluster"]
    url = cluster.dashboard_url
    assert dashboard_get(f"{url}/api/version")[0] == 401
    assert dashboard_get(f"{url}/api/version", "not-the-token")[0] in (401, 403)
    assert dashboard_get(f"{url}/api/version", cluster.token)[0] == 200
    # `ray get-auth-token` prints the token the CLI will send.
    printed = cluster.ray("get-auth-token")
    assert printed.returncode == 0 and printed.stdout.strip() == cluster.token
    # The CLI without token mode is refused; with it, it lists the job.
    refused = cluster.ray("job", "list", "--address", url, env=cluster.client_env(RAY_AUTH_MODE="disabled"))
    assert refused.returncode != 0
    listed = cluster.ray("job", "list", "--address", url)
    assert listed.returncode == 0 and SUBMISSION in listed.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_job_followed_to_succeeded_through_the_rest_api(token_cluster):
    record = token_cluster["record"]
    assert record["status"] == "SUCCEEDED", record
    assert record["entrypoint"].startswith("python jobs/batch_fuse.py")
    assert set(token_cluster["statuses"]) <= {"PENDING", "RUNNING", "SUCCEEDED"}
    summary = json.loads((token_cluster["out"] / "_summary.json").read_text())
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (12, 1)
    assert len(list(token_cluster["out"].glob("*.png"))) == 12


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_custom_metrics_on_the_metrics_agent_endpoint(token_cluster):
    cluster = token_cluster["cluster"]
    summary = json.loads((token_cluster["out"] / "_summary.json").read_text())
    endpoints = metrics_endpoints(cluster.dashboard_url, cluster.token)
    assert endpoints and all(re.match(r"http://[\d.]+:\d+/metrics$", e) for e in endpoints)

    def complete() -> dict | None:
        samples = [s for endpoint in endpoints for s in scrape(endpoint)]
        totals = job_metric_totals(samples, JOB_TAG)
        return (samples, totals) if totals.get("ray_maugif_pairs_written") == 12 else None

    samples, totals = wait_for(complete, 90, interval=2, what="job metrics on the Prometheus endpoint")
    assert totals["ray_maugif_pairs_read"] == 12
    assert totals["ray_maugif_pairs_fused"] == 12
    assert totals["ray_maugif_pairs_failed"] == 1
    failed = [s for s in samples if s.name.startswith("ray_maugif_pairs_failed") and s.labels.get("job") == JOB_TAG]
    assert {s.labels["stage"] for s in failed} == {"read"}
    assert totals["ray_maugif_bytes_read"] > 0
    assert totals["ray_maugif_bytes_written"] == summary["bytes_out"]
    # The latency histogram: per stage, cumulative buckets ending in +Inf == count.
    assert totals["ray_maugif_stage_seconds_count{read}"] == 12
    for stage in {s.labels["stage"] for s in samples if s.name == "ray_maugif_stage_seconds_bucket"}:
        buckets: dict[float, float] = {}
        for s in samples:
            if s.name == "ray_maugif_stage_seconds_bucket" and s.labels.get("stage") == stage:
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
        counts = [buckets[le] for le in sorted(buckets)]
        assert counts == sorted(counts) and counts[-1] == totals[f"ray_maugif_stage_seconds_count{{{stage}}}"]
    assert parse_prometheus('x_total{a="b",c="d \\"e\\""} 3.5\n# c\n')[0].labels == {
        "a": "b",
        "c": 'd \\"e\\"',
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grafana_panels_query_a_real_prometheus(token_cluster):
    prometheus = token_cluster["prometheus"]
    if prometheus is None:
        pytest.skip("Debian's prometheus is not installed (apt-get install prometheus)")
    dashboard = json.loads(GRAFANA.read_text())

    def value(expr: str) -> float | None:
        result = prometheus.query(expr.replace("$job", ".*").replace("$__rate_interval", "5m"))
        return sum(float(r["value"][1]) for r in result) if result else None

    wait_for(lambda: value('sum(ray_maugif_pairs_written_total{job=~"$job"})') == 12, 60, what="prometheus scrape")
    for title, expr in _exprs(dashboard):
        result = value(expr)
        assert result is not None, f"panel {title!r} returns no data: {expr}"
    stats = {p["title"]: p["targets"][0]["expr"] for p in dashboard["panels"] if p["type"] == "stat"}
    assert value(stats["Pairs fused"]) == 12 and value(stats["Pairs failed"]) == 1
    assert value(stats["Failed fraction"]) == pytest.approx(1 / 13)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_headless_chromium_screenshots_of_the_authenticated_dashboard(token_cluster, tmp_path):
    if find_chromium() is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    cluster = token_cluster["cluster"]
    shots = capture_pages(
        [
            (f"{cluster.dashboard_url}/#/jobs", tmp_path / "jobs.png"),
            (f"{cluster.dashboard_url}/#/jobs/{SUBMISSION}", tmp_path / "job.png"),
        ],
        token=cluster.token,
    )
    (jobs_png, jobs_text), (job_png, job_text) = shots
    assert _png_size(jobs_png) == (1400, 900) and _png_size(job_png) == (1400, 900)
    # Rendered with data, not a token prompt: the job table lists the job, the job page shows its state.
    assert SUBMISSION in jobs_text and "SUCCEEDED" in jobs_text
    assert "SUCCEEDED" in job_text and "batch_fuse.py" in job_text
    assert "authentication token" not in (jobs_text + job_text).lower()
