"""A whole batch job at scale (issue 18): N pairs end to end, kill at half, resume, check every id; cost curve.

    python benchmarks/bench_million.py run --pairs 1000000 --kill-at 500000 [--set fusion.num_actors=2 ...]
    python benchmarks/bench_million.py check --pairs 1000000          # again, on what a run left under --work
    python benchmarks/bench_million.py run --pairs 200000 [--hand-loop]   # a cost-curve point; the hand loop
    python benchmarks/bench_million.py curve                          # one table of every result under --work

Input (``build``): :func:`bench_batch.make_pairs` writes 200 distinct ``size``² PNG pairs cropped from the bundled
MFI-WHU samples (``samples/mff``, real images) and a manifest of N pair ids ``pair000000`` ... reusing them, so every
pair does the same decode → fuse → encode → write work while the input stays small; the CSV is converted to a
Parquet manifest (pair_id, uri_a, uri_b, task; URIs relative to the manifest). Nothing is committed; everything is
under ``--work``.

``run`` starts its own Ray head (``ray start --head``, auth off on loopback, its own temp dir and ports) and launches
the job as a user would: ``python jobs/batch_fuse.py --input <manifest> --output <out> --task mff --address <head>``
plus ``--set`` overrides. A separate head keeps the driver's RSS free of the raylet and GCS, lets this script read
the object store and spill figures from the raylet (``ray memory --stats-only``'s source) during and after the run,
and survives the driver's SIGKILL for the rerun. Sampled: the driver's RSS and peak (``/proc``) every second; the
committed outputs (``os.scandir``, recursive, ``*.png`` without temp names) every ``max(1 s, 10 × listing time)``;
the object store every 5 s. ``--kill-at K`` SIGKILLs the driver when K outputs are counted, waits until the outputs
stop changing, snapshots them (name → mtime) and reruns the same command: the rerun's time to its first new output
(the output folders' mtimes polled, each change confirmed by a listing: the pre-flight's write probe also touches
the folder) is the resume diff plus start-up; the job's ``-v`` log dates the diff itself. Per window of ``--window``
completed pairs: pairs/s and the driver's peak RSS; the job's own per-window log lines (``-v``) are kept if present.

``check`` (also run after ``run``): every input id has exactly one output; no other outputs; per the job's manifest
(``pipeline.io.manifest.read_manifest``) no pair is ``ok`` twice; a pair without an ``ok`` row must carry the tool's
mark and a ``skipped`` row of a later run; a pair committed before the kill must not be rewritten (mtime) or ``ok``
in the rerun. Prints one verdict line; exit 1 on any missing, extra or duplicate.

Results: ``<work>/result-<N>-<size>[-hand<threads>].json`` and a Markdown table on stdout for benchmarks/RESULTS.md. The
pipeline's pairs/s is outputs over the job processes' wall time (start-up included, as a user waits for it); the hand
loop's excludes loading the model (``bench_batch.hand_loop``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
BIN = Path(sys.executable).parent
MB = 2**20

from ray_head import RayHead  # noqa: E402  (benchmarks/ is on sys.path above)


def manifest_path(work: Path, n: int, size: int) -> Path:
    return work / f"in-{size}" / f"pairs_{n}.parquet"


def build(work: Path, n: int, size: int) -> Path:
    """The Parquet manifest of n pairs of size² crops (and bench_batch's CSV of the same rows, for the hand loop)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    from bench_batch import make_pairs

    if n > 1_000_000:
        raise SystemExit(f"--pairs {n}: at most 1,000,000 (ids pair000000..pair999999 sort as text)")
    start = time.perf_counter()
    csv_path = make_pairs(work / f"in-{size}", n, size)
    columns = ("pair_id", "uri_a", "uri_b", "task")
    table = pcsv.read_csv(
        csv_path, convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()))
    )
    pq.write_table(table, manifest_path(work, n, size), row_group_size=50_000)
    print(f"built {n} pairs of {size}x{size} in {time.perf_counter() - start:.1f} s: {manifest_path(work, n, size)}")
    return manifest_path(work, n, size)


