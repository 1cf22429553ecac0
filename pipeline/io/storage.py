"""Filesystem access for every URI the pipeline touches: local paths, ``file://`` and ``s3://``.

Filesystems are built from a :class:`~pipeline.config.io_config.StorageConfig` inside the process that uses them
(configs travel, filesystems do not). By default everything comes from the standard AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, credentials chain), so the same job runs against AWS, MinIO or a local
test server unchanged.

Throttling is handled twice: botocore retries each request (``retry_mode`` ``adaptive`` rate-limits after 503
SlowDown), and :func:`call_with_retries` retries whole operations with full-jitter exponential backoff when
botocore gives up, so a burst of SlowDown costs time, not pairs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import fsspec
from fsspec.core import url_to_fs

from pipeline.config.io_config import StorageConfig

__all__ = [
    "call_with_deadline",
    "call_with_retries",
    "retry_count",
    "disallowed_scheme",
    "uri_scheme",
    "filesystem_for",
    "iter_files",
    "list_child_dirs",
    "to_uri",
    "gdal_path",
    "get_filesystem",
    "is_retryable",
    "is_s3",
    "join_uri",
    "parent_uri",
    "rasterio_env",
    "resolve_endpoint",
    "s3fs_options",
    "strip_protocol",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "503",
        "500",
    }
)
# Operation retries taken by call_with_retries in this process (a Ray worker reports deltas: see retry_count).
_RETRIES_TAKEN = [0]
_RETRIES_LOCK = threading.Lock()

_THROTTLE_TEXT = ("slowdown", "slow down", "throttl", "reduce your request rate", "service unavailable")


def is_s3(uri: str) -> bool:
    """True for ``s3://`` / ``s3a://`` URIs."""
    return uri.split("://", 1)[0].lower() in ("s3", "s3a") if "://" in uri else False


def uri_scheme(uri: str) -> str:
    """The scheme a URI is read through: ``"file"`` for local paths and ``file://``, ``"s3"`` for ``s3://`` and
    ``s3a://``, else the lower-cased text before ``://`` (a chained fsspec URL keeps its whole chain, e.g.
    ``"simplecache::s3"``, so it matches no plain entry)."""
    if "://" not in uri:
        return "file"
    scheme = uri.split("://", 1)[0].lower()
    return "s3" if scheme == "s3a" else scheme


def disallowed_scheme(uri: str, config: StorageConfig | None = None) -> str | None:
    """None when ``config.allowed_schemes`` admits ``uri``, else the reason (naming the URI and what is allowed)."""
    allowed = (config or StorageConfig()).allowed_schemes
    scheme = uri_scheme(uri)
    if scheme in allowed:
        return None
    return (
        f"{uri}: scheme {scheme!r} is not allowed: expected one of {', '.join(repr(a) for a in allowed)} "
        "(storage.allowed_schemes)"
    )


