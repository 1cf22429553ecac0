"""Read guards and valid images (issue 12, cases 4-6).

Special files, endless streams, oversized objects and schemes outside the allow-list fail as read errors naming
the URI, without hanging and without fetching anything; grey + alpha and EXIF-rotated images are read as shown."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import RasterReadError
from pipeline.io.decode import decode_pair
from pipeline.io.readers import read_image


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
def test_http_uri_in_a_manifest_is_a_pair_failure_and_never_fetched(loopback_http: tuple[str, list[str]]) -> None:
    base, hits = loopback_http
    url = f"{base}/a.png"
    row = {"pair_id": "p1", "uri_a": url, "uri_b": url, "task": "vif", "status": "ok"}
    out = decode_pair(row, ReadConfig(), StorageConfig())
    assert out["status"] == "failed"
    assert url in out["error"] and "allowed_schemes" in out["error"]
    assert hits == []  # the loopback server was never reached


def test_grey_alpha_png_reads_as_grey_with_alpha_and_fuses(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    import maugif_core

    rng = np.random.default_rng(0)
    grey = (rng.random((20, 24)) * 255).astype(np.uint8)
    alpha = np.full_like(grey, 200)
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey, alpha]), mode="LA").save(path)
    image, _ = read_image(str(path))
    assert image.shape == (20, 24, 4)
    np.testing.assert_array_equal(image[..., 0], grey)
    np.testing.assert_array_equal(image[..., 1], grey)
    np.testing.assert_array_equal(image[..., 3], alpha)
    fused = maugif_core.pretrained("vif").fuse(image, grey)
    assert fused.shape[:2] == (20, 24)


def test_exif_rotated_jpeg_is_read_upright(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    stored = np.zeros((10, 30, 3), np.uint8)  # landscape pixels, with a tag saying "rotate 90 degrees clockwise"
    stored[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image, _ = read_image(str(path))
    assert image.shape[:2] == (30, 10)  # displayed as portrait, like its partner
    assert image[:5].mean() > 200 and image[-5:].mean() < 50  # the bright left band is now the top


@pytest.mark.timeout(30)
def test_object_that_stalls_past_the_read_timeout_fails_as_one_record_naming_it() -> None:
    """A server that answers the size at once, then never sends the bytes (a stalled object store): the read gives
    up after ``read.read_timeout_s`` and the pair fails naming the URI; the partner is never waited for."""
    import time

    release = threading.Event()
    gets: list[str] = []

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", "4096")
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            gets.append(self.path)
            release.wait(60)  # stall until the test ends

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/stalled.png"
        storage = StorageConfig(allowed_schemes=("file", "s3", "http"))
        config = ReadConfig(read_timeout_s=1.0)
        started = time.perf_counter()
        with pytest.raises(RasterReadError, match=r"stalled\.png: read timed out after 1 s \(read\.read_timeout_s\)"):
            read_image(url, config=config, storage=storage)
        assert time.perf_counter() - started < 5.0
        assert gets, "the read reached the server (it was allowed), then stalled there"

        row = {"pair_id": "slow", "uri_a": url, "uri_b": url, "task": "vif", "status": "ok"}
        started = time.perf_counter()
        out = decode_pair(row, config, storage)
        assert time.perf_counter() - started < 5.0  # one timeout, not one per image
        assert out["status"] == "failed" and out["error_stage"] == "read"
        assert out["error"].startswith(f"{url}: read timed out") and "read.read_timeout_s" in out["error"]
    finally:
        release.set()
        server.shutdown()