def walk_outputs(out: Path):
    """(pair id, path relative to ``out``, entry) of every committed ``*.png`` under ``out``, recursively
    (``_*``, ``.*`` and temp names skipped)."""
    stack, cut = [str(out)], len(str(out)) + 1
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.endswith(".png") and name[0] not in "_." and ".tmp-" not in name:
                    yield name[:-4], entry.path[cut:], entry
                elif name[0] not in "_." and entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def list_outputs(out: Path) -> dict[str, list]:
    """pair id → [[relative path, mtime_ns], ...] of the committed outputs."""
    found: dict[str, list] = {}
    for pair_id, rel, entry in walk_outputs(out):
        found.setdefault(pair_id, []).append([rel, entry.stat().st_mtime_ns])
    return found


def count_outputs(out: Path) -> tuple[int, float]:
    """(committed outputs, seconds the listing took)."""
    start = time.perf_counter()
    return sum(1 for _ in walk_outputs(out)), time.perf_counter() - start


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process in MB from /proc; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    return int(values.get("VmRSS", 0)) / 1024, int(values.get("VmHWM", 0)) / 1024


def job_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def dir_mtimes(folders: list[Path]) -> list[int]:
    return [f.stat().st_mtime_ns if f.exists() else 0 for f in folders]


def run_once(cmd: list[str], log: Path, out: Path, head: RayHead, kill_at: int, t0: float, tag: str) -> dict:
    """One driver process, sampled until it exits (or is killed at ``kill_at`` outputs)."""
    base, _ = count_outputs(out)
    folders = [out] + ([p for p in out.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))] if base else [])
    mtimes = dir_mtimes(folders)
    started = time.time()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=job_env(), cwd=REPO)
    samples, store = [], []
    first_new = first_listed = None
    count, listing_s, next_count, next_rss, next_store, killed = base, 0.0, 0.0, 0.0, 0.0, False
    while proc.poll() is None:
        now = time.time()
        if first_new is None and base and dir_mtimes(folders) != mtimes:  # a new output, or the pre-flight probe
            mtimes = dir_mtimes(folders)
            if count_outputs(out)[0] > base:
                first_new = now - started
        if now >= next_rss:
            rss, hwm = proc_memory_mb(proc.pid)
            samples.append({"t": now - t0, "run": tag, "rss_mb": rss, "hwm_mb": hwm})
            next_rss = now + 1.0
            if now >= next_count:
                count, listing_s = count_outputs(out)
                next_count = now + max(1.0, 10 * listing_s)
                samples[-1].update(count=count, listing_s=round(listing_s, 4))
                if count > base and first_listed is None:
                    first_listed = now - started
        if now >= next_store:
            try:
                store.append({"t": now - t0, "run": tag, **head.store_stats()})
            except Exception as e:  # the raylet busy or gone: note it, keep sampling the job
                store.append({"t": now - t0, "run": tag, "error": str(e)[:200]})
            next_store = now + 5.0
        if kill_at and count >= kill_at and not killed:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.1)
    ended = time.time()
    peak = max((s["hwm_mb"] for s in samples), default=0.0)
    final, _ = count_outputs(out)
    samples.append({"t": ended - t0, "run": tag, "rss_mb": 0.0, "hwm_mb": peak, "count": final})
    return {
        "tag": tag,
        "command": shlex.join(cmd),
        "returncode": proc.returncode,
        "killed": killed,
        "outputs_before": base,
        "outputs_at_exit": final,
        "start_s": started - t0,
        "seconds": ended - started,
        "first_new_output_s": first_new if base else first_listed,
        "first_new_listed_s": first_listed,
        "driver_peak_rss_mb": peak,
        "max_listing_s": max((s.get("listing_s", 0) for s in samples), default=0),
        "samples": samples,
        "store": store,
        **log_figures(log.read_text(errors="replace")),
    }


def log_figures(text: str) -> dict:
    """From the job's ``-v`` log: its per-window lines, and the resume diff (pre-flight passed → ``resume:`` line,
    Ray connection included)."""
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: "
    times = {}
    for key, pattern in (("preflight", "pre-flight passed"), ("resume", r"resume: \d+ pairs already done")):
        match = re.search(stamp + pattern, text, re.M)
        if match:
            times[key] = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    lines = [line for line in text.splitlines() if "window" in line.lower() and "pairs/s" in line]
    diff = times["resume"] - times["preflight"] if len(times) == 2 else None
    return {"window_log_lines": lines, "resume_diff_log_s": diff}


