"""S3 at scale under faults (issue 18): N pairs fused to ``s3://`` through a fault proxy, every output checked.

    python benchmarks/bench_s3_faults.py --pairs 100000 [--put-slowdown 0.02] [--outage-at 0.5 --outage-s 10]
        [--key-shards 16] [--input-on-s3] [--set fusion.num_actors=2 ...]

A real S3 API server (moto's ``moto_server``, its own process on 127.0.0.1) sits behind
:class:`testsupport.s3_proxy.S3FaultProxy` (in this process), which answers ``503 SlowDown`` to a seeded random
fraction of PUTs for the whole run and, once ``--outage-at`` of the outputs are committed, stops listening for
``--outage-s`` seconds (connections refused and dropped) before coming back on the same port. The job runs as a
user runs it (``python jobs/batch_fuse.py --input … --output s3://… --task mff --address <head>``) against a Ray head
of this script's own (:class:`ray_head.RayHead`) whose workers see only the proxy (``AWS_ENDPOINT_URL``).

Input: :func:`bench_million.build`'s Parquet manifest of N ids over 200 distinct 32² crops of the bundled MFI-WHU
samples, read from local disk, or with ``--input-on-s3`` uploaded (the 200 pairs and the manifest) and read through
the proxy too. If the job exits non-zero or records failed pairs, the same command is rerun (at most twice) and the
reruns are counted: the bar is that none is needed.

Check (directly against moto, not through the proxy): every id has exactly one object, at its key-shard prefix;
no other object under the output prefix besides ``_manifest/``, ``_summary.json`` and the STAC files; no temporary
object; per the manifest every id is ``ok`` exactly once over all runs. The summary's ``storage_retries`` is printed
next to the 503s the proxy answered. Results: ``<work>/result-s3-<N>.json`` and a Markdown block on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
BIN = Path(sys.executable).parent

from bench_million import build, job_env, load_average, manifest_path, result_header  # noqa: E402
from ray_head import RayHead, free_port  # noqa: E402

from testsupport.s3_proxy import S3FaultProxy  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
METADATA = ("_manifest/", "_summary.json", "collection.json", "_key_shards.json")


class MotoServer:
    """``moto_server`` in its own process on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **CREDENTIALS),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit(f"moto_server did not start on {self.url}: see {log}") from None
                time.sleep(0.3)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, **_boto_credentials())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def _boto_credentials() -> dict:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def upload_input(s3, bucket: str, manifest: Path) -> str:
    """The 200 distinct pair images and the Parquet manifest (URIs relative to it) under ``s3://bucket/in/``."""
    for image in sorted(manifest.parent.glob("*.png")):
        s3.put_object(Bucket=bucket, Key=f"in/{image.name}", Body=image.read_bytes())
    s3.put_object(Bucket=bucket, Key=f"in/{manifest.name}", Body=manifest.read_bytes())
    return f"s3://{bucket}/in/{manifest.name}"


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    return [
        obj["Key"][len(prefix) :]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]


