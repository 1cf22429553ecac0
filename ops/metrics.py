"""Reading a job's custom metrics where Prometheus reads them: each node's metrics agent endpoint.

``ray.util.metrics`` counters and histograms recorded in workers are exported by the metrics agent of the node
the worker ran on, in Prometheus text format, with a ``ray_`` prefix (``maugif_pairs_fused`` →
``ray_maugif_pairs_fused``; counters may carry Prometheus' ``_total`` suffix). The agent's port is
``metrics_export_port`` of the node, listed by the dashboard's node API.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

__all__ = ["dashboard_get", "Sample", "job_metric_totals", "metrics_endpoints", "parse_prometheus", "scrape"]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+([-+0-9.eEinfNa]+)(\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def dashboard_get(url: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """GET a dashboard REST URL with an optional bearer token; returns (status, parsed JSON or text)."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (comments and blank lines skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if match:
            labels = dict(_LABEL.findall(match.group(3) or ""))
            samples.append(Sample(match.group(1), labels, float(match.group(4))))
    return samples


def metrics_endpoints(dashboard_url: str, token: str | None = None) -> list[str]:
    """``http://<ip>:<metrics_export_port>/metrics`` of every alive node, from the dashboard's node summary."""
    status, body = dashboard_get(f"{dashboard_url}/nodes?view=summary", token)
    if status != 200:
        raise RuntimeError(f"node summary: HTTP {status}: {body}")
    urls = []
    for node in body["data"]["summary"]:
        raylet = node.get("raylet", {})
        if raylet.get("state", "ALIVE") == "ALIVE" and raylet.get("metricsExportPort"):
            urls.append(f"http://{node.get('ip') or raylet.get('nodeManagerAddress')}:{raylet['metricsExportPort']}")
    return [f"{u}/metrics" for u in urls]


def scrape(url: str, timeout: float = 10.0) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_prometheus(response.read().decode())


def job_metric_totals(samples: list[Sample], job: str, prefix: str = "ray_maugif_") -> dict[str, float]:
    """Sum of every ``prefix*`` series tagged ``job=<job>``, by name (``_total`` suffixes dropped); histogram
    ``_count``/``_sum`` series are kept per stage as ``<name>_count{stage}``."""
    totals: dict[str, float] = defaultdict(float)
    for sample in samples:
        if not sample.name.startswith(prefix) or sample.labels.get("job", job) != job:
            continue
        name = sample.name.removesuffix("_total")
        if name.endswith(("_count", "_sum")) and "stage" in sample.labels:
            name = f"{name}{{{sample.labels['stage']}}}"
        elif name.endswith("_bucket"):
            continue
        totals[name] += sample.value
    return dict(totals)
