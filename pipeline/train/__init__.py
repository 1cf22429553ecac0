"""Distributed MAUGIF training on Ray Train.

Modules:

- ``training``: the driver: run_training, build_trainer, check_resumable, load_model
- ``data``: pairs decoded to luma planes on CPU tasks (build_dataset), seeded per-worker crops
- ``worker``: train_loop_per_worker, the loop every Ray Train worker runs
- ``checkpoints``: the checkpoint folder's files, TrainState, checkpoint_score
"""
