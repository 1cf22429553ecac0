"""Evaluation job (thin wrapper of ``maugif evaluate`` for ``ray submit`` / ``ray job submit``): run MAUGIF and
its baselines on every pair, score each result, write tables, plots and a report.

    python jobs/evaluate.py --input pairs.csv --task vif --output eval/tno --checkpoint ckpt/ --convention cddfuse
    python jobs/evaluate.py --input pairs.csv --task mff --output eval/ --method mymethod   # a plugin, scored

Options, outputs, exit codes: :mod:`pipeline.cli.evaluate` (``maugif evaluate --help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli.evaluate import main as evaluate_main

    return evaluate_main(argv, prog="jobs/evaluate.py", label="evaluate")


if __name__ == "__main__":
    sys.exit(main())