def call_with_deadline(fn: Callable[[], T], seconds: float, *, what: str) -> T:
    """Run ``fn`` with a wall-clock limit; past it raise :class:`TimeoutError` and abandon the call.

    ``fn`` runs in a daemon thread (a blocked read cannot be interrupted, so it is left behind rather than
    holding the worker); calls nested inside ``fn`` run inline under the outer deadline.
    """
    if getattr(_DEADLINE, "active", False):
        return fn()
    outcome: dict[str, Any] = {}

    def run() -> None:
        _DEADLINE.active = True
        try:
            outcome["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name=f"deadline: {what}"[:60], daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        logger.warning("%s: no result after %.1f s; abandoning the call", what, seconds)
        raise TimeoutError(f"{what}: no result after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_DEADLINE = threading.local()


def strip_protocol(uri: str) -> str:
    """``s3://bucket/key`` → ``bucket/key``; ``file:///x`` → ``/x``; local paths unchanged."""
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    return rest if scheme.lower() != "file" else (rest if rest.startswith("/") else "/" + rest)


def join_uri(base: str, relative: str) -> str:
    """Resolve ``relative`` against the folder URI ``base``; absolute URIs and paths are returned unchanged.

    Args:
        base: A folder, e.g. ``s3://bucket/prefix`` or ``/data/pairs``.
        relative: A path such as ``vi/01.png``; ``s3://…``, ``file://…`` and ``/abs`` pass through.
    """
    if "://" in relative or relative.startswith("/") or (len(relative) > 1 and relative[1] == ":"):
        return relative
    rel = relative[2:] if relative.startswith("./") else relative
    return base.rstrip("/") + "/" + rel


def parent_uri(uri: str) -> str:
    """The folder of a file URI, keeping its scheme (``s3://b/p/m.csv`` → ``s3://b/p``)."""
    head, sep, _ = uri.rstrip("/").rpartition("/")
    if not sep:
        return "."
    if head.endswith(":/") or head.endswith("://"):  # "s3://bucket" has no parent beyond the bucket
        return uri
    return head or "/"


def resolve_endpoint(config: StorageConfig | None = None) -> str | None:
    """The S3 endpoint: the config's, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else None."""
    if config is not None and config.endpoint_url:
        return config.endpoint_url
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3fs_options(config: StorageConfig | None = None) -> dict[str, Any]:
    """Keyword arguments for ``s3fs.S3FileSystem`` from a config (no credentials: boto's chain finds them)."""
    config = config or StorageConfig()
    client_kwargs: dict[str, Any] = {}
    endpoint = resolve_endpoint(config)
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    options: dict[str, Any] = {
        "anon": config.anonymous,
        "client_kwargs": client_kwargs,
        "config_kwargs": {
            "retries": {"max_attempts": config.max_attempts, "mode": config.retry_mode},
            "connect_timeout": config.connect_timeout_s,
            "read_timeout": config.read_timeout_s,
            "max_pool_connections": config.max_pool_connections,
        },
    }
    if config.profile:
        options["profile"] = config.profile
    return options


def get_filesystem(uri: str, config: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path to use with it.

    fsspec caches instances per argument set, so repeated calls in one worker reuse one connection pool.

    Args:
        uri: Local path, ``file://…`` or ``s3://bucket/key``.
        config: Storage settings for ``s3://``; ignored for local paths.

    Returns:
        ``(filesystem, path)`` where ``path`` has no scheme (``bucket/key`` for S3).
    """
    if is_s3(uri):
        fs, path = url_to_fs(uri, **s3fs_options(config))
        _count_retries_of(fs)
        return fs, path
    return url_to_fs(uri)


def is_retryable(exc: BaseException) -> bool:
    """True for throttling and transient server errors (503 SlowDown ...), false for 404, 403 and the like."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {}) or {}
        code = str(error.get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _THROTTLE_CODES or status in (500, 502, 503, 504):
            return True
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _THROTTLE_TEXT)


def call_with_retries(
    fn: Callable[[], T],
    *,
    config: StorageConfig | None = None,
    what: str = "storage operation",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` and retry it on throttling/transient errors with full-jitter exponential backoff.

    Non-retryable errors (missing key, access denied, decode errors) propagate at once.

    Args:
        fn: The operation, without arguments.
        config: Supplies ``operation_retries``, ``backoff_base_s`` and ``backoff_max_s``.
        what: Used in log lines, e.g. ``"read s3://b/k.png"``.
        sleep: Injectable for tests of the backoff schedule.
    """
    config = config or StorageConfig()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:
            if attempt >= config.operation_retries or not is_retryable(e):
                raise
            delay = random.uniform(0.0, min(config.backoff_max_s, config.backoff_base_s * 2**attempt))
            attempt += 1
            with _RETRIES_LOCK:
                _RETRIES_TAKEN[0] += 1
            logger.warning(
                "%s: transient error (%s), retry %d/%d in %.2fs",
                what,
                e,
                attempt,
                config.operation_retries,
                delay,
            )
            sleep(delay)


def _count_request_retries(parsed: Any = None, **_: Any) -> None:
    """botocore ``after-call`` hook: adds the request's ``RetryAttempts`` (botocore's own retries) to the count."""
    try:
        retries = int((parsed or {}).get("ResponseMetadata", {}).get("RetryAttempts") or 0)
    except (AttributeError, TypeError, ValueError):
        return
    if retries:
        with _RETRIES_LOCK:
            _RETRIES_TAKEN[0] += retries


def _count_retries_of(fs: fsspec.AbstractFileSystem) -> None:
    """Hook :func:`_count_request_retries` into an s3fs filesystem's botocore client (once per instance)."""
    if getattr(fs, "_maugif_counts_retries", False):
        return
    try:
        fs.connect()  # builds the client (no request); fsspec's instance cache then keeps it per process
        fs.s3.meta.events.register("after-call.s3", _count_request_retries)
        fs._maugif_counts_retries = True
    except Exception:  # counting is informative only: never fail an operation because of it
        logger.debug("could not hook the retry counter into %r", fs, exc_info=True)


def retry_count() -> int:
    """Storage retries taken in this process so far (all threads): whole operations retried by
    :func:`call_with_retries` plus requests botocore retried itself (its ``RetryAttempts``, on S3 filesystems
    built by :func:`get_filesystem`).

    Ray reuses worker processes, so a task reports the difference between this count at its end and at its
    start (see ``pipeline.fuse.batch.decode_row`` and ``pipeline.fuse.sinks.FusedImageDatasink.write``).
    """
    with _RETRIES_LOCK:
        return _RETRIES_TAKEN[0]


def gdal_path(uri: str) -> str:
    """A path GDAL opens natively: ``s3://b/k`` → ``/vsis3/b/k``; ``file:///x`` → ``/x``; local unchanged."""
    if is_s3(uri):
        return "/vsis3/" + strip_protocol(uri)
    return strip_protocol(uri)


def _gdal_endpoint(endpoint: str) -> tuple[str, bool]:
    """``http://host:port`` → (``host:port``, https?) in the form AWSSession / GDAL expect."""
    parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    return parts.netloc + parts.path.rstrip("/"), parts.scheme.lower() == "https"


@contextlib.contextmanager
def rasterio_env(uri: str | None = None, config: StorageConfig | None = None, **options: Any) -> Iterator[None]:
    """A ``rasterio.Env`` for reading ``uri``: no directory listing on open, and an AWSSession for ``s3://``.

    ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` stops GDAL listing a whole prefix to look for sidecar files on
    every open (rasterio#987). For S3 the session carries the endpoint (path-style addressing, HTTP or HTTPS
    from its scheme), the profile or anonymous access; credentials come from boto's chain and are never passed
    as GDAL options (that raises ``EnvError``).

    Args:
        uri: The URI about to be opened; None or a local path needs no session.
        config: Storage settings.
        **options: Extra GDAL options, e.g. ``CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE="YES"`` for writing.
    """
    import rasterio
    from rasterio.session import AWSSession

    env: dict[str, Any] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", **options}
    session = None
    if uri is not None and is_s3(uri):
        config = config or StorageConfig()
        endpoint = resolve_endpoint(config)
        kwargs: dict[str, Any] = {"aws_unsigned": config.anonymous}
        if config.profile:
            kwargs["profile_name"] = config.profile
        region = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region_name"] = region
        if endpoint:
            host, https = _gdal_endpoint(endpoint)
            kwargs["endpoint_url"] = host
            env["AWS_HTTPS"] = "YES" if https else "NO"
            env["AWS_VIRTUAL_HOSTING"] = "FALSE"
        env.setdefault("GDAL_HTTP_MAX_RETRY", str(config.max_attempts))
        env.setdefault("GDAL_HTTP_RETRY_DELAY", str(config.backoff_base_s))
        session = AWSSession(**kwargs)
    with rasterio.Env(session=session, **env):
        yield


def to_uri(path: str, like: str) -> str:
    """Give a filesystem path the scheme of ``like`` (``bucket/k`` + ``s3://…`` → ``s3://bucket/k``)."""
    if "://" not in like:
        return path
    scheme = like.split("://", 1)[0]
    return f"{scheme}://{path}"


async def _next_page(agen: Any, size: int) -> list[dict]:
    out: list[dict] = []
    try:
        while len(out) < size:
            out.append(await agen.__anext__())
    except StopAsyncIteration:
        pass
    return out


def _iter_s3(fs: Any, path: str, delimiter: str, page_size: int) -> Iterator[list[dict]]:
    """Pages of s3fs info dicts from ListObjectsV2, fetched page by page (never the whole prefix at once)."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    prefix = key.rstrip("/") + "/" if key else ""
    agen = fs._iterdir(bucket, delimiter=delimiter, prefix=prefix)
    while True:
        page = sync(fs.loop, _next_page, agen, page_size)
        if page:
            yield page
        if len(page) < page_size:
            return


def iter_files(
    fs: fsspec.AbstractFileSystem, path: str, *, recursive: bool = True, page_size: int = 10_000
) -> Iterator[list[str]]:
    """Pages of file paths below ``path`` (filesystem-native, no scheme), listed lazily.

    S3 is listed with ListObjectsV2 pagination (no delimiter when recursive, so one request per 1,000 keys and
    no per-folder requests); local folders with ``os.scandir``. Other filesystems fall back to ``fs.find``.
    """
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a") and hasattr(fs, "_iterdir"):
        for page in _iter_s3(fs, path, "" if recursive else "/", page_size):
            files = [info["name"] for info in page if info.get("type") == "file" and not info["name"].endswith("/")]
            if files:
                yield files
        return
    if protocol in ("file", "local"):
        yield from _iter_local(path, recursive, page_size)
        return
    found = fs.find(path, maxdepth=None if recursive else 1)
    for start in range(0, len(found), page_size):
        yield found[start : start + page_size]


def _iter_local(root: str, recursive: bool, page_size: int) -> Iterator[list[str]]:
    page: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir():
                    if recursive:
                        stack.append(entry.path)
                elif entry.is_file():
                    page.append(entry.path)
                    if len(page) >= page_size:
                        yield page
                        page = []
    if page:
        yield page


def list_child_dirs(fs: fsspec.AbstractFileSystem, path: str, *, limit: int = 10_000) -> list[str]:
    """Names of the sub-folders of ``path`` among its first ``limit`` entries (for layout detection)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a") and hasattr(fs, "_iterdir"):
        names: list[str] = []
        seen = 0
        for page in _iter_s3(fs, path, "/", 1000):
            names += [info["name"].rstrip("/").rsplit("/", 1)[-1] for info in page if info.get("type") == "directory"]
            seen += len(page)
            if seen >= limit:
                break
        return names
    if protocol in ("file", "local"):
        with os.scandir(path) as entries:
            return [e.name for e in itertools.islice(entries, limit) if e.is_dir()]
    return [
        info["name"].rstrip("/").rsplit("/", 1)[-1] for info in fs.ls(path, detail=True) if info["type"] == "directory"
    ]


def filesystem_for(uri: str, config: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Alias of :func:`get_filesystem` (the name :mod:`pipeline.io.fsutil` looks up)."""
    return get_filesystem(uri, config)
