"""The jobs' front door: argument plumbing, console output and pre-flight checks before Ray starts.

Modules:

- ``main``: the ``maugif`` console command (fuse, train, evaluate, check, methods)
- ``fuse``, ``train``, ``evaluate``: each job's command (``main(argv, prog) -> int``); ``jobs/*.py`` wrap them
- ``common``: job_parser (help from the config models, --print-config), setup_logging, preflight_gate
- ``console``: what a job shows a person while it runs
- ``preflight, preflight_checkpoint, job_preflight``: the user mistakes found before Ray starts (exit 2)
"""
