"""Batch fusion job (thin wrapper of ``maugif fuse`` for ``ray submit`` / ``ray job submit``).

    python jobs/batch_fuse.py                      # bundled samples, bundled checkpoints, local Ray → ./outputs/
    python jobs/batch_fuse.py --input s3://bucket/pairs.parquet --task vif --output s3://bucket/fused \\
        --checkpoint s3://bucket/train/final --set fusion.num_actors=8 --set fusion.num_gpus_per_actor=0.25
    python jobs/batch_fuse.py --input pairs/ --output fused/ --method laplacian
    ray job submit --working-dir . -- python jobs/batch_fuse.py --config configs/fuse.yaml

Options, exit codes and behaviour: :mod:`pipeline.cli.fuse` (``maugif fuse --help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from pipeline.cli.fuse import DEFAULT_INPUT  # noqa: E402,F401  (kept for callers of the old module)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli.fuse import main as fuse_main

    return fuse_main(argv, prog="jobs/batch_fuse.py", label="batch_fuse")


if __name__ == "__main__":
    sys.exit(main())
