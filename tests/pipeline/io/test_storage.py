"""Storage access: filesystems from config or environment, throttling retries, GDAL on a real S3 server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from botocore.exceptions import ClientError
from factories import geotiff_variant, s3_client, upload_file, write_geotiff

from pipeline.config.io_config import StorageConfig
from pipeline.io.storage import (
    call_with_retries,
    gdal_path,
    get_filesystem,
    is_retryable,
    iter_files,
    join_uri,
    list_child_dirs,
    parent_uri,
    rasterio_env,
    resolve_endpoint,
    retry_count,
    s3fs_options,
    strip_protocol,
)


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_endpoint_defaults_to_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert resolve_endpoint() == "http://127.0.0.1:9"
    assert s3fs_options()["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")
    assert resolve_endpoint() == "http://127.0.0.1:10"
    assert resolve_endpoint(StorageConfig(endpoint_url="http://minio:9000")) == "http://minio:9000"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert "endpoint_url" not in s3fs_options()["client_kwargs"]  # plain AWS


def test_s3fs_options_from_config() -> None:
    options = s3fs_options(StorageConfig(profile="p", anonymous=True, max_attempts=7, retry_mode="standard"))
    assert options["anon"] is True and options["profile"] == "p"
    assert options["config_kwargs"]["retries"] == {"max_attempts": 7, "mode": "standard"}
    assert not any("secret" in key.lower() or key == "key" for key in options)  # never credentials


def test_config_is_strict_and_frozen() -> None:
    with pytest.raises(ValueError, match="extra"):
        StorageConfig(secret_access_key="nope")
    with pytest.raises(ValueError):
        StorageConfig().anonymous = True  # type: ignore[misc]


def test_uri_helpers() -> None:
    assert join_uri("s3://b/p", "vi/1.png") == "s3://b/p/vi/1.png"
    assert join_uri("s3://b/p/", "./x.png") == "s3://b/p/x.png"
    assert join_uri("/data", "s3://o/k") == "s3://o/k" and join_uri("s3://b", "/abs") == "/abs"
    assert parent_uri("s3://b/p/m.csv") == "s3://b/p" and parent_uri("/a/m.csv") == "/a"
    assert strip_protocol("s3://b/k") == "b/k" and strip_protocol("file:///x/y") == "/x/y"
    assert gdal_path("s3://b/k.tif") == "/vsis3/b/k.tif" and gdal_path("/x.tif") == "/x.tif"


def test_local_and_file_uris(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hi")
    for uri in (str(tmp_path / "f.txt"), f"file://{tmp_path}/f.txt"):
        fs, path = get_filesystem(uri)
        assert fs.cat_file(path) == b"hi"


def test_retryable_classification() -> None:
    assert is_retryable(client_error("SlowDown", 503))
    assert is_retryable(client_error("ThrottlingException", 400))
    assert is_retryable(client_error("InternalError", 500))
    assert is_retryable(OSError("Please reduce your request rate."))
    assert not is_retryable(client_error("NoSuchKey", 404))
    assert not is_retryable(client_error("AccessDenied", 403))
    assert not is_retryable(FileNotFoundError("x"))


def test_jittered_retries_recover_from_slowdown() -> None:
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise client_error("SlowDown", 503)
        return "ok"

    config = StorageConfig(operation_retries=3, backoff_base_s=0.5, backoff_max_s=0.8)
    assert call_with_retries(flaky, config=config, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 0.8  # full jitter under the (capped) exponential bound


def test_retries_give_up_and_skip_permanent_errors() -> None:
    sleeps: list[float] = []

    def always_throttled() -> None:
        raise client_error("SlowDown", 503)

    with pytest.raises(ClientError, match="SlowDown"):
        call_with_retries(always_throttled, config=StorageConfig(operation_retries=2), sleep=sleeps.append)
    assert len(sleeps) == 2

    def missing() -> None:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        call_with_retries(missing, sleep=sleeps.append)
    assert len(sleeps) == 2  # no sleep for a permanent error


def test_retries_are_counted_per_process() -> None:
    """Operation retries add to :func:`retry_count` (what tasks report to the job summary); failures without a
    retry do not."""
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise client_error("SlowDown", 503)
        return "ok"

    before = retry_count()
    call_with_retries(flaky, config=StorageConfig(operation_retries=3), sleep=lambda _: None)
    assert retry_count() - before == 2
    with pytest.raises(FileNotFoundError):
        call_with_retries(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")), sleep=lambda _: None)
    assert retry_count() - before == 2


def test_botocore_retries_behind_a_throttling_proxy_are_counted(s3_server: str, s3_bucket: str) -> None:
    from testsupport.s3_proxy import S3FaultProxy

    with S3FaultProxy(s3_server) as proxy:
        config = StorageConfig(endpoint_url=proxy.url, retry_mode="standard", max_attempts=5)
        fs, path = get_filesystem(f"s3://{s3_bucket}/counted/x.bin", config)
        before = retry_count()
        proxy.slowdown(requests=3)
        fs.pipe_file(path, b"payload")  # 3 x 503 SlowDown answered, retried by botocore, then forwarded
        assert proxy.count("slowdown") == 3
        assert retry_count() - before == 3
    assert s3_client(s3_server).get_object(Bucket=s3_bucket, Key="counted/x.bin")["Body"].read() == b"payload"


def test_s3_round_trip_through_environment(s3_server: str, s3_bucket: str) -> None:
    fs, path = get_filesystem(f"s3://{s3_bucket}/dir/x.bin")  # endpoint from AWS_ENDPOINT_URL only
    fs.pipe_file(path, b"payload")
    assert s3_client(s3_server).get_object(Bucket=s3_bucket, Key="dir/x.bin")["Body"].read() == b"payload"
    explicit, _ = get_filesystem(f"s3://{s3_bucket}/dir/x.bin", StorageConfig(endpoint_url=s3_server))
    assert explicit.cat_file(path) == b"payload"


def test_s3_listing_is_paginated(s3_server: str, s3_bucket: str) -> None:
    client = s3_client(s3_server)
    keys = [f"many/{i // 500}/k{i:05d}.png" for i in range(1200)] + ["many/dir_marker/", "other/x.png"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=s3_bucket, Key=k, Body=b""), keys))
    fs, path = get_filesystem(f"s3://{s3_bucket}/many")
    pages = list(iter_files(fs, path, page_size=256))
    assert all(len(p) <= 256 for p in pages) and len(pages) >= 5
    listed = [name for page in pages for name in page]
    assert sorted(listed) == sorted(f"{s3_bucket}/{k}" for k in keys if k.startswith("many/") and k[-1] != "/")
    assert sorted(list_child_dirs(fs, path)) == ["0", "1", "2", "dir_marker"]
    assert list(iter_files(fs, path, recursive=False)) == []


def test_local_listing(tmp_path: Path) -> None:
    for rel in ("a/1.png", "a/b/2.png", "3.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    fs, path = get_filesystem(str(tmp_path))
    pages = list(iter_files(fs, path, page_size=2))
    assert [len(p) for p in pages] == [2, 1]
    assert sorted(p[len(path) + 1 :] for page in pages for p in page) == ["3.png", "a/1.png", "a/b/2.png"]
    assert [p[len(path) + 1 :] for page in iter_files(fs, path, recursive=False) for p in page] == ["3.png"]
    assert list_child_dirs(fs, path) == ["a"]


def test_gdal_reads_s3_through_vsis3(tmp_path: Path, s3_server: str, s3_bucket: str) -> None:
    array = geotiff_variant("uint16")
    uri = upload_file(s3_server, write_geotiff(tmp_path / "g.tif", array), s3_bucket, "g/g.tif")
    with rasterio_env(uri):
        assert rasterio.env.getenv()["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
        assert rasterio.env.getenv()["AWS_VIRTUAL_HOSTING"] == "FALSE"
        assert rasterio.env.getenv()["AWS_HTTPS"] == "NO"
        with rasterio.open(gdal_path(uri)) as src:
            np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), array)
    with rasterio_env():  # local files: no S3 session options
        options = rasterio.env.getenv()
        assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR" and "AWS_HTTPS" not in options


def test_atomic_s3_write_is_one_put_one_copy_one_delete_and_rides_out_slowdown(
    s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output on S3 costs three requests (PUT of the temporary key, CopyObject, DeleteObject), not the six of
    ``fs.mv`` (LIST, HEAD, copy, DeleteObjects); under 503 SlowDown on half the PUTs every object still lands once
    with its bytes and no temporary object is left. Objects too large for one CopyObject take ``fs.mv``."""
    from collections import Counter

    from pipeline.io import fsutil
    from pipeline.io.fsutil import TEMP_MARKER, atomic_write_bytes
    from testsupport.s3_proxy import S3FaultProxy

    with S3FaultProxy(s3_server) as proxy:
        config = StorageConfig(endpoint_url=proxy.url, retry_mode="standard", max_attempts=3)
        fs, _ = get_filesystem(f"s3://{s3_bucket}/lean", config)
        for i in range(6):
            atomic_write_bytes(f"s3://{s3_bucket}/lean/o{i}.png", b"%d" % i * 100, fs=fs)
        requests = Counter((r.method, TEMP_MARKER in r.path) for r in proxy.records)
        assert requests == {("PUT", True): 6, ("PUT", False): 6, ("DELETE", True): 6}, requests
        proxy.slowdown(put_fraction=0.5, seed=3)
        for i in range(6, 12):
            atomic_write_bytes(f"s3://{s3_bucket}/lean/o{i}.png", b"%d" % i * 100, fs=fs)
        assert proxy.count("slowdown") > 0
        proxy.slowdown()
        monkeypatch.setattr(fsutil, "_SINGLE_COPY_MAX", 0)  # as for an object over 5 GiB: fs.mv asks the size
        seen = len(proxy.records)
        atomic_write_bytes(f"s3://{s3_bucket}/lean/o12.png", b"12" * 100, fs=fs)
        assert any(r.method == "HEAD" for r in proxy.records[seen:])
    client = s3_client(s3_server)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="lean/")["Contents"]]
    assert sorted(keys) == sorted(f"lean/o{i}.png" for i in range(13)), keys
    for i in range(13):
        assert client.get_object(Bucket=s3_bucket, Key=f"lean/o{i}.png")["Body"].read() == b"%d" % i * 100