class Watcher:
    """Counts committed outputs from the proxy's record (PUTs of final ``.png`` keys answered 2xx), takes the endpoint
    down for ``outage_s`` once ``outage_at`` of them are in, and samples the driver's RSS."""

    def __init__(self, proxy: S3FaultProxy, out_prefix: str, outage_at: int, outage_s: float) -> None:
        self.proxy, self.out_prefix = proxy, out_prefix
        self.outage_at, self.outage_s = outage_at, outage_s
        self.outage: dict | None = None
        self.driver_peak_mb = 0.0
        self._seen = 0
        self._committed = 0
        self._stop = threading.Event()

    def committed(self) -> int:
        records = self.proxy.records
        for r in records[self._seen : len(records)]:
            final = r.path.endswith(".png") and ".tmp-" not in r.path and self.out_prefix in r.path
            if r.method == "PUT" and 200 <= r.status < 300 and final:
                self._committed += 1
        self._seen = len(records)
        return self._committed

    def run(self, job: subprocess.Popen, started: float) -> None:
        import psutil

        try:
            driver = psutil.Process(job.pid)
        except psutil.NoSuchProcess:
            return
        while job.poll() is None and not self._stop.is_set():
            try:
                self.driver_peak_mb = max(self.driver_peak_mb, driver.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                break
            if self.outage is None and self.outage_at and self.committed() >= self.outage_at:
                at = time.time() - started
                committed = self._committed
                with self.proxy.outage():
                    time.sleep(self.outage_s)
                self.outage = {"at_s": round(at, 1), "outputs_before": committed, "seconds": self.outage_s}
            time.sleep(1.0)


def run_job(cmd: list[str], env: dict, log: Path, watcher: Watcher | None) -> dict:
    started = time.time()
    with open(log, "w") as handle:
        job = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        if watcher is not None:
            thread = threading.Thread(target=watcher.run, args=(job, started), daemon=True)
            thread.start()
        returncode = job.wait()
        if watcher is not None:
            thread.join(timeout=watcher.outage_s + 5)
    return {"seconds": round(time.time() - started, 1), "returncode": returncode, "log": str(log)}


def check(s3, bucket: str, prefix: str, ids: list[str], key_shards: int, output: str, moto_url: str) -> dict:
    """Every id exactly once at its shard, nothing else, and ``ok`` exactly once in the manifest."""
    import pyarrow.compute as pc

    from pipeline.io.key_shards import shard_name
    from pipeline.io.manifest import read_manifest

    keys = list_keys(s3, bucket, prefix)
    outputs = [k for k in keys if not k.startswith(METADATA) and "/_manifest/" not in k]
    expected = {(f"{shard_name(i, key_shards)}/" if key_shards > 1 else "") + f"{i}.png" for i in ids}
    found = set(outputs)
    temps = [k for k in outputs if ".tmp-" in k]
    saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=moto_url)  # read the manifest directly, not via the proxy
    try:
        rows = read_manifest(output, columns=["pair_id", "status"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    ok = rows.filter(pc.equal(rows.column("status"), "ok")).column("pair_id")
    counts = pc.value_counts(ok)
    ok_twice = [c["values"].as_py() for c in counts if c["counts"].as_py() > 1]
    ok_ids = set(ok.to_pylist())
    result = {
        "objects under the output prefix": len(keys),
        "outputs": len(outputs),
        "missing": len(expected - found),
        "extra": len(found - expected),
        "duplicated keys": len(outputs) - len(found),
        "temporary objects": len(temps),
        "manifest rows": rows.num_rows,
        "ids ok in the manifest": len(ok_ids & set(ids)),
        "ids ok twice": len(ok_twice),
        "examples": {
            "missing": sorted(expected - found)[:5],
            "extra": sorted(found - expected)[:5],
            "ok twice": ok_twice[:5],
        },
    }
    result["ok"] = (
        not result["missing"]
        and not result["extra"]
        and not result["duplicated keys"]
        and not temps
        and len(ok_ids & set(ids)) == len(ids)
        and not ok_twice
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", default="/tmp/maugif-million")
    parser.add_argument("--put-slowdown", type=float, default=0.02, help="Fraction of PUTs answered 503 SlowDown.")
    parser.add_argument("--outage-at", type=float, default=0.5, help="Outage once this fraction is committed.")
    parser.add_argument("--outage-s", type=float, default=10.0, help="Seconds the endpoint stays down.")
    parser.add_argument("--key-shards", type=int, default=16, help="output.key_shards of the job (0: none).")
    parser.add_argument("--input-on-s3", action="store_true", help="Read the pairs from S3 through the proxy too.")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--set", action="append", default=[], help="Passed to the job as --set (repeatable).")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = manifest_path(work, args.pairs, args.size)
    if not manifest.exists():
        build(work, args.pairs, args.size)
    import pyarrow.parquet as pq

    ids = pq.read_table(manifest, columns=["pair_id"]).column(0).to_pylist()
    result = result_header(args.pairs, args.size)
    moto = MotoServer(work / f"moto-{args.pairs}.log")
    bucket = "bench-s3-faults"
    prefix = f"out-{args.pairs}/"
    output = f"s3://{bucket}/{prefix.rstrip('/')}"
    head = None
    try:
        s3 = moto.client()
        s3.create_bucket(Bucket=bucket)
        source = upload_input(s3, bucket, manifest) if args.input_on_s3 else str(manifest)
        with S3FaultProxy(moto.url) as proxy:
            env = dict(job_env(), **CREDENTIALS, AWS_ENDPOINT_URL=proxy.url)
            head = RayHead(work, args.num_cpus, None, env)
            cmd = [sys.executable, "jobs/batch_fuse.py", "--input", source, "--output", output, "--task", "mff"]
            cmd += ["--address", head.address, "-v", "--set", f"output.key_shards={args.key_shards}"]
            cmd += [a for item in args.set for a in ("--set", item)]
            proxy.slowdown(put_fraction=args.put_slowdown, seed=1)
            watcher = Watcher(proxy, prefix, int(args.outage_at * args.pairs), args.outage_s)
            t0 = time.time()
            runs = [run_job(cmd, env, work / f"s3-{args.pairs}-run1.log", watcher)]
            summaries = []
            while True:
                summary = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}_summary.json")["Body"].read())
                summaries.append(summary)
                if (runs[-1]["returncode"] == 0 and not summary.get("pairs_failed")) or len(runs) == 3:
                    break
                runs.append(run_job(cmd, env, work / f"s3-{args.pairs}-run{len(runs) + 1}.log", None))
            wall = time.time() - t0
            proxy.slowdown()
            slowdowns = proxy.count("slowdown")
            requests = len(proxy.records)
        result["check"] = check(s3, bucket, prefix, ids, args.key_shards, output, moto.url)
    finally:
        if head is not None:
            head.stop()
        moto.stop()
    first = summaries[0]
    result["runs"] = runs
    result["outage"] = watcher.outage
    result["totals"] = {
        "wall s (all runs)": round(wall, 1),
        "pairs/s": round(args.pairs / wall, 1),
        "reruns needed": len(runs) - 1,
        "run 1 exit code": runs[0]["returncode"],
        "run 1 pairs ok / failed": f"{first.get('pairs_ok')} / {first.get('pairs_failed')}",
        "requests through the proxy": requests,
        "503 SlowDown answered": slowdowns,
        "storage_retries (summaries)": " + ".join(str(s.get("storage_retries")) for s in summaries),
        "outage": (
            f"{watcher.outage['seconds']:.0f} s at {watcher.outage['at_s']} s, after "
            f"{watcher.outage['outputs_before']:,} outputs"
            if watcher.outage
            else "none (the job finished first)"
        ),
        "driver peak RSS (MB)": round(watcher.driver_peak_mb, 1),
        "check": "PASS" if result["check"]["ok"] else "FAIL",
    }
    result["load_after"] = load_average()
    path = work / f"result-s3-{args.pairs}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    lines = [
        f"**{args.pairs:,} pairs of {args.size}² to S3 (moto) through the fault proxy**, {result['date']}, "
        f"{result['machine']}; load average before {result['load_before']}, after {result['load_after']}.",
        "",
        f"`{result['command']}`",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in result["totals"].items()),
        "",
        "check: " + json.dumps({k: v for k, v in result["check"].items() if k != "examples"}),
    ]
    print("\n".join(lines))
    print(f"\nresult: {path}")
    return 0 if result["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
