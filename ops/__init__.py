"""Operations tooling: the cluster definition's validation and single-machine variants, local clusters for
tests and benchmarks, metrics scraping, dashboard screenshots. Not part of the installed package; nothing in
``pipeline`` or ``maugif_core`` imports it.
"""
