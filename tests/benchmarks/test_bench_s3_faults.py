"""benchmarks/bench_s3_faults.py's verdict against a real S3 server: it passes an exactly-once output and catches a
missing, an extra, a temporary and a twice-``ok`` pair; its watcher counts committed outputs from the proxy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_s3_faults.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_s3_faults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_passes_exactly_once_and_catches_each_fault(bench, s3_server, s3_bucket):
    import boto3

    from pipeline.io.key_shards import shard_name
    from pipeline.io.manifest import ManifestWriter, make_record

    s3 = boto3.client("s3", endpoint_url=s3_server)
    ids = [f"pair{i:06d}" for i in range(12)]
    output = f"s3://{s3_bucket}/out"
    for pair_id in ids:
        s3.put_object(Bucket=s3_bucket, Key=f"out/{shard_name(pair_id, 4)}/{pair_id}.png", Body=b"png")
    s3.put_object(Bucket=s3_bucket, Key="out/_summary.json", Body=b"{}")
    with ManifestWriter(output, "run-1") as manifest:
        manifest.add_many(make_record(i, "ok") for i in ids)
    verdict = bench.check(s3, s3_bucket, "out/", ids, 4, output, s3_server)
    assert verdict["ok"] and verdict["outputs"] == 12 and verdict["ids ok in the manifest"] == 12, verdict

    s3.delete_object(Bucket=s3_bucket, Key=f"out/{shard_name(ids[0], 4)}/{ids[0]}.png")
    s3.put_object(Bucket=s3_bucket, Key="out/stray.png", Body=b"x")  # not at its shard: extra
    s3.put_object(Bucket=s3_bucket, Key=f"out/{shard_name(ids[1], 4)}/{ids[1]}.png.tmp-{'0' * 32}", Body=b"x")
    with ManifestWriter(output, "run-2") as manifest:
        manifest.add(make_record(ids[2], "ok"))  # fused twice
    verdict = bench.check(s3, s3_bucket, "out/", ids, 4, output, s3_server)
    assert not verdict["ok"]
    assert (verdict["missing"], verdict["temporary objects"], verdict["ids ok twice"]) == (1, 1, 1), verdict
    assert verdict["extra"] == 2  # stray.png and the temporary object
    assert verdict["examples"]["missing"] == [f"{shard_name(ids[0], 4)}/{ids[0]}.png"]


def test_watcher_counts_final_output_puts_only(bench, s3_server):
    from testsupport.s3_proxy import RequestRecord

    class Records:  # the watcher reads only ``records``
        records = [
            RequestRecord(0.0, "PUT", "/b/out/3/p1.png", "forwarded", 200),
            RequestRecord(0.0, "PUT", "/b/out/3/p2.png.tmp-abc", "forwarded", 200),
            RequestRecord(0.0, "PUT", "/b/out/3/p3.png", "slowdown", 503),
            RequestRecord(0.0, "PUT", "/b/other/p4.png", "forwarded", 200),
            RequestRecord(0.0, "GET", "/b/out/3/p5.png", "forwarded", 200),
        ]

    watcher = bench.Watcher(Records(), "out/", outage_at=0, outage_s=0)
    assert watcher.committed() == 1
    Records.records.append(RequestRecord(0.0, "PUT", "/b/out/0/p6.png", "forwarded", 200))
    assert watcher.committed() == 2  # incremental: earlier records are not counted again
