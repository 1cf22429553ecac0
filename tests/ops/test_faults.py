"""Faults an operator meets, each injected for real and each checked against a clean run.

* a worker node removed while ``batch_fuse`` runs (``ray.cluster_utils.Cluster`` in a subprocess);
* the S3 endpoint gone for ~10 s mid-job (a loopback proxy in front of moto stops listening);
* the driver killed mid-job (SIGKILL), then the same command rerun, outputs on S3;
* S3 answering ``503 SlowDown`` for a while (the proxy throttles before forwarding).

"Exactly once" means: every pair's output exists once under its final name, with the bytes of a clean run (the
pipeline is deterministic on CPU), and no other object is visible under the output prefix but the manifest, the
saved config and the summary (after a SIGKILL, also the ``<name>.tmp-<uuid>`` objects of uploads the killed
processes had in flight: never under a final name). Training node loss is covered by
tests/pipeline/train/test_training.py::test_worker_node_killed_mid_training_resumes_and_finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testsupport.local_ray import SMALL_STEPS, isolated_ray_env, kill_processes_mentioning, private_ray_tmpdir
from testsupport.node_loss import run_node_loss
from testsupport.s3_proxy import S3FaultProxy
from testsupport.sample_pairs import write_crop_pairs

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB = str(REPO_ROOT / "jobs" / "batch_fuse.py")
N_PAIRS = 96
META = ("_manifest/", "_summary.json")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_crop_pairs(tmp_path_factory.mktemp("fault-pairs"), N_PAIRS, size=64, seed=7)


@pytest.fixture(scope="module")
def reference(pairs, tmp_path_factory) -> dict[str, str]:
    """pair_id → sha256 of its output in a clean, fault-free run."""
    out = tmp_path_factory.mktemp("reference") / "fused"
    with private_ray_tmpdir() as ray_tmp:
        run = subprocess.run(
            [sys.executable, JOB, "--input", str(pairs), "--output", str(out), *SMALL_STEPS],
            env=isolated_ray_env(ray_tmp),
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    outputs = {p.stem: _sha(p.read_bytes()) for p in out.glob("*.png")}
    assert len(outputs) == N_PAIRS
    return outputs


# ------------------------------------------------------------------------------------------- S3 plumbing


@pytest.fixture
def s3_pairs(s3_server, s3_bucket, pairs) -> tuple[str, str]:
    """The pairs uploaded to a fresh bucket (directly to moto); returns (manifest URI, bucket)."""
    return _upload_pairs(s3_server, s3_bucket, pairs)


def _upload_pairs(s3_server: str, s3_bucket: str, pairs: Path) -> tuple[str, str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    lines = pairs.read_text().splitlines()
    rows = [lines[0]]
    for line in lines[1:]:
        pair_id, uri_a, uri_b, task = line.split(",")
        for uri in (uri_a, uri_b):
            s3.put_object(Bucket=s3_bucket, Key=f"in/{Path(uri).name}", Body=Path(uri).read_bytes())
        rows.append(f"{pair_id},{Path(uri_a).name},{Path(uri_b).name},{task}")
    s3.put_object(Bucket=s3_bucket, Key="in/pairs.csv", Body=("\n".join(rows) + "\n").encode())
    return f"s3://{s3_bucket}/in/pairs.csv", s3_bucket


@pytest.fixture
def proxy(s3_server):
    with S3FaultProxy(s3_server) as proxy:
        yield proxy


def _keys(s3_server: str, bucket: str, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    return [
        obj["Key"][len(prefix) :]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]


def _objects(s3_server: str, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under the prefix, read directly from moto (not through the fault proxy)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    return {k: s3.get_object(Bucket=bucket, Key=prefix + k)["Body"].read() for k in _keys(s3_server, bucket, prefix)}


_ORPHAN_TEMP = re.compile(r"^(?P<final>[^/]+)\.tmp-[0-9a-f]{32}$")


def _assert_exactly_once(
    objects: dict[str, bytes], reference: dict[str, str], *, orphan_temps_allowed: bool = False
) -> None:
    """Every output once under its final name with the bytes of the clean run; nothing else but the metadata.

    With ``orphan_temps_allowed`` (a killed process cannot remove the temp object of an upload it had in flight),
    ``<final name>.tmp-<uuid>`` objects may remain, but only next to a final object that is complete.
    """
    orphans = {name: m["final"] for name in objects if (m := _ORPHAN_TEMP.match(name))}
    if orphans:
        assert orphan_temps_allowed, f"temporary objects left under the output prefix: {sorted(orphans)}"
        assert set(orphans.values()) <= set(objects), f"temp objects without a final object: {orphans}"
        print(f"orphaned temp objects of the killed run: {sorted(orphans)}")
    outputs = {name: data for name, data in objects.items() if not name.startswith(META) and name not in orphans}
    assert sorted(outputs) == sorted(f"{pair_id}.png" for pair_id in reference), "missing or extra objects"
    assert {name[: -len(".png")]: _sha(data) for name, data in outputs.items()} == reference


def _start_job(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, JOB, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_outputs(count_fn, at_least: int, job: subprocess.Popen, timeout: float = 400) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        n = count_fn()
        if n >= at_least:
            return n
        time.sleep(0.2)
    raise AssertionError(f"job ended or stalled before {at_least} outputs:\n{job.stdout.read()[-4000:]}")


def _s3_outputs(s3_server: str, bucket: str, prefix: str) -> int:
    import boto3

    page = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sum(1 for obj in page.get("Contents", []) if obj["Key"].endswith(".png"))


# ----------------------------------------------------------------------------------------- the proxy itself


def test_fault_proxy_throttles_then_forwards_and_goes_down(s3_server, s3_bucket):
    import boto3
    import botocore.config
    import botocore.exceptions

    with S3FaultProxy(s3_server) as proxy:
        client = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 6}),
        )
        proxy.slowdown(requests=3)
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"x" * 70_000)  # 3 x 503 SlowDown, then forwarded
        assert proxy.count("slowdown") == 3
        assert [r.outcome for r in proxy.records if r.method == "PUT"] == ["slowdown"] * 3 + ["forwarded"]
        assert client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"x" * 70_000
        no_retry = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        proxy.slowdown(requests=1)
        with pytest.raises(botocore.exceptions.ClientError, match="SlowDown"):  # S3's error code, from the XML body
            no_retry.get_object(Bucket=s3_bucket, Key="k")
        with proxy.outage(), pytest.raises(botocore.exceptions.EndpointConnectionError):
            no_retry.head_object(Bucket=s3_bucket, Key="k")
        assert no_retry.head_object(Bucket=s3_bucket, Key="k")["ContentLength"] == 70_000  # back, same port


# ------------------------------------------------------------------------------------------------ S3 faults


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_slowdown_is_retried_with_jitter_and_the_job_completes(s3_server, s3_pairs, proxy, reference):
    manifest, bucket = s3_pairs
    out = f"s3://{bucket}/slowdown"
    with private_ray_tmpdir() as ray_tmp:
        proxy.slowdown(requests=8)  # the driver's first requests (manifest, saved config, resume check) throttled
        job = _start_job(
            ["--input", manifest, "--output", out, *SMALL_STEPS], isolated_ray_env(ray_tmp, AWS_ENDPOINT_URL=proxy.url)
        )
        _wait_outputs(lambda: _s3_outputs(s3_server, bucket, "slowdown/"), 4, job)
        mid_job = len(proxy.records)
        proxy.slowdown(seconds=8)  # then every request for 8 s: the workers' reads, writes and manifest parts
        output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-4000:]
    throttled = [r for r in proxy.records if r.outcome == "slowdown"]
    assert len(throttled) > 8 and any(r.outcome == "slowdown" for r in proxy.records[mid_job:])
    # Throttled requests were retried and then served...
    served = {(r.method, r.path) for r in proxy.records if r.outcome == "forwarded" and r.at > throttled[-1].at}
    assert {(r.method, r.path) for r in throttled} & served
    # ... after jittered backoff: the gaps between retries of the same request are not one fixed delay.
    by_request: dict[tuple[str, str], list[float]] = {}
    for r in proxy.records:
        by_request.setdefault((r.method, r.path), []).append(r.at)
    gaps = [
        round(b - a, 2)
        for times in by_request.values()
        if len(times) > 2
        for a, b in zip(times, times[1:], strict=False)
    ]
    assert len(set(gaps)) > 1
    _assert_exactly_once(_objects(s3_server, bucket, "slowdown/"), reference)
    summary = json.loads(_objects(s3_server, bucket, "slowdown/")["_summary.json"])
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (N_PAIRS, 0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_s3_slowdown_on_a_fraction_of_puts_is_counted_in_the_summary(s3_server, s3_bucket, proxy, tmp_path):
    """503 SlowDown on 30% of PUTs for a whole 40-pair job: it completes, every output exists exactly once under
    its final name, and the summary and console count the retries (botocore's and whole-operation ones)."""
    n_pairs = 40
    manifest, bucket = _upload_pairs(s3_server, s3_bucket, write_crop_pairs(tmp_path, n_pairs, size=32, seed=3))
    out = f"s3://{bucket}/throttled"
    with private_ray_tmpdir() as ray_tmp:
        proxy.slowdown(put_fraction=0.3, seed=1)
        job = _start_job(
            ["--input", manifest, "--output", out, *SMALL_STEPS], isolated_ray_env(ray_tmp, AWS_ENDPOINT_URL=proxy.url)
        )
        output, _ = job.communicate(timeout=500)
        proxy.slowdown()
    assert job.returncode == 0, output[-4000:]
    throttled = proxy.count("slowdown")
    assert throttled > 0 and all(r.method == "PUT" for r in proxy.records if r.outcome == "slowdown")
    objects = _keys(s3_server, bucket, "throttled/")
    outputs = [k for k in objects if not k.startswith(META)]
    assert sorted(outputs) == [f"pair{i:04d}.png" for i in range(n_pairs)], outputs  # no temp object left
    summary = json.loads(_objects(s3_server, bucket, "throttled/")["_summary.json"])
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (n_pairs, 0)
    # Each 503 is retried once, by botocore (its RetryAttempts) or by call_with_retries: the count never exceeds
    # the 503s answered, and misses only those of the writes after the summary was built (the summary itself).
    assert 0.8 * throttled <= summary["storage_retries"] <= throttled, (summary["storage_retries"], throttled)
    assert f"storage: {summary['storage_retries']} operation(s) retried" in output


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_outage_mid_job_then_everything_exactly_once(s3_server, s3_pairs, proxy, reference):
    manifest, bucket = s3_pairs
    out = f"s3://{bucket}/outage"
    args = ["--input", manifest, "--output", out, *SMALL_STEPS, "--set", "failures.max_fraction=1.0"]
    with private_ray_tmpdir() as ray_tmp:
        env = isolated_ray_env(ray_tmp, AWS_ENDPOINT_URL=proxy.url)
        job = _start_job(args, env)
        before = _wait_outputs(lambda: _s3_outputs(s3_server, bucket, "outage/"), 4, job)
        with proxy.outage():
            time.sleep(10)
            assert _s3_outputs(s3_server, bucket, "outage/") < N_PAIRS
        output, _ = job.communicate(timeout=600)
        returncode, runs = job.returncode, 1
        summary = json.loads(_objects(s3_server, bucket, "outage/").get("_summary.json") or b"{}")
        # Either the retries rode out the outage, or the job said which pairs failed (or exited non-zero with a
        # message) and rerunning the same command completes the rest.
        while returncode != 0 or summary.get("pairs_failed", 0) > 0:
            assert returncode == 0 or "failed" in output.lower(), f"no clear failure message:\n{output[-4000:]}"
            assert runs < 3, output[-4000:]
            rerun = subprocess.run([sys.executable, JOB, *args], env=env, capture_output=True, text=True, timeout=600)
            output, returncode, runs = rerun.stdout + rerun.stderr, rerun.returncode, runs + 1
            summary = json.loads(_objects(s3_server, bucket, "outage/")["_summary.json"])
    print(f"S3 outage of 10 s: {'completed by retries' if runs == 1 else f'completed after {runs - 1} rerun(s)'}")
    assert before < N_PAIRS
    _assert_exactly_once(_objects(s3_server, bucket, "outage/"), reference)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_driver_killed_mid_job_rerun_fuses_only_the_rest(s3_server, s3_pairs, proxy, reference):
    from pipeline import schema as S
    from pipeline.io.manifest import read_manifest

    manifest, bucket = s3_pairs
    out = f"s3://{bucket}/killed"
    args = ["--input", manifest, "--output", out, *SMALL_STEPS]
    with private_ray_tmpdir() as ray_tmp:
        env = isolated_ray_env(ray_tmp, AWS_ENDPOINT_URL=proxy.url)
        job = _start_job(args, env)
        _wait_outputs(lambda: _s3_outputs(s3_server, bucket, "killed/"), 8, job)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        kill_processes_mentioning(ray_tmp)  # the killed driver's own Ray instance
        time.sleep(2)  # writes the killed workers had in flight on the server side settle
        first = {name[: -len(".png")] for name in _keys(s3_server, bucket, "killed/") if name.endswith(".png")}
        assert 8 <= len(first) < N_PAIRS, "the driver should have been killed mid-job"
        rerun = subprocess.run([sys.executable, JOB, *args], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    _assert_exactly_once(_objects(s3_server, bucket, "killed/"), reference, orphan_temps_allowed=True)
    records = read_manifest(out).to_pylist()
    last_run = max(r["run_id"] for r in records)
    second = [r[S.PAIR_ID] for r in records if r["run_id"] == last_run and r[S.STATUS] == S.STATUS_OK]
    assert len(second) == len(set(second))
    assert set(second) == set(reference) - first  # nothing fused twice: the rerun did exactly the rest


# -------------------------------------------------------------------------------------------- node loss


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_worker_node_removed_during_batch_fuse_every_output_exactly_once(pairs, reference, tmp_path):
    out = tmp_path / "fused"
    result = run_node_loss(pairs, out, delay_s=0.0)
    assert result["removed"], "the job finished before the node could be removed"
    assert result["outputs_at_removal"] < N_PAIRS
    assert result["victim_hosted_fusion_actor"], "the removed node should be the one running the fusion actor"
    assert result["error"] is None, result["error"]
    assert (result["ok"], result["failed"]) == (N_PAIRS, 0)
    assert {p.stem: _sha(p.read_bytes()) for p in out.glob("*.png")} == reference
    assert not [p for p in out.iterdir() if p.suffix != ".png" and p.name not in ("_manifest", "_summary.json")]
    print(f"node loss: first output {result['recovery_s']:.1f} s after the removal; job {result['elapsed_s']:.1f} s")
