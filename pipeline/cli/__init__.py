"""The jobs' front door: argument plumbing, console output and pre-flight checks before Ray starts.

Modules:

- ``common``: job_parser, setup_logging, preflight_gate (shared by jobs/*.py)
- ``console``: what a job shows a person while it runs
- ``preflight, preflight_checkpoint, job_preflight``: the user mistakes found before Ray starts (exit 2)
"""
