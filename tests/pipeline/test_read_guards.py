"""Read guards (issue 12, case 4 and 6): special files, endless streams, oversized objects and schemes outside the
allow-list fail as read errors naming the URI, without hanging and without fetching anything."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from pipeline.errors import RasterReadError
from pipeline.io_config import ReadConfig, StorageConfig
from pipeline.readers import decode_pair, read_image


@pytest.mark.timeout(30)
def test_fifo_fails_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block forever: nothing ever writes to it
    with pytest.raises(RasterReadError, match=r"pipe\.png.*regular file"):
        read_image(str(fifo))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_devices_fail_without_hanging(device: str) -> None:
    with pytest.raises(RasterReadError, match=device):
        read_image(device)


@pytest.mark.timeout(30)
def test_object_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10_000)
    with pytest.raises(RasterReadError, match=r"big\.png.*max_object_bytes=1000"):
        read_image(str(big), config=ReadConfig(max_object_bytes=1000))


@pytest.mark.timeout(30)
def test_http_uri_in_a_manifest_is_a_pair_failure_and_never_fetched(tmp_path: Path) -> None:
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

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/a.png"
        row = {"pair_id": "p1", "uri_a": url, "uri_b": url, "task": "vif", "status": "ok"}
        out = decode_pair(row, ReadConfig(), StorageConfig())
        assert out["status"] == "failed"
        assert url in out["error"] and "allowed_schemes" in out["error"]
        assert hits == []  # the loopback server was never reached
    finally:
        server.shutdown()
