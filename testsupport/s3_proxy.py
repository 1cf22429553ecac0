"""A loopback HTTP proxy in front of an S3 API server that injects the faults object stores really produce.

* :meth:`S3FaultProxy.slowdown`: answer ``503 SlowDown`` (S3's throttling error, XML body and all) to the next N
  requests or for a while, or to a random fraction of PUTs (seeded), as S3 does past ~3,500 PUT/s per prefix;
* :meth:`S3FaultProxy.outage`: stop listening (connection refused, open connections dropped) and resume later on
  the same port, as when an endpoint or the network path to it goes away.

Everything else is forwarded unchanged to the upstream server (moto's standalone server in the tests), so clients
sign and parse real S3 traffic. Requests are recorded (time, method, path, outcome) for assertions.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["RequestRecord", "S3FaultProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>maugif-fault-proxy</RequestId></Error>"
)


@dataclass(frozen=True)
class RequestRecord:
    at: float  # time.monotonic()
    method: str
    path: str
    outcome: str  # "forwarded" | "slowdown" | "upstream-error"
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: S3FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        proxy._track(self.connection)
        if proxy._take_slowdown(self.command):
            proxy._record(self.command, self.path, "slowdown", 503)  # before answering: no race with the client
            self.send_response(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_SLOWDOWN_BODY)))
            self.send_header("Retry-After", "1")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(_SLOWDOWN_BODY)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or "Content-Length" in self.headers or "chunked" in self.headers.get("Transfer-Encoding", ""):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            proxy._record(self.command, self.path, "forwarded", response.status)
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and not (key.lower() == "content-length" and self.command != "HEAD"):
                    self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (OSError, http.client.HTTPException):
            proxy._record(self.command, self.path, "upstream-error", 502)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_error(502)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's dispatch names


class S3FaultProxy:
    """Proxy on ``127.0.0.1`` forwarding to ``upstream`` (``http://host:port``); see the module docstring."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.port = port
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._slowdown_left = 0
        self._slowdown_until = 0.0
        self._put_fraction = 0.0
        self._rng = random.Random(0)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3FaultProxy:
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (clients see refused / reset connections)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    @contextlib.contextmanager
    def outage(self):
        """``with proxy.outage(): time.sleep(10)``: the endpoint is down inside the block, back on the same port
        after it."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def slowdown(self, requests: int = 0, seconds: float = 0.0, put_fraction: float = 0.0, seed: int = 0) -> None:
        """Answer 503 SlowDown to the next ``requests`` requests and/or to every request for ``seconds``, and from
        now on to a random ``put_fraction`` of PUT requests (drawn with ``seed``; 0 stops it)."""
        with self._lock:
            self._slowdown_left = requests
            self._slowdown_until = time.monotonic() + seconds
            self._put_fraction = put_fraction
            self._rng = random.Random(seed)

    def count(self, outcome: str) -> int:
        with self._lock:
            return sum(1 for r in self.records if r.outcome == outcome)

    def _take_slowdown(self, method: str) -> bool:
        with self._lock:
            if self._slowdown_left > 0:
                self._slowdown_left -= 1
                return True
            if method == "PUT" and self._put_fraction > 0 and self._rng.random() < self._put_fraction:
                return True
            return time.monotonic() < self._slowdown_until

    def _record(self, method: str, path: str, outcome: str, status: int) -> None:
        with self._lock:
            self.records.append(RequestRecord(time.monotonic(), method, path, outcome, status))

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
