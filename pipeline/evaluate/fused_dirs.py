"""Folders of already-fused images an evaluation scores next to the methods it runs (``fused_dirs``): matched to
pairs by file-name pattern."""

from __future__ import annotations

import logging
import re
from typing import Any

from pipeline.config.eval_config import FusedSourceConfig
from pipeline.errors import PairDiscoveryError

__all__ = ["IMAGE_SUFFIXES", "index_fused_dir"]

logger = logging.getLogger(__name__)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    head, tail = pattern.split("{pair_id}")
    to_re = lambda text: ".*".join(re.escape(part) for part in text.split("*"))  # noqa: E731
    return re.compile(f"^{to_re(head)}(?P<pair_id>.+?){to_re(tail)}$", re.IGNORECASE)


def index_fused_dir(source: FusedSourceConfig, storage: Any = None) -> dict[str, str]:
    """Map lower-cased pair ids to the fused images of one folder (its direct children matching the pattern; for
    a batch job's output written with ``output.key_shards`` > 1, as recorded in its run configs, the children of
    each shard prefix, :mod:`pipeline.io.key_shards`).

    Raises:
        PairDiscoveryError: the folder does not exist or holds no image matching the pattern; two files match
            one pair id.
    """
    from pipeline.io.storage import get_filesystem, iter_files, to_uri

    fs, path = get_filesystem(source.uri, storage)
    if not fs.isdir(path):
        raise PairDiscoveryError(f"fused folder {source.name!r}: {source.uri!r} is not an existing folder")
    from pipeline.io.key_shards import recorded_key_shards, shard_names

    regex = _pattern_regex(source.pattern)
    index: dict[str, str] = {}
    shards = max(recorded_key_shards(source.uri, storage).values(), default=0)
    folders = [f"{path.rstrip('/')}/{name}" for name in shard_names(shards)] or [path]
    pages = (page for folder in folders if fs.isdir(folder) for page in iter_files(fs, folder, recursive=False))
    for page in pages:
        for file_path in page:
            name = file_path.rsplit("/", 1)[-1]
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            match = regex.match(name)
            if match is None:
                continue
            key = match.group("pair_id").lower()
            uri = to_uri(file_path, source.uri)
            if key in index:
                raise PairDiscoveryError(
                    f"fused folder {source.name!r}: pair id {key!r} matches two files, {index[key]} and "
                    f"{uri}; expected one (tighten the pattern {source.pattern!r})"
                )
            index[key] = uri
    if not index:
        raise PairDiscoveryError(
            f"fused folder {source.name!r}: no image in {source.uri!r} matches {source.pattern!r} "
            f"(extensions {', '.join(IMAGE_SUFFIXES)})"
        )
    logger.info("fused folder %s: %d images in %s", source.name, len(index), source.uri)
    return index
