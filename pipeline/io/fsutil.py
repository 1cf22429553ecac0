"""Filesystem helpers for outputs: safe key joins and atomic writes, on local disk and on s3:// alike.

Atomicity: an object is first written under a temporary key ``<name>.tmp-<uuid>`` in the same prefix and then
moved to its final key (``os.replace`` locally, which is atomic; on S3 fsspec's ``mv``, a server-side copy
then a delete). Readers therefore never see a partial object under a final name, and the temporary key is
removed on failure. Names are deterministic, so writing the same object again replaces it with identical
bytes.
"""

from __future__ import annotations

import logging
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import OutputKeyError, RasterWriteError
from pipeline.io.storage import call_with_retries, get_filesystem

__all__ = [
    "TEMP_MARKER",
    "atomic_open",
    "atomic_write_bytes",
    "filesystem_for",
    "is_local",
    "join_key",
    "read_bytes",
    "strip_protocol",
]

logger = logging.getLogger(__name__)

TEMP_MARKER = ".tmp-"  # temporary objects are named <final name>.tmp-<uuid hex>


def filesystem_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and its path without scheme (see ``pipeline.io.storage``).

    For ``s3://`` the endpoint, region and botocore retry settings come from the standard AWS environment
    (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, credentials chain) through the default ``StorageConfig``.

    Args:
        uri: a local path, ``file://`` or ``s3://`` URI.

    Returns:
        ``(filesystem, path)``: ``bucket/key`` for S3, an absolute path locally; no trailing slash.
    """
    fs, path = get_filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local filesystem (where ``os.replace`` gives an atomic rename)."""
    return isinstance(fs, LocalFileSystem)


def strip_protocol(uri: str) -> str:
    """``uri`` without its ``scheme://`` part."""
    return fsspec.core.split_protocol(uri)[1]


def join_key(prefix: str, *parts: str) -> str:
    """Join relative key parts under ``prefix``, refusing anything that would land outside it.

    Args:
        prefix: the output location (URI or path); returned keys keep its scheme.
        parts: relative key components, e.g. ``("scene-1", "0_3.tif")``; each may contain ``/`` separators.

    Returns:
        ``prefix/part1/part2...``.

    Raises:
        OutputKeyError: a part is empty, absolute, contains ``..``, a backslash, a NUL or a control character,
            or the joined key is not strictly below ``prefix``.
    """
    base = prefix.rstrip("/")
    clean: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise OutputKeyError(f"output key part must be a non-empty string; got {part!r} under {prefix!r}")
        if part.startswith("/") or "\\" in part or any(ord(ch) < 32 for ch in part):
            raise OutputKeyError(
                f"output key part {part!r} is absolute or has a backslash/control character (under {prefix!r})"
            )
        for piece in part.split("/"):
            if piece in ("", ".", ".."):
                raise OutputKeyError(
                    f"output key part {part!r} has an empty, '.' or '..' component; keys must stay under {prefix!r}"
                )
            clean.append(piece)
    joined = posixpath.normpath(posixpath.join(strip_protocol(base) or "/", *clean))
    root = posixpath.normpath(strip_protocol(base) or "/")
    if not joined.startswith(root.rstrip("/") + "/"):
        raise OutputKeyError(f"output key {'/'.join(parts)!r} escapes the output prefix {prefix!r}")
    return base + "/" + "/".join(clean)


def _temp_path(path: str) -> str:
    return f"{path}{TEMP_MARKER}{uuid.uuid4().hex}"


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if is_local(fs):
            os.remove(path)
        else:
            fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception:  # cleanup must never hide the original error
        logger.warning("could not remove temporary object %s", path, exc_info=True)


_SINGLE_COPY_MAX = 5 * 2**30
"""S3's CopyObject limit: a larger object needs a multipart copy (``fs.mv`` picks it after asking the size)."""


