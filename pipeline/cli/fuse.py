"""Batch fusion: fuse every pair of a manifest or folder into an output location, resumably.

    maugif fuse                                      # bundled samples, bundled checkpoints, local Ray → ./outputs/
    maugif fuse --input s3://bucket/pairs.parquet --task vif --output s3://bucket/fused \\
        --checkpoint s3://bucket/train/final --set fusion.num_actors=8 --set fusion.num_gpus_per_actor=0.25
    maugif fuse --input pairs/ --output fused/ --method laplacian   # a classical baseline, same pipeline
    ray job submit --working-dir . -- python jobs/batch_fuse.py --config configs/fuse.yaml

Attaches to ``--address`` or ``RAY_ADDRESS`` when given, else starts a local Ray instance. Before Ray starts, a
pre-flight checks the input, the output and every checkpoint (``--check`` prints that checklist and exits;
``--print-config`` prints the resolved config). Exit code (docs/OPERATIONS.md): 0 when failed / (ok, earlier runs
included, + failed) is within ``failures.max_fraction``, 1 otherwise, 2 for a user mistake (config, method, input,
output, checkpoint) found before Ray starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

# The bundled sample pairs of a checkout or editable install (the embedded default, SPEC §2).
DEFAULT_INPUT = str(Path(__file__).resolve().parents[2] / "samples" / "manifest.csv")


def build_parser(prog: str = "maugif fuse") -> argparse.ArgumentParser:
    from pipeline.cli.common import add_console_options, job_parser

    parser = job_parser(
        prog,
        __doc__.split("\n")[0],
        config_model="pipeline.config.fuse_config:FuseJobConfig",
        config_help="YAML config file (FuseJobConfig).",
        set_example="fusion.batch_size=32",
        input_help="Manifest (.csv/.parquet/.jsonl) or folder of pairs (any fsspec URI).",
        output_help="Output location (local path or s3:// prefix); sets output.uri.",
    )
    parser.add_argument("--task", config_key="task")
    parser.add_argument("--method", config_key="method", metavar="NAME")
    parser.add_argument("--checkpoint", config_key="checkpoint")
    parser.add_argument(
        "--allow-task-mismatch",
        action="store_true",
        default=None,
        help="Use a checkpoint trained for another task of the same mechanism (sets allow_task_mismatch).",
    )
    parser.add_argument(
        "--dry-run",
        type=int,
        metavar="N",
        help="Fuse N pairs into a scratch location; print throughput and the cost projection.",
    )
    add_console_options(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = "maugif fuse", label: str | None = None) -> int:
    """Run the batch-fusion job with command-line arguments ``argv``; returns the exit code.

    ``prog`` names the command in usage lines, ``label`` (default ``prog``) starts the error messages."""
    label = label or prog
    args = build_parser(prog).parse_args(argv)
    from pydantic import ValidationError

    from pipeline.cli.common import report_preflight, setup_logging
    from pipeline.config.fuse_config import FuseJobConfig
    from pipeline.config.loading import load_job_config
    from pipeline.errors import ConfigError

    cli = {
        "input": args.input,
        "output.uri": args.output,
        "task": args.task,
        "method": args.method,
        "checkpoint": args.checkpoint,
        "address": args.address,
        "dry_run": args.dry_run,
        "allow_task_mismatch": args.allow_task_mismatch,
    }
    if args.config is None and args.input is None and not any(o.startswith("input=") for o in args.overrides):
        cli["input"] = DEFAULT_INPUT
    try:
        config = load_job_config(FuseJobConfig, args.config, args.overrides, **cli)
    except (ValidationError, ConfigError, OSError) as e:
        print(f"{label}: error: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        from pipeline.config.loading import config_to_yaml

        print(config_to_yaml(config), end="")
        return 0
    setup_logging(args)

    from pipeline.cli.job_preflight import fuse_steps
    from pipeline.cli.preflight import run_checks

    t0 = time.perf_counter()
    code = report_preflight(label, run_checks(fuse_steps(config)), args)
    if code is not None:
        return code
    logging.getLogger(__name__).info("pre-flight passed in %.1f s", time.perf_counter() - t0)

    import ray

    from pipeline.cli.console import ProgressConsole, quiet_known_warnings
    from pipeline.fuse.batch import exit_code, format_summary, run_batch_fuse

    if not args.verbose:
        quiet_known_warnings()
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # ours counts pairs, Ray's count blocks
        for name in ("ray", "ray.data"):  # Ray's INFO/WARNING lines about its own internals
            logging.getLogger(name).setLevel(logging.ERROR)
    address = config.address or os.environ.get("RAY_ADDRESS")
    t0 = time.perf_counter()
    ray.init(address=address or "local", log_to_driver=False, logging_level=logging.ERROR)
    if not args.verbose:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if not args.quiet:
        where = "attached to " + address if address else "local"
        print(f"ray ready in {time.perf_counter() - t0:.1f} s ({where})", file=sys.stderr)
    console = None if args.quiet else ProgressConsole(sys.stderr, interactive=sys.stderr.isatty())
    try:
        summary = run_batch_fuse(config, on_progress=console)
    except Exception as e:  # a failure of the whole job (not of a pair): one line, the traceback with --verbose
        if args.verbose:
            raise
        print(f"{label}: error: the job failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if console is not None:
            console.close()
        ray.shutdown()
    print(format_summary(summary))
    if config.dry_run is None:
        print(f"summary: {config.output.uri.rstrip('/')}/_summary.json")
    else:
        keys = ("startup_s", "steady_pairs_per_s", "pairs_per_s", "projected_node_hours_total")
        print(json.dumps({k: summary[k] for k in keys}, indent=2))
    return exit_code(summary)
