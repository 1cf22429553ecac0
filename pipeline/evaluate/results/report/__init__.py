"""docs/RESULTS.md, one module per group of sections; :func:`cmd_report` writes the page."""

from pipeline.evaluate.results.report.page import cmd_report

__all__ = ["cmd_report"]
