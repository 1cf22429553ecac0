"""Train a MAUGIF additive model on Ray Train (thin wrapper of ``maugif train`` for ``ray submit`` /
``ray job submit``).

    python jobs/train.py                            # bundled sample pairs, a few epochs, ./checkpoints/
    python jobs/train.py --config configs/train_default.yaml --input s3://bucket/pairs.csv --task vif \\
        --output s3://bucket/runs/vif --set train.num_workers=8 --set train.use_gpu=true

Options, exit codes and behaviour: :mod:`pipeline.cli.train` (``maugif train --help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli.train import main as train_main

    return train_main(argv, prog="jobs/train.py", label="train")


if __name__ == "__main__":
    sys.exit(main())