def settle(out: Path, quiet_s: float = 3.0, limit_s: float = 60.0) -> dict[str, list]:
    """The outputs once they have stopped changing (the killed job's last tasks may still commit)."""
    last, since, start = -1, time.time(), time.time()
    while time.time() - start < limit_s:
        n, _ = count_outputs(out)
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= quiet_s:
            break
        time.sleep(0.5)
    return list_outputs(out)


def windows(runs: list[dict], size: int) -> list[dict]:
    """Per run, per window of ``size`` completed pairs (global count): pairs/s and the driver's peak RSS in it.

    Counts are interpolated linearly between listings; a run's first point is (first new output, outputs before)."""
    rows = []
    for run in runs:
        t_first = run["start_s"] + (run["first_new_output_s"] or 0.0)
        points = [(t_first, run["outputs_before"])]
        points += [(s["t"], s["count"]) for s in run["samples"] if "count" in s and s["t"] >= t_first]
        end = points[-1][1]

        def cross(c: int, points: list = points) -> float:
            for (ta, ca), (tb, cb) in zip(points, points[1:], strict=False):
                if ca <= c <= cb and cb > ca:
                    return ta + (tb - ta) * (c - ca) / (cb - ca)
            return points[0][0] if c <= points[0][1] else points[-1][0]

        for k in range(run["outputs_before"] // size, -(-end // size)):
            lo, hi = max(k * size, run["outputs_before"]), min((k + 1) * size, end)
            if hi <= lo:
                continue
            t_lo, t_hi = cross(lo), cross(hi)
            rss = [s["rss_mb"] for s in run["samples"] if t_lo <= s["t"] <= t_hi and s["rss_mb"]]
            rows.append(
                {
                    "run": run["tag"],
                    "window": k,
                    "pairs": hi - lo,
                    "seconds": round(t_hi - t_lo, 2),
                    "pairs_per_s": round((hi - lo) / max(t_hi - t_lo, 1e-9), 1),
                    "driver_peak_rss_mb": round(max(rss, default=0.0), 1),
                }
            )
    return rows


def check(work: Path, out: Path, manifest: Path) -> dict:
    """Every id exactly once, nothing fused twice; returns the findings (``ok`` False on any problem)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.io.manifest import read_manifest
    from pipeline.io.marks import read_mark

    ids = pq.read_table(manifest, columns=["pair_id"]).column(0).to_pylist()
    expected, outputs = set(ids), list_outputs(out)
    rows = read_manifest(str(out), columns=["pair_id", "status", "run_id"])
    runs = sorted(set(rows.column("run_id").to_pylist()))

    def status(name: str, run: str | None = None) -> list[str]:
        keep = pc.equal(rows.column("status"), name)
        keep = keep if run is None else pc.and_(keep, pc.equal(rows.column("run_id"), run))
        return rows.filter(keep).column("pair_id").to_pylist()

    ok = status("ok")
    unrecorded = expected - set(ok) - (expected - outputs.keys())  # committed, but no ok row (the killed run's tail)
    killed = work / f"killed-{out.name}.json"  # the outputs when the killed run had stopped committing
    snapshot = json.loads(killed.read_text()) if len(runs) > 1 and killed.exists() else {}

    def marked(pair_id: str) -> bool:
        with open(out / outputs[pair_id][0][0], "rb") as f:
            return (read_mark(f.read(4096)) or {}).get("pair_id") == pair_id

    problems = {
        "missing": sorted(expected - outputs.keys()),
        "extra outputs": sorted(outputs.keys() - expected),
        "several outputs": sorted(k for k, v in outputs.items() if len(v) > 1),
        "ok twice": sorted(k for k, n in Counter(ok).items() if n > 1),
        "unrecorded and not skipped": sorted(unrecorded - set(status("skipped"))),
        "unrecorded and unmarked": sorted(p for p in unrecorded if not marked(p)),
        "fused again after the kill": sorted(set(status("ok", runs[-1])) & snapshot.keys()) if snapshot else [],
        "rewritten after the kill": sorted(p for p, v in snapshot.items() if outputs.get(p, [[0, 0]])[0][1] != v[0][1]),
        "failed rows": sorted(status("failed")),
        "repeated input ids": [] if len(expected) == len(ids) else ["(manifest repeats ids)"],
    }
    result = {"ok": not any(problems.values()), "pairs": len(ids), "outputs": len(outputs), "runs": runs}
    result.update({"manifest rows": rows.num_rows, "unrecorded (committed without a manifest row)": len(unrecorded)})
    result.update({k: len(v) for k, v in problems.items()}, examples={k: v[:5] for k, v in problems.items() if v})
    print(
        f"check {'PASS' if result['ok'] else 'FAIL'}: "
        + ", ".join(f"{k} {v}" for k, v in result.items() if k not in ("ok", "examples"))
    )
    return result


def result_header(pairs: int, size: int) -> dict:
    """The fields every result file starts with: date, machine, input, command and the load before the run."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "pairs": pairs,
        "size": size,
        "command": shlex.join(["python", *sys.argv]),
        "load_before": load_average(),
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown(result: dict) -> str:
    t = result["totals"]
    lines = [
        f"**{result['pairs']:,} pairs of {result['size']}² ({result['mode']})**, {result['date']}, "
        f"{result['machine']}; load average before {result['load_before']}, after {result['load_after']}.",
        "",
        f"`{result['command']}`",
        "",
        "| run | window | pairs | s | pairs/s | driver peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {w['run']} | {w['window']} | {w['pairs']:,} | {w['seconds']:.1f} | {w['pairs_per_s']:.1f} | "
            f"{w['driver_peak_rss_mb']:.0f} |"
            for w in result.get("windows", [])
        ],
        "",
        "| figure | value |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in t.items()],
    ]
    return "\n".join(lines)


