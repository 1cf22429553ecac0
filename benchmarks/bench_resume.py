"""What a rerun of a half-done big job costs before it fuses anything: the driver's resume diff.

The on-disk state of a killed job is built without fusing, exactly as the real sink leaves it
(:class:`pipeline.fuse.sinks.FusedImageDatasink`): one manifest part per write task (``rows_per_write`` = 64 rows
by default, ``ManifestWriter(writer="w<window>-task<idx>")``, window of 50,000 pairs), one PNG per ``ok`` pair at
``<output>/<pair_id>.png`` carrying this tool's mark for that pair (:mod:`pipeline.io.marks`, a real 8x8 PNG per
pair, not links: the mark names the pair), the run's ``_manifest/config-<run_id>.json`` and, like a crash, the
outputs of the last few write tasks committed without their manifest part (they are found by their marks).

``build`` grows the state cumulatively (50k, then 100k, then 500k done pairs of a 1M job); ``measure`` runs in a
fresh process and times what ``run_batch_fuse`` does before its first window with ``resume: true``:
``resume_done`` (manifest read + latest status per pair + listing the output prefix + opening the unmanifested
outputs' heads), then the driver-side filter that leaves the done pairs out of discovery
(:func:`pipeline.io.pairs.iter_pair_windows`, issue 18) over the job's 1M pair ids in discovery batches of 16,384,
and reports the driver's peak RSS.

Usage::

    python benchmarks/bench_resume.py build --out /tmp/resume-state --done 50000
    python benchmarks/bench_resume.py measure --out /tmp/resume-state
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import time
from pathlib import Path

RUN_ID = "20260101T000000Z-deadbeef"
ROWS_PER_WRITE = 64
WINDOW = 50_000
UNMANIFESTED_TASKS = 4  # write tasks in flight when the driver died: outputs committed, manifest part not


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _template_png() -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).save(buffer, format="PNG")
    return buffer.getvalue()


def build(out: str, done: int) -> None:
    """Grow the state at ``out`` to ``done`` finished pairs (pair ids ``scene-00000000`` ...)."""
    from pipeline.io.fsutil import atomic_write_bytes
    from pipeline.io.manifest import ManifestWriter, make_record
    from pipeline.io.marks import add_png_mark, make_mark
    from pipeline.schema import MANIFEST_DIR

    os.makedirs(os.path.join(out, MANIFEST_DIR), exist_ok=True)
    state_file = os.path.join(out, "_bench_state.json")
    have = json.loads(Path(state_file).read_text())["done"] if os.path.exists(state_file) else 0
    config_uri = os.path.join(out, MANIFEST_DIR, f"config-{RUN_ID}.json")
    if not os.path.exists(config_uri):
        atomic_write_bytes(config_uri, json.dumps({"bench": "resume"}).encode())
    template = _template_png()
    unmanifested = UNMANIFESTED_TASKS * ROWS_PER_WRITE
    # The previous build's unmanifested tail gets its manifest now (as later tasks of the same run would).
    start_manifest = max(0, have - unmanifested) if have else 0
    started = time.perf_counter()
    for first in range(start_manifest, done, ROWS_PER_WRITE):
        ids = [f"scene-{i:08d}" for i in range(first, min(done, first + ROWS_PER_WRITE))]
        for pid in ids:
            if int(pid[6:]) >= have:
                with open(os.path.join(out, pid + ".png"), "wb") as f:
                    f.write(add_png_mark(template, make_mark(pid)))
        if first >= done - unmanifested:
            continue  # committed outputs whose task died before its manifest part
        window, task = divmod(first, WINDOW)
        with ManifestWriter(out, RUN_ID, writer=f"w{window:05d}-task{task // ROWS_PER_WRITE:06d}") as manifest:
            for pid in ids:
                manifest.add(make_record(pid, "ok", output_uri=os.path.join(out, pid + ".png"), seconds=0.05))
    Path(state_file).write_text(json.dumps({"done": done}))
    print(f"built {done} done pairs at {out} in {time.perf_counter() - started:.1f} s")


def measure(out: str) -> dict:
    from pipeline.fuse.batch import resume_done
    from pipeline.io.manifest import new_run_id

    cold = _rss_mb()
    current = new_run_id()
    started = time.perf_counter()
    done = resume_done(out, current)
    resume_s = time.perf_counter() - started
    peak_after_resume = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "done": len(done),
        "manifest_parts": sum(1 for n in os.listdir(os.path.join(out, "_manifest")) if n.endswith(".parquet")),
        "resume_done_s": round(resume_s, 2),
        "rss_cold_mb": round(cold, 1),
        "rss_peak_mb": round(peak_after_resume, 1),
    }
    import pyarrow as pa

    from pipeline.io.pairs import _drop_done

    total, kept = max(1_000_000, len(done)), 0
    started = time.perf_counter()
    for first in range(0, total, 16_384):
        ids = [f"scene-{i:08d}" for i in range(first, min(first + 16_384, total))]  # as built
        kept += _drop_done(pa.table({"pair_id": ids}), done).num_rows
    result["filter_pairs"], result["filter_kept"] = total, kept
    result["filter_s"] = round(time.perf_counter() - started, 2)  # includes building the id strings
    result["rss_peak_after_filter_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "measure"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--done", type=int, default=50_000)
    args = parser.parse_args()
    if args.action == "build":
        build(args.out, args.done)
    else:
        measure(args.out)


if __name__ == "__main__":
    main()
