"""Fusion-quality evaluation on Ray and its report.

Modules:

- ``evaluation``: every method on every pair, scored per pair, aggregated on the driver
- ``evaluation_pairs``: which pairs methods may be compared on
- ``evaluation_report``: CSVs, Markdown table, plots, report.html
- ``images``: fused images encoded losslessly, grid thumbnails
"""
