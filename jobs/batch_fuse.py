"""Batch fusion job: fuse every pair of a manifest or folder into an output location, resumably.

    python jobs/batch_fuse.py                      # bundled samples, bundled checkpoints, local Ray → ./outputs/
    python jobs/batch_fuse.py --input s3://bucket/pairs.parquet --task vif --output s3://bucket/fused \\
        --checkpoint s3://bucket/train/final --set fusion.num_actors=8 --set fusion.num_gpus_per_actor=0.25
    ray job submit --working-dir . -- python jobs/batch_fuse.py --config configs/fuse.yaml

Attaches to ``--address`` or ``RAY_ADDRESS`` when given, else starts a local Ray instance.
Exit code: 0 when the failed fraction is within ``failures.max_fraction``, 1 otherwise, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

DEFAULT_INPUT = str(REPO / "samples" / "manifest.csv")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline.cli import job_parser

    parser = job_parser(
        "jobs/batch_fuse.py",
        __doc__.split("\n")[0],
        config_help="YAML config file (FuseJobConfig).",
        set_example="fusion.batch_size=32",
        input_help="Manifest (.csv/.parquet/.jsonl) or folder of pairs (any fsspec URI).",
        output_help="Output location (local path or s3:// prefix); sets output.uri.",
    )
    parser.add_argument("--task", help="Task of pairs whose source names none.")
    parser.add_argument("--checkpoint", help="Checkpoint (file, folder or training output) for --task.")
    parser.add_argument(
        "--dry-run",
        type=int,
        metavar="N",
        help="Fuse N pairs into a scratch location; print throughput and the cost projection.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from pipeline.errors import ConfigError
    from pipeline.fuse_config import FuseJobConfig
    from pipeline.jobconfig import load_job_config

    cli = {
        "input": args.input,
        "output.uri": args.output,
        "task": args.task,
        "checkpoint": args.checkpoint,
        "address": args.address,
        "dry_run": args.dry_run,
    }
    if args.config is None and args.input is None and not any(o.startswith("input=") for o in args.overrides):
        cli["input"] = DEFAULT_INPUT
    try:
        config = load_job_config(FuseJobConfig, args.config, args.overrides, **cli)
    except (ValidationError, ConfigError, OSError) as e:
        print(f"batch_fuse: invalid configuration:\n{e}", file=sys.stderr)
        return 2

    import ray

    from pipeline.batch import exit_code, format_summary, run_batch_fuse

    address = config.address or os.environ.get("RAY_ADDRESS")
    t0 = time.perf_counter()
    ray.init(address=address or "local", log_to_driver=False)
    print(f"ray ready in {time.perf_counter() - t0:.1f} s ({'attached to ' + address if address else 'local'})")
    try:
        summary = run_batch_fuse(config)
    finally:
        ray.shutdown()
    print(format_summary(summary))
    if config.dry_run is None:
        print(f"summary: {config.output.uri.rstrip('/')}/_summary.json")
    else:
        print(json.dumps({k: summary[k] for k in ("pairs_per_s", "projected_node_hours_total")}, indent=2))
    return exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
