"""Where the results tooling reads and writes: the repository checkout it runs from, the page it generates
and the folder of the bundled checkpoints."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RESULTS_MD = REPO / "docs" / "RESULTS.md"
PRETRAINED = REPO / "maugif_core" / "pretrained"
