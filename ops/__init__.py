"""Operations tooling users run against a cluster: ``cluster_config`` validates ``ray_cluster.yaml`` offline (and
derives its single-machine variants), ``metrics`` reads a job's metrics where Prometheus reads them, and
``grafana_dashboard.json`` is the dashboard to import. Not part of the installed package; nothing in ``pipeline`` or
``maugif_core`` imports it. Test and benchmark machinery lives in ``testsupport/``.
"""
