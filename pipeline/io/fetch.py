"""Guarded access to the bytes of an image: format sniffing, special files and oversize objects refused before
any read, fetches bounded in size and time (``read.max_object_bytes``, ``read.read_timeout_s``), with retries on
throttling. Every failure is a :class:`~pipeline.errors.RasterReadError` naming the URI and what was expected.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import RasterReadError
from pipeline.io.storage import (
    call_with_deadline,
    call_with_retries,
    disallowed_scheme,
    get_filesystem,
    strip_protocol,
    uri_scheme,
)

__all__ = ["sniff_format"]

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_HEAD_BYTES = 64


def sniff_format(head: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"``, ``"TIFF"`` or ``"BMP"`` from a file's first bytes, else None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _error_text(uri: str, e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return f"{uri}: not found (missing file, key or bucket): {e}"
    if isinstance(e, PermissionError):
        return f"{uri}: access denied: {e}"
    return f"{uri}: {type(e).__name__}: {e}"


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _check_object(uri: str, config: ReadConfig, storage: StorageConfig | None) -> int | None:
    """Refuse what must not be read before touching its bytes; returns the object's size (None: unknown).

    A scheme outside ``storage.allowed_schemes``, anything but a regular file (a FIFO blocks forever on open,
    ``/dev/zero`` never ends) and objects over ``config.max_object_bytes`` fail here, at the cost of one
    ``stat`` (local) or one HEAD request (object storage).
    """
    reason = disallowed_scheme(uri, storage)
    if reason:
        raise RasterReadError(reason)
    try:
        if uri_scheme(uri) == "file":
            info = os.stat(strip_protocol(uri))
            for test, kind in _FILE_KINDS:
                if test(info.st_mode):
                    raise RasterReadError(f"{uri}: {kind}, not a regular file: expected a PNG, JPEG, BMP or TIFF file")
            size = int(info.st_size) or None  # /proc-like files report 0: read them bounded
        else:
            fs, path = get_filesystem(uri, storage)
            info = call_with_retries(lambda: fs.info(path), config=storage, what=f"stat {uri}")
            if info.get("type") == "directory":
                raise RasterReadError(f"{uri}: a folder, not a file: expected a PNG, JPEG, BMP or TIFF file")
            size = info.get("size")
            size = None if size is None else int(size)
    except (OSError, ValueError) as e:
        raise RasterReadError(_error_text(uri, e)) from e
    if size is not None and size > config.max_object_bytes:
        raise RasterReadError(
            f"{uri}: {size} bytes exceeds read.max_object_bytes={config.max_object_bytes}: expected a smaller object"
        )
    return size


def _bounded(uri: str, config: ReadConfig, fn: Any) -> Any:
    """``fn()`` under ``config.read_timeout_s``; a timeout becomes a :class:`RasterReadError` naming the URI."""
    try:
        return call_with_deadline(fn, config.read_timeout_s, what=f"read {uri}")
    except TimeoutError as e:
        raise RasterReadError(
            f"{uri}: read timed out after {config.read_timeout_s:g} s (read.read_timeout_s): expected an image "
            "that can be read in that time"
        ) from e


def _fetch(
    uri: str,
    storage: StorageConfig | None,
    *,
    head_only: bool = False,
    size: int | None = None,
    limit: int | None = None,
) -> bytes:
    """The file's bytes (or its first bytes) through fsspec, with operation retries on throttling.

    ``size`` is the object's known size; when it is unknown the whole read stops past ``limit`` bytes and fails.
    """
    try:
        fs, path = get_filesystem(uri, storage)
        if not head_only and size is None and limit is not None:

            def read_bounded() -> bytes:
                with fs.open(path, "rb") as handle:
                    return handle.read(limit + 1)

            data = call_with_retries(read_bounded, config=storage, what=f"read {uri}")
            if len(data) > limit:
                raise RasterReadError(
                    f"{uri}: more than read.max_object_bytes={limit} bytes: expected a smaller object"
                )
            return data
        if head_only:
            try:
                return call_with_retries(
                    lambda: fs.cat_file(path, start=0, end=_HEAD_BYTES), config=storage, what=f"read {uri}"
                )
            except OSError as e:  # S3 answers 416 to a range request on an empty object
                if "range" not in str(e).lower() or fs.size(path) != 0:
                    raise
                return b""
        return call_with_retries(lambda: fs.cat_file(path), config=storage, what=f"read {uri}")
    except (OSError, ValueError) as e:
        raise RasterReadError(_error_text(uri, e)) from e


def _check_not_empty(uri: str, head: bytes) -> str:
    if not head:
        raise RasterReadError(f"{uri}: empty file (0 bytes): expected a PNG, JPEG, BMP or TIFF image")
    fmt = sniff_format(head)
    if fmt is None:
        raise RasterReadError(
            f"{uri}: unrecognised format: expected PNG, JPEG, BMP or TIFF signature bytes, found {head[:8]!r}"
        )
    return fmt


def _check_dtype(uri: str, dtype: str, config: ReadConfig) -> None:
    if dtype not in config.allowed_dtypes:
        raise RasterReadError(f"{uri}: unsupported dtype {dtype!r}: expected one of {', '.join(config.allowed_dtypes)}")