def run_pipeline(args: argparse.Namespace, work: Path, manifest: Path, out: Path) -> dict:
    """The job against this script's Ray head; killed at ``--kill-at`` and rerun; figures per window and totals."""
    cmd = [sys.executable, "jobs/batch_fuse.py", "--input", str(manifest), "--output", str(out), "--task", "mff"]
    head = RayHead(work, args.num_cpus, args.object_store_mb, job_env())
    try:
        cmd += ["--address", head.address, *shlex.split(args.job_args)]
        cmd += [a for item in args.set for a in ("--set", item)]
        t0 = time.time()
        runs = [run_once(cmd, work / f"{out.name}-run1.log", out, head, args.kill_at, t0, "1")]
        if runs[0]["killed"]:
            settled = settle(out)
            (work / f"killed-{out.name}.json").write_text(json.dumps(settled))
            runs[0]["outputs_settled"] = len(settled)
            runs.append(run_once(cmd, work / f"{out.name}-run2.log", out, head, 0, t0, "2"))
        wall = time.time() - t0
        final_store = head.store_stats()
    finally:
        head.stop()
    rows = windows(runs, args.window)
    full = [w["driver_peak_rss_mb"] for w in rows if w["pairs"] == args.window]
    fused = sum(r["outputs_at_exit"] - r["outputs_before"] for r in runs)
    store = [s["used_mb"] for r in runs for s in r["store"] if "used_mb" in s]
    totals = {
        "wall s (all runs)": round(wall, 1),
        "pairs/s (all runs)": round(fused / wall, 1),
        "ms per pair": round(1000 * wall / max(fused, 1), 2),
        "driver peak RSS (MB)": round(max(r["driver_peak_rss_mb"] for r in runs), 1),
        "window peak RSS last / second": round(full[-1] / full[1], 3) if len(full) > 2 and full[1] else None,
        "object store peak used (MB)": round(max(store, default=0.0), 1),
        "object store spilled (MB, objects)": f"{final_store['spilled_mb']:.1f}, {final_store['spilled_objects']}",
        "max output listing (s)": round(max(r["max_listing_s"] for r in runs), 3),
    }
    if runs[0]["killed"]:
        totals["outputs at kill (settled)"] = f"{runs[0]['outputs_at_exit']} ({runs[0]['outputs_settled']})"
    for r in runs:
        totals[f"run {r['tag']}: s, exit code"] = f"{r['seconds']:.1f}, {r['returncode']}"
        totals[f"run {r['tag']}: first new output after (s)"] = round(r["first_new_output_s"] or -1, 2)
        if r["resume_diff_log_s"] is not None:
            totals[f"run {r['tag']}: pre-flight to 'resume:' log line (s)"] = round(r["resume_diff_log_s"], 2)
    if (out / "_summary.json").exists():
        job = json.loads((out / "_summary.json").read_text())
        keys = ("pairs_ok", "pairs_skipped", "pairs_failed", "elapsed_s", "startup_s", "steady_pairs_per_s")
        totals["last run's _summary.json"] = ", ".join(f"{k} {job.get(k)!s:.8}" for k in keys)
    return {"mode": "pipeline", "runs": runs, "windows": rows, "totals": totals, "final_store": final_store}


