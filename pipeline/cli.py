"""Command-line plumbing shared by the job entry points (``jobs/*.py``).

argparse only: a bad command line fails before pydantic, torch or Ray is imported.
"""

from __future__ import annotations

import argparse

__all__ = ["job_parser"]

ADDRESS_HELP = (
    "Ray cluster to attach to: host:port, or 'auto' for the cluster started on this node by `ray start` "
    "(default: RAY_ADDRESS, else a new local Ray instance)."
)


def job_parser(
    prog: str, description: str, *, config_help: str, set_example: str, input_help: str, output_help: str
) -> argparse.ArgumentParser:
    """A parser with the options every job has: ``--config``, ``--set KEY=VALUE`` (repeatable, into
    ``overrides``), ``--input``, ``--output`` and ``--address``; the job adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"Override a config key, e.g. {set_example} (repeatable; applied after --config).",
    )
    parser.add_argument("--input", help=input_help)
    parser.add_argument("--output", help=output_help)
    parser.add_argument("--address", help=ADDRESS_HELP)
    return parser
