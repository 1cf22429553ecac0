"""Train a MAUGIF additive model on Ray Train (DDP), checkpointing every epoch, and export the final model.

Usage::

    python jobs/train.py                            # bundled sample pairs, a few epochs, ./checkpoints/
    python jobs/train.py --config configs/train_default.yaml --input s3://bucket/pairs.csv --task vif \\
        --output s3://bucket/runs/vif --set train.num_workers=8 --set train.use_gpu=true

The config is validated before Ray starts, so a bad one fails in well under a second with a message naming the
field. Re-running the same command (same output and ``storage.name``) resumes from the last checkpoint.
Exit codes: 0 success, 2 a user mistake (config, arguments, input, output) found before Ray starts (``--check``
prints the pre-flight checklist and exits), 1 training failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "train_default.yaml"
DEFAULT_INPUT = REPO_ROOT / "samples" / "mff"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline.cli.common import add_console_options, job_parser

    parser = job_parser(
        "jobs/train.py",
        "Train MAUGIF on Ray Train. Without arguments: the bundled sample pairs, a few epochs, local Ray, "
        "./checkpoints/.",
        config_help=f"YAML job config (default without --config and --input: {DEFAULT_CONFIG.name}).",
        set_example="train.lr=1e-3",
        input_help="Pair source: manifest or folder, local or s3:// (data.input).",
        output_help="Output root, local or s3:// (storage.path); the final model goes to <output>/final.",
    )
    parser.add_argument("--task", help="Additive task preset: vif, medical, mff, mef, general (model.task).")
    add_console_options(parser)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace):
    """Validate the job config (imports pydantic and PyYAML only: no torch, no Ray)."""
    from pipeline.config.loading import load_job_config
    from pipeline.config.train_config import TrainJobConfig

    config_path = args.config
    cli = {"data.input": args.input, "model.task": args.task, "storage.path": args.output}
    if config_path is None and args.input is None:
        # The embedded default: the bundled demo config and sample pairs, wherever the job is started from.
        config_path = str(DEFAULT_CONFIG)
        cli["data.input"] = str(DEFAULT_INPUT)
    config = load_job_config(TrainJobConfig, config_path, args.overrides, **cli)
    if not config.data.input:
        from pipeline.errors import ConfigError

        raise ConfigError("data.input: missing (expected a manifest file or a folder of pairs, or --input)")
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline.errors import ConfigError

    try:
        config = load_config(args)
    except ConfigError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    from pipeline.cli.common import preflight_gate
    from pipeline.cli.job_preflight import train_steps

    code = preflight_gate("train", train_steps(config), args)
    if code is not None:
        return code

    import ray

    from pipeline.train.training import run_training

    started = time.perf_counter()
    # Attach only when asked to (--address, RAY_ADDRESS): never to whatever cluster this machine ran last.
    address = args.address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=True)
    try:
        summary = run_training(config)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # training failures: report, don't dump a wall of Ray internals twice
        print(f"error: training failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()

    last = summary.history[-1] if summary.history else {}
    print()
    print("training summary")
    counts = summary.counts
    train = config.train
    failed = counts.get("discovery_failures", 0)
    print(f"  pairs            {counts.get('pairs', 0)} ({failed} failed discovery)")
    print(f"  epochs           {len(summary.history)} (stage 1: {train.epochs_stage1}, stage 2: {train.epochs_stage2})")
    if last:
        print(
            f"  last epoch       stage {int(last['stage'])} epoch {int(last['epoch'])}: "
            f"loss {last['loss']:.4f}, {last['samples_per_s']:.1f} samples/s"
        )
    print(f"  run folder       {summary.run_uri}  (checkpoints, metrics.csv, config.yaml)")
    print(f"  checkpoint       {summary.checkpoint_uri}")
    print(f"  final model      {summary.final_uri}")
    print(f"  wall time        {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
