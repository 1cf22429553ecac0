"""Fusion-quality evaluation on Ray and its report.

Modules:

- ``evaluation``: every method on every pair, scored per pair, aggregated on the driver; with ``scenes`` (what
  methods see and are compared with), ``fused_dirs`` (already-fused folders) and ``peers`` (optional peer methods)
- ``evaluation_pairs``: which pairs methods may be compared on
- ``evaluation_report``: CSVs, Markdown table, plots, report.html
- ``images``: fused images encoded losslessly, grid thumbnails
- ``results``: the tooling that regenerates docs/RESULTS.md and the bundled checkpoints (scripts/make_results.py)
"""
