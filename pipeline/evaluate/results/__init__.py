"""The results tooling behind ``scripts/make_results.py``: test-set manifests, held-out training, evaluation runs,
the decision rules read off the evaluations, the bundled checkpoints with their model cards, and docs/RESULTS.md.

Modules:

- ``testsets``: the evaluated sets, the models trained for them, the bundled model per task, manifests
- ``schedule``: the training schedule and the ``jobs/train.py`` runs
- ``experiments``: the ``jobs/evaluate.py`` runs
- ``methods``, ``rows``, ``compare``, ``published``: method keys, reading the runs back, comparing means,
  published numbers
- ``rules``, ``targets``: the decision rules (BatchNorm mode, envelope, promotion) and the targets' verdicts
- ``card``, ``bundle``: model cards and the bundled checkpoints
- ``report``: the sections of docs/RESULTS.md
- ``cli``: the command line (``python scripts/make_results.py --help``)

Nothing else in ``pipeline`` imports this package.
"""
