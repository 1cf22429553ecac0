"""Evaluation job: run MAUGIF and its baselines on every pair, score each result, write tables, plots and a
report.

    python jobs/evaluate.py --input pairs.csv --task vif --output eval/tno --checkpoint ckpt/ --convention cddfuse
    python jobs/evaluate.py --input pairs.csv --task mff --output eval/ --methods maugif,maugif:running,dwt \\
        --fused-dir mytool=outputs/fused/            # score another tool's fused images too
    python jobs/evaluate.py --input /tmp/rs_pairs/manifest.csv --task pansharpen --protocol wald \\
        --output eval/rs --methods maugif,bicubic,brovey,gihs,gsa,rio_brovey --set multiplicative.steps=1000

Without ``--checkpoint`` the task's bundled pretrained model is used (``maugif_core.pretrained``).

Writes ``<output>/metrics_per_image.csv`` (pair_id,method,metric,value), ``metrics_mean.csv``
(method,metric,mean), ``metrics_table.md``, ``plots/``, ``grid.png``, ``failures.csv`` and ``report.html``.
Attaches to ``--address`` or ``RAY_ADDRESS`` when given, else starts its own local Ray instance.
Exit code: 0 when every method scored every pair (or failures stay within ``max_failed_fraction``), 1
otherwise, 2 for a user mistake (config, input, output, checkpoint) found by the pre-flight before Ray starts
(``--check`` prints that checklist and exits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline.cli.common import add_console_options, job_parser

    parser = job_parser(
        "jobs/evaluate.py",
        __doc__.split("\n")[0],
        config_help="YAML config file (pipeline.config.eval_config.EvalJobConfig).",
        set_example="multiplicative.steps=300",
        input_help="Manifest (.csv/.parquet/.jsonl) or folder of pairs (any fsspec URI).",
        output_help="Output folder (local path or s3:// prefix).",
    )
    parser.add_argument("--task", help="Task: vif, medical, mff, mef, general, pansharpen or hsi_msi.")
    parser.add_argument("--methods", help="Comma-separated methods, e.g. maugif,maugif:running,average,dwt.")
    parser.add_argument("--checkpoint", help="MAUGIF checkpoint (file, folder or training output) for --task.")
    parser.add_argument("--convention", help="Additive metric convention: standard, cddfuse or vifb.")
    parser.add_argument("--protocol", help="pansharpen / hsi_msi: wald (reduced resolution) or full.")
    parser.add_argument("--fused-dir", dest="fused_dirs", action="append", default=[], metavar="[NAME=]DIR",
                        help="Folder of already-fused images (file stem = pair_id) scored as method NAME "
                             "(default: the folder's name). Repeatable.")  # fmt: skip
    parser.add_argument(
        "--fused-pattern",
        default="{pair_id}.*",
        help="File-name pattern of the --fused-dir images, e.g. '{pair_id}_U2Fusion.jpg'.",
    )
    parser.add_argument("--limit", type=int, help="Evaluate only the first N pairs (a quick look).")
    parser.add_argument("--grid-pairs", type=int, help="Pairs shown in the visual grid (default 4).")
    add_console_options(parser)
    return parser.parse_args(argv)


def _fused_sources(specs: list[str], pattern: str) -> list[dict] | None:
    if not specs:
        return None
    sources = []
    for spec in specs:
        name, sep, uri = spec.partition("=")
        if not sep or "/" in name or ":" in name:  # no NAME= prefix (an s3:// URI has '=' only after a '/')
            uri = spec
            name = uri.rstrip("/").rsplit("/", 1)[-1]
        sources.append({"name": name, "uri": uri, "pattern": pattern})
    return sources


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline.config.eval_config import EvalJobConfig
    from pipeline.config.loading import config_to_yaml, load_job_config
    from pipeline.errors import ConfigError, PipelineError

    fused = _fused_sources(args.fused_dirs, args.fused_pattern)
    cli = {
        "input": args.input,
        "task": args.task,
        "output": args.output,
        "methods": args.methods.split(",") if args.methods else None,
        "checkpoint": args.checkpoint,
        "convention": args.convention,
        "protocol": args.protocol,
        "fused": fused,
        "limit": args.limit,
        "grid_pairs": args.grid_pairs,
        "address": args.address,
    }
    try:
        config = load_job_config(EvalJobConfig, args.config, args.overrides, **cli)
    except ConfigError as e:
        print(f"evaluate: error: invalid configuration: {e}", file=sys.stderr)
        return 2

    # Local paths become absolute: Ray workers may run in another working directory.
    config = config.model_copy(
        update={
            key: os.path.abspath(value)
            for key in ("input", "output", "checkpoint")
            if (value := getattr(config, key)) is not None and "://" not in value
        }
    )
    from pipeline.cli.common import preflight_gate
    from pipeline.cli.job_preflight import eval_steps

    code = preflight_gate("evaluate", eval_steps(config), args)
    if code is not None:
        return code
    import ray

    from pipeline.evaluate.evaluation import run_evaluation
    from pipeline.evaluate.evaluation_report import write_report

    address = config.address or os.environ.get("RAY_ADDRESS")
    t0 = time.perf_counter()
    if not ray.is_initialized():
        # Without an address, start a private local instance: a bare ray.init() attaches to whichever cluster
        # was started last on this machine (another user's, on a shared host) and dies with it.
        ray.init(address=address or "local", log_to_driver=False)
        started_here = True
    else:
        started_here = False
    print(f"ray ready in {time.perf_counter() - t0:.1f} s ({'attached to ' + address if address else 'local'})")
    try:
        result = run_evaluation(config)
        summary = write_report(config, result, config_to_yaml(config))
    except ConfigError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    except PipelineError as e:
        print(f"evaluate: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if started_here:
            ray.shutdown()
    print((Path(config.output) / "metrics_table.md").read_text() if "://" not in config.output else "")
    print(f"pairs {summary['pairs']}, methods {len(summary['methods'])}, failures {summary['failures']} "
          f"({summary['failed_pairs']} pairs), {summary['seconds']} s")  # fmt: skip
    print(f"report: {summary['report']}")
    fraction = summary["failures"] / max(1, summary["runs"])
    return 0 if fraction <= config.max_failed_fraction else 1


if __name__ == "__main__":
    sys.exit(main())
