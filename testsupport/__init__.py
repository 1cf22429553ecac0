"""Test and benchmark support (not installed, never imported by ``pipeline`` or ``maugif_core``).

- ``local_ray``: private Ray clusters on one machine for tests and benchmarks
- ``local_cluster``: the real ``ray up`` / ``ray submit`` / ``ray down`` cycle on one machine
- ``token_cluster``: a token-authenticated single-node cluster with its dashboard (and the docs' screenshots)
- ``node_loss``: a worker node lost in the middle of ``batch_fuse``
- ``s3_proxy``: a loopback proxy injecting S3 faults (503 SlowDown, outages) in front of the S3 server
- ``sample_pairs``: small real image pairs for operations tests and benchmarks
- ``screenshot``: headless Chromium screenshots of token-protected pages
"""
