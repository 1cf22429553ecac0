"""Command-line plumbing shared by the job entry points (``maugif`` sub-commands, ``jobs/*.py``).

argparse only: a bad command line fails before pydantic, torch or Ray is imported. ``--help`` is the exception:
it lists every config key (``--set KEY=VALUE``) with its description, generated from the pydantic model, and
fills in the help of dedicated flags from the fields they set.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from typing import Any

__all__ = [
    "ConfigHelpParser",
    "add_console_options",
    "config_keys_help",
    "field_description",
    "job_parser",
    "preflight_gate",
    "report_preflight",
    "setup_logging",
]


def _model(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _submodel(annotation: Any) -> Any:
    from pydantic import BaseModel

    from pipeline.config.loading import _unwrap

    models = [t for t in _unwrap(annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if models else None


def field_description(model_cls: Any, key: str) -> str | None:
    """The ``Field(description=...)`` of the dotted ``key`` below ``model_cls`` (None when there is none)."""
    current = model_cls
    field = None
    for part in key.split("."):
        if current is None or part not in current.model_fields:
            return None
        field = current.model_fields[part]
        current = _submodel(field.annotation)
    return field.description if field is not None else None


def config_keys_help(model_cls: Any, prefix: str = "") -> list[str]:
    """One ``key  description`` line per leaf config key (sections expanded), in declaration order."""
    lines = []
    for name, field in model_cls.model_fields.items():
        sub = _submodel(field.annotation)
        if sub is not None:
            lines.extend(config_keys_help(sub, f"{prefix}{name}."))
        else:
            head = (
                f"  {prefix}{name} (required)"
                if field.is_required()
                else (f"  {prefix}{name} = {field.get_default(call_default_factory=True)!r}")
            )
            text = textwrap.fill(
                field.description or "", width=100, initial_indent="      ", subsequent_indent="      "
            )
            lines.append(f"{head}\n{text}")
    return lines


class ConfigHelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose help comes from the job's config model: flags with ``config_key`` and no help
    text take their field's description, and the epilog lists every ``--set`` key with its description. The model
    is imported only when help is printed."""

    def __init__(self, *args: Any, config_model: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.config_model = config_model

    def add_argument(self, *args: Any, config_key: str | None = None, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        action.config_key = config_key  # type: ignore[attr-defined]
        return action

    def format_help(self) -> str:
        if self.config_model is None:
            return super().format_help()
        model = _model(self.config_model)
        for action in self._actions:
            key = getattr(action, "config_key", None)
            if key and not action.help:
                description = field_description(model, key)
                action.help = f"{description} (sets {key})" if description else f"Sets {key}."
        keys = "\n".join(config_keys_help(model))
        self.epilog = (
            f"{self.epilog or ''}\n\nconfig keys ({model.__name__}; --config YAML or --set KEY=VALUE):\n{keys}"
        )
        try:
            return super().format_help()
        finally:
            self.epilog = None


ADDRESS_HELP = (
    "Ray cluster to attach to: host:port, or 'auto' for the cluster started on this node by `ray start` "
    "(default: RAY_ADDRESS, else a new local Ray instance)."
)


def job_parser(
    prog: str,
    description: str,
    *,
    config_help: str,
    set_example: str,
    input_help: str,
    output_help: str,
    config_model: str | None = None,
) -> ConfigHelpParser:
    """A parser with the options every job has: ``--config``, ``--set KEY=VALUE`` (repeatable, into
    ``overrides``), ``--input``, ``--output``, ``--address`` and ``--print-config``; the job adds its own.

    ``config_model`` (``"module:Class"``) generates the help's list of config keys (see :class:`ConfigHelpParser`).
    """
    parser = ConfigHelpParser(prog=prog, description=description, config_model=config_model)
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="Print the resolved config (YAML: defaults, --config, --set and flags applied) and exit 0.",
    )
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