def _commit(fs: fsspec.AbstractFileSystem, temp: str, final: str, size: int | None = None) -> None:
    """Move the complete temporary object to its final name; retried with jittered backoff on 503 SlowDown and
    transient errors (USERS.md row 13).

    On S3 with a known ``size`` under 5 GiB: one CopyObject and one DeleteObject. ``fs.mv`` would first list and
    HEAD the temporary key and delete it through DeleteObjects: six requests per output instead of three with the
    PUT (measured through the fault proxy), and at a million outputs each request counts against S3's per-prefix
    rates. Once the copy succeeded the output is committed: a temporary object that cannot be deleted is logged and
    left (``<name>.tmp-<uuid>``, safe to delete, never taken for an output)."""
    if is_local(fs):
        os.replace(temp, final)
        return
    copy_basic = getattr(fs, "_copy_basic", None)  # s3fs's single CopyObject (public copy() asks the size first)
    if size is None or size > _SINGLE_COPY_MAX or copy_basic is None or getattr(fs, "loop", None) is None:
        call_with_retries(lambda: fs.mv(temp, final), what=f"commit {final}")
    else:
        from fsspec.asyn import sync

        call_with_retries(lambda: sync(fs.loop, copy_basic, temp, final), what=f"commit {final}")
        try:
            call_with_retries(lambda: fs.rm_file(temp), what=f"remove {temp}")
        except FileNotFoundError:
            pass
        except Exception:
            logger.warning("committed %s, but could not remove its temporary object %s", final, temp, exc_info=True)
    fs.invalidate_cache(posixpath.dirname(final))


def _path_for(fs: fsspec.AbstractFileSystem, uri: str) -> str:
    path = strip_protocol(uri)
    return os.path.abspath(path) if is_local(fs) else path


@contextmanager
def atomic_open(uri: str, fs: fsspec.AbstractFileSystem | None = None) -> Iterator[IO[bytes]]:
    """Open ``uri`` for binary writing; the object appears under its final name only if the block completes.

    Prefer :func:`atomic_write_bytes` for objects encoded in memory: on S3 it is one PUT of the temporary key.

    Args:
        uri: the final key (URI or path).
        fs: the filesystem to use; built from ``uri`` when None.

    Yields:
        A writable binary file object on a temporary key in the same prefix.

    Raises:
        RasterWriteError: the object could not be committed (the cause is chained); errors raised inside the
            caller's block propagate unchanged. In both cases the temporary object is removed.
    """
    if fs is None:
        fs, _ = filesystem_for(uri)
    path = _path_for(fs, uri)
    temp = _temp_path(path)
    if is_local(fs):
        os.makedirs(posixpath.dirname(path), exist_ok=True)
    committed = False
    try:
        with fs.open(temp, "wb") as handle:
            yield handle
        try:
            _commit(fs, temp, path)
        except Exception as e:
            raise RasterWriteError(f"could not move {temp!r} to its final name {uri!r}: {e}") from e
        committed = True
    finally:
        if not committed:
            _remove_quietly(fs, temp)


def atomic_write_bytes(uri: str, data: bytes, fs: fsspec.AbstractFileSystem | None = None) -> int:
    """Write ``data`` to ``uri`` atomically (temporary key, then rename/copy).

    Args:
        uri: the final key.
        data: the complete object.
        fs: the filesystem to use; built from ``uri`` when None.

    Returns:
        The number of bytes written.

    Raises:
        RasterWriteError: the object could not be written; nothing is left under the final or a temporary name
            (a previous complete object under the final name, if any, is kept).
    """
    if fs is None:
        fs, _ = filesystem_for(uri)
    path = _path_for(fs, uri)
    temp = _temp_path(path)
    committed = False
    try:
        if is_local(fs):
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            with open(temp, "wb") as handle:
                handle.write(data)
        else:
            call_with_retries(lambda: fs.pipe_file(temp, data), what=f"write {temp}")
        _commit(fs, temp, path, size=len(data))
        committed = True
    except Exception as e:
        raise RasterWriteError(f"could not write {uri!r} (via temporary {temp!r}): {e}") from e
    finally:
        if not committed:
            _remove_quietly(fs, temp)
    return len(data)


def read_bytes(uri: str, fs: fsspec.AbstractFileSystem | None = None) -> bytes:
    """Read a whole object (small outputs: manifests, VRTs, STAC items)."""
    if fs is None:
        fs, _ = filesystem_for(uri)
    return fs.cat_file(_path_for(fs, uri))
