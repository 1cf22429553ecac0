"""The job commands behind the ``maugif`` console script and the ``jobs/*.py`` wrappers: ``fuse``, ``train``,
``evaluate`` (each ``main(argv, prog) -> int``), and :mod:`pipeline.commands.main`, the ``maugif`` dispatcher."""
