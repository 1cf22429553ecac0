"""``maugif``: one console command for the jobs.

    maugif fuse     [options]     batch fusion (same as python jobs/batch_fuse.py)
    maugif train    [options]     training on Ray Train (python jobs/train.py)
    maugif evaluate [options]     metrics, tables and report (python jobs/evaluate.py)
    maugif check    JOB [options] the pre-flight checklist of fuse, train or evaluate, without starting Ray
    maugif methods                the fusion methods available for --method (built-in and plugins)

Every job command takes ``--config FILE.yaml``, repeatable ``--set KEY=VALUE`` and ``--print-config``; its
``--help`` lists every config key with its description. Installed as the ``maugif`` console script
(``[project.scripts]``); ``python -m pipeline.cli.main`` is the same.
"""

from __future__ import annotations

import sys

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line summary); modules are imported only for the command that runs.
COMMANDS = {
    "fuse": ("pipeline.cli.fuse", "Fuse every pair of a manifest or folder, resumably (batch job)."),
    "train": ("pipeline.cli.train", "Train a MAUGIF additive model on Ray Train."),
    "evaluate": ("pipeline.cli.evaluate", "Score methods on pairs: tables, plots, report."),
}

USAGE = """usage: maugif {fuse,train,evaluate,check,methods} ...

MAUGIF image fusion at scale on Ray.

commands:
%s
  check JOB   Run the pre-flight checks of JOB (fuse, train, evaluate) without starting Ray; exit 0 or 2.
  methods     List the fusion methods --method accepts (maugif, baselines, maugif.methods plugins).

`maugif COMMAND --help` lists the command's options and every config key with its description.
"""


def _usage() -> str:
    return USAGE % "\n".join(f"  {name:<10}  {summary}" for name, (_, summary) in COMMANDS.items())


def _list_methods() -> int:
    from maugif_core.methods import available_methods, get_method

    for name, origin in available_methods().items():
        try:
            method = get_method(name)
            print(f"{name:<12} {method.mechanism:<15} halo {int(method.halo):>3}  {origin}")
        except Exception as e:  # a broken plugin is listed with its reason, never hides the others
            print(f"{name:<12} (cannot be loaded: {e})  {origin}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``maugif COMMAND ...``; returns the exit code (2 for an unknown command)."""
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "methods":
        return _list_methods()
    if command == "check":
        if not rest or rest[0] not in COMMANDS:
            print(f"maugif check: error: expected a job to check ({', '.join(COMMANDS)}), got "
                  f"{rest[0] if rest else 'nothing'!r}", file=sys.stderr)  # fmt: skip
            return 2
        command, rest = rest[0], [*rest[1:], "--check"]
    if command not in COMMANDS:
        known = ", ".join([*COMMANDS, "check", "methods"])
        print(f"maugif: error: unknown command {command!r}: expected one of {known}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest, prog=f"maugif {command}")


if __name__ == "__main__":
    sys.exit(main())