def run(args: argparse.Namespace) -> int:
    work = Path(args.work)
    manifest = manifest_path(work, args.pairs, args.size)
    if not manifest.exists():
        build(work, args.pairs, args.size)
    name = f"{args.pairs}-{args.size}{f'-hand{args.threads}' if args.hand_loop else ''}"
    out = work / f"out-{name}"
    if out.exists():
        raise SystemExit(f"{out} exists: remove it (rm -r {out}) for a fresh run")
    result = result_header(args.pairs, args.size)
    if args.hand_loop:
        from bench_batch import hand_loop

        started = time.perf_counter()
        rate = hand_loop(manifest.with_suffix(".csv"), out, args.threads)
        wall = time.perf_counter() - started
        totals = {
            "pairs/s (model loaded)": round(rate, 1),
            "ms per pair": round(1000 / rate, 2),
            "wall s": round(wall, 1),
        }
        result.update(mode=f"hand loop, {args.threads} torch thread(s)", totals=totals)
    else:
        result.update(run_pipeline(args, work, manifest, out))
        if not args.no_check:
            result["check"] = check(work, out, manifest)
            result["totals"]["check"] = "PASS" if result["check"]["ok"] else "FAIL"
    result["load_after"] = load_average()
    path = work / f"result-{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))
    print(f"\nresult: {path}")
    return 0 if result.get("check", {"ok": True})["ok"] else 1


def curve(work: Path) -> None:
    """One table of every result-*.json under ``work``: the cost curve, pipeline next to the hand loop."""
    print("| pairs | size | mode | pairs/s | ms per pair | driver peak RSS (MB) | date |")
    print("|---:|---:|---|---:|---:|---:|---|")
    results = [json.loads(p.read_text()) for p in work.glob("result-*.json")]
    results = [r for r in results if "mode" in r]  # bench_s3_faults.py writes its own result-s3-*.json
    for r in sorted(results, key=lambda r: (r["size"], r["pairs"], r["mode"])):
        t = r["totals"]
        rate = t.get("pairs/s (all runs)") or t.get("pairs/s (model loaded)")
        rss = t.get("driver peak RSS (MB)", "-")
        print(f"| {r['pairs']:,} | {r['size']} | {r['mode']} | {rate} | {t['ms per pair']} | {rss} | {r['date']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "run", "check", "curve"))
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", default="/tmp/maugif-million")
    parser.add_argument("--kill-at", type=int, default=0, help="SIGKILL the driver at this many outputs, rerun.")
    parser.add_argument("--window", type=int, default=50_000, help="Completed pairs per row of the table.")
    parser.add_argument("--set", action="append", default=[], help="Passed to the job as --set (repeatable).")
    parser.add_argument("--job-args", default="-v", help="More job arguments (default -v: its INFO lines).")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray head.")
    parser.add_argument("--object-store-mb", type=int, default=None, help="Object store of the head (Ray's default).")
    parser.add_argument("--hand-loop", action="store_true", help="bench_batch.hand_loop over the same manifest.")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="Torch threads of the hand loop (torch's default is every core; on a busy machine 1 is far faster).",
    )
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.action == "build":
        build(work, args.pairs, args.size)
        return 0
    if args.action == "curve":
        curve(work)
        return 0
    if args.action == "check":
        out = work / f"out-{args.pairs}-{args.size}"
        return 0 if check(work, out, manifest_path(work, args.pairs, args.size))["ok"] else 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
