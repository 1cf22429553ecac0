"""The batch job once more over a finished (or partly finished) output of bench_million.py: what a resume costs.

python benchmarks/bench_rerun.py --pairs 1000000 [--code /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_million import job_env, load_average, log_figures, manifest_path, proc_memory_mb  # noqa: E402
from ray_head import RayHead  # noqa: E402


def rerun(args: argparse.Namespace) -> int:
    """The job once more over a finished (or partly finished) ``out-<N>-<size>``: what a resume costs the driver.

    Prints the wall time, exit code, the driver's peak RSS, the resume diff from the job's log (pre-flight passed →
    ``resume:`` line) and its ``resume:`` and summary lines. ``--code DIR`` runs another checkout's job (and puts it
    first on the job's ``PYTHONPATH``), to compare two versions over the same output."""
    work = Path(args.work)
    out = work / f"out-{args.pairs}-{args.size}"
    if not out.exists():
        raise SystemExit(f"{out} does not exist: run the job first (bench_million.py run --pairs {args.pairs})")
    code = Path(args.code).resolve() if args.code else REPO
    cmd = [
        sys.executable,
        str(code / "jobs" / "batch_fuse.py"),
        "--input",
        str(manifest_path(work, args.pairs, args.size)),
        "--output",
        str(out),
        "--task",
        "mff",
    ]
    env = dict(job_env(), PYTHONPATH=str(code))
    head = RayHead(work, args.num_cpus, args.object_store_mb, env)
    log = work / f"{out.name}-rerun-{code.name}.log"
    try:
        cmd += ["--address", head.address, *shlex.split(args.job_args)]
        started = time.time()
        with open(log, "w") as handle:
            proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, proc_memory_mb(proc.pid)[1])
            time.sleep(0.2)
        seconds = time.time() - started
    finally:
        head.stop()
    text = log.read_text(errors="replace")
    figures = log_figures(text)
    lines = [line for line in text.splitlines() if "resume:" in line or line.startswith(("pairs:", "time:"))]
    print(
        f"rerun of {out} with {code}: {seconds:.1f} s, exit {proc.returncode}, driver peak RSS {peak:.0f} MB, "
        f"resume diff (log) {figures['resume_diff_log_s']} s; load average {load_average()}"
    )
    print("\n".join(lines))
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", default="/tmp/maugif-million")
    parser.add_argument("--code", default=None, help="The checkout whose job to run (default: this one).")
    parser.add_argument("--job-args", default="-v", help="More job arguments (default -v: its INFO lines).")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray head.")
    parser.add_argument("--object-store-mb", type=int, default=None, help="Object store of the head (Ray's default).")
    return rerun(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
