"""Distributed MAUGIF training on Ray Train.

Modules:

- ``training``: the Ray Train loop, checkpoints and resume
"""
