"""Regenerate docs/RESULTS.md and the bundled checkpoints: test-set manifests, held-out training, evaluation runs,
the bundled models with their cards, and the result tables.

A thin command line over :mod:`pipeline.evaluate.results` (``python scripts/make_results.py --help``; the steps
and their order are in :mod:`pipeline.evaluate.results.cli`).
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.evaluate.results.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
