"""The batch-fusion job on Ray Data: discovery -> decode -> fusion actor pool -> sink -> summary.

Modules:

- ``batch``: run_batch_fuse, the composition of the pieces below
- ``predictor``: FusionPredictor, the actor class for map_batches
- ``sinks``: the Ray Data datasink committing fused rows
- ``batch_summary, job_metrics, progress``: the summary and exit code, dashboard metrics, row progress
"""
