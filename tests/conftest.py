"""Session fixtures shared by the whole suite: one local Ray instance and one real S3 API server.

Both are real components: Ray is a local instance (small defaults, dashboard off), S3 is moto's standalone server
listening on 127.0.0.1 on a free port, reached over HTTP by s3fs, boto3, pyarrow and GDAL alike.
"""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
TEST_DATA = Path(__file__).resolve().parent / "data"

# Dummy credentials for the local S3 server; never real ones.
_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback test clusters (ENVIRONMENT.md, pitfall 1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API server (moto standalone) on 127.0.0.1; yields its endpoint URL.

    ``AWS_ENDPOINT_URL`` and dummy credentials are exported for the session so that every client, including Ray
    worker processes started afterwards, reaches this server and nothing else.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*_S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(_S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the local S3 server; yields its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_session(s3_server: str) -> Iterator[None]:
    """One local Ray instance for the session (2 CPUs, small object store, dashboard off).

    Depends on ``s3_server`` so that the workers inherit ``AWS_ENDPOINT_URL`` and the dummy credentials.
    """
    import ray

    ray.init(
        address="local",  # never attach to a `ray start` cluster that happens to run on this machine
        num_cpus=2,
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {k: os.environ[k] for k in [*_S3_ENV, "AWS_ENDPOINT_URL"]}},
    )
    try:
        yield None
    finally:
        ray.shutdown()


# A third-party fusion method, installed the way pip installs one: a module plus a dist-info folder whose
# entry_points.txt registers it in the ``maugif.methods`` group. Fused = per-pixel maximum of A and B.
_PLUGIN_MODULE = """
import numpy as np


class BrighterMethod:
    name = "brighter"
    mechanism = "additive"
    halo = 0

    def fuse(self, image_a, image_b, *, task=None):
        return np.maximum(image_a, image_b.astype(image_a.dtype))
"""


@pytest.fixture
def method_plugin(tmp_path: Path) -> Path:
    """A folder holding an installed ``maugif.methods`` plugin named ``brighter``; put it on ``sys.path`` /
    ``PYTHONPATH`` to install it."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "maugif_brighter.py").write_text(_PLUGIN_MODULE)
    info = root / "maugif_brighter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: maugif-brighter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[maugif.methods]\nbrighter = maugif_brighter:BrighterMethod\n")
    return root


@pytest.fixture
def loopback_http() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that answers 404 and records every request path it receives: ``(url, hits)``."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
