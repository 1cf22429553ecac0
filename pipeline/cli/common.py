"""Command-line plumbing shared by the job entry points (``jobs/*.py``).

argparse only: a bad command line fails before pydantic, torch or Ray is imported.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_console_options", "job_parser", "preflight_gate", "report_preflight", "setup_logging"]

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


def add_console_options(parser: argparse.ArgumentParser) -> None:
    """``--check`` (print the pre-flight checklist and exit), ``--quiet`` and ``--verbose``."""
    parser.add_argument(
        "--check",
        action="store_true",
        help="Run the pre-flight checks (input, pairs, output, checkpoints) without starting Ray, print them as "
        "a checklist and exit (0: all passed, 2: a problem).",
    )
    volume = parser.add_mutually_exclusive_group()
    volume.add_argument("-q", "--quiet", action="store_true", help="Only errors and the final summary.")
    volume.add_argument(
        "-v", "--verbose", action="store_true", help="Log lines of every stage; tracebacks with errors."
    )


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (test runners and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(args: argparse.Namespace) -> None:
    """Console logging for a job: warnings by default, INFO with ``--verbose``, errors only with ``--quiet``."""
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _CurrentStderr)]
    if not root.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        ours = [handler]
    for handler in ours:
        handler.setLevel(level)  # also filters loggers that set their own level (werkzeug, botocore)
    root.setLevel(level)  # also when a host (pytest, a notebook) configured logging first


def report_preflight(prog: str, checks: list, args: argparse.Namespace) -> int | None:
    """Print the pre-flight outcome; return the exit code when the job must stop (``--check`` or a failure).

    ``--check``: the checklist on stdout, then 0 (all passed) or 2. Otherwise each failed check as one line
    ``<prog>: error: <problem>`` on stderr (with its traceback under ``--verbose``) and 2; None when all passed.
    """
    import sys
    import traceback

    from pipeline.cli.preflight import format_checks

    failed = [c for c in checks if c.ok is False]
    if getattr(args, "check", False):
        print(format_checks(checks))
        print(f"pre-flight: {'all checks passed' if not failed else f'{len(failed)} problem(s)'}")
        return 2 if failed else 0
    if args.verbose:
        print(format_checks(checks), file=sys.stderr)
    for check in failed:
        if args.verbose and check.error is not None:
            traceback.print_exception(check.error, file=sys.stderr)
        print(f"{prog}: error: {check.detail}", file=sys.stderr)
    return 2 if failed else None


def preflight_gate(prog: str, steps: list, args: argparse.Namespace) -> int | None:
    """The jobs' common start: console logging, the pre-flight checks, and (unless ``--verbose``) known warning
    noise silenced. Returns the exit code when the job must stop (``--check`` or a failed check), else None."""
    from pipeline.cli.preflight import run_checks

    setup_logging(args)
    code = report_preflight(prog, run_checks(steps), args)
    if code is None and not args.verbose:
        from pipeline.cli.console import quiet_known_warnings

        quiet_known_warnings()
    return code
