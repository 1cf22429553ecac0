"""Folder layouts: two sub-folders matched by stem (task folder names) or one folder with suffix patterns; listings
paginated and spilled to disk in hash partitions past ``PairsConfig.spill_threshold`` files."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from maugif_core.config import TASKS
from pipeline.config.io_config import PairsConfig
from pipeline.errors import PairDiscoveryError
from pipeline.io.storage import iter_files, list_child_dirs, to_uri

__all__ = [
    "DEFAULT_PATTERNS",
    "TASK_FOLDERS",
    "detect_folders",
    "iter_folder_groups",
    "iter_suffix_groups",
]

logger = logging.getLogger(__name__)


TASK_FOLDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "vif": (("vi", "vis", "visible", "rgb"), ("ir", "infrared", "thermal", "lwir")),
    "medical": (("ct", "pet", "spect"), ("mri", "mr")),
    "mff": (("source1", "near", "focus1"), ("source2", "far", "focus2")),
    "mef": (("under", "underexposed", "low"), ("over", "overexposed", "high")),
    "general": (("a",), ("b",)),
    "pansharpen": (("ms", "mul", "multispectral"), ("pan", "panchromatic")),
    "hsi_msi": (("hs", "hsi", "hyperspectral"), ("msi", "ms", "multispectral")),
}
"""Default sub-folder names per task, (A candidates, B candidates), matched case-insensitively. A is the base
image (SPEC §1.1: visible, CT/PET/SPECT, ...) or, for pansharpen / hsi_msi, the low-resolution spectral
image."""

DEFAULT_PATTERNS = (("{stem}-A.*", "{stem}-B.*"), ("{stem}_A.*", "{stem}_B.*"))
"""Suffix patterns tried by the suffix layout (Lytro ``lytro-01-A.jpg``, MEFB ``Arno/Arno_A.png``)."""
_N_PARTITIONS = 64


def detect_folders(fs: Any, path: str, config: PairsConfig, task: str | None) -> tuple[str, str, str | None] | None:
    """The (folder A, folder B, detected task) of a two-folder layout, or None when there is none."""
    children = list_child_dirs(fs, path)
    by_lower = {name.lower(): name for name in children}
    if config.folder_a is not None:
        a, b = by_lower.get(config.folder_a.lower()), by_lower.get(config.folder_b.lower())
        if a is None or b is None:
            raise PairDiscoveryError(
                f"sub-folders {config.folder_a!r}/{config.folder_b!r} not found in {path!r}; found {sorted(children)}"
            )
        return a, b, None
    for name in [task] if task else list(TASKS):
        names_a, names_b = TASK_FOLDERS[name]
        a = next((by_lower[n] for n in names_a if n in by_lower), None)
        b = next((by_lower[n] for n in names_b if n in by_lower and by_lower[n] != a), None)
        if a is not None and b is not None:
            return a, b, name
    return None


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    before, after = pattern.split("{stem}")
    after_rx = re.escape(after).replace(r"\*", r"[^/]*")
    return re.compile("^" + re.escape(before).replace(r"\*", r"[^/]*") + r"(?P<stem>.+?)" + after_rx + "$", re.I)


class _Matcher:
    """Groups (key, side, name, uri) by key; spills hash partitions to local Parquet past a threshold."""

    def __init__(self, config: PairsConfig) -> None:
        self._threshold = config.spill_threshold
        self._spill_root = config.spill_dir
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._spill: str | None = None
        self._chunks = 0

    def add(self, keys: list[str], sides: list[int], names: list[str], uris: list[str]) -> None:
        if not keys:
            return
        self._buffer.append(pa.table({"key": keys, "side": pa.array(sides, pa.int8()), "name": names, "uri": uris}))
        self._buffered += len(keys)
        if self._buffered > self._threshold:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if self._spill is None:
            self._spill = tempfile.mkdtemp(prefix="maugif-pairs-", dir=self._spill_root)
            logger.info("listing exceeds %d files: spilling partitions to %s", self._threshold, self._spill)
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        parts = np.fromiter((zlib.crc32(k.encode()) % _N_PARTITIONS for k in table["key"].to_pylist()), np.int16)
        for part in np.unique(parts):
            folder = os.path.join(self._spill, f"p{part:02d}")
            os.makedirs(folder, exist_ok=True)
            pq.write_table(table.filter(pa.array(parts == part)), os.path.join(folder, f"{self._chunks}.parquet"))
        self._chunks += 1

    def groups(self) -> Iterator[tuple[str, list[str], list[str]]]:
        """(name, A uris, B uris) per key, sorted by key within each partition."""
        import pyarrow.parquet as pq

        try:
            if self._spill is None:
                tables = [pa.concat_tables(self._buffer)] if self._buffer else []
                self._buffer = []
            else:
                self._flush() if self._buffer else None
                tables = (
                    pa.concat_tables(
                        [
                            pq.read_table(os.path.join(self._spill, d, f))
                            for f in sorted(os.listdir(os.path.join(self._spill, d)))
                        ]
                    )
                    for d in sorted(os.listdir(self._spill))
                )
            for table in tables:
                yield from self._group(table)
        finally:
            if self._spill is not None:
                shutil.rmtree(self._spill, ignore_errors=True)

    @staticmethod
    def _group(table: pa.Table) -> Iterator[tuple[str, list[str], list[str]]]:
        table = table.sort_by([("key", "ascending"), ("side", "ascending"), ("uri", "ascending")])
        current, name, uris = None, "", ([], [])
        columns = (table[c].to_pylist() for c in ("key", "side", "name", "uri"))
        for key, side, row_name, uri in zip(*columns, strict=True):
            if key != current:
                if current is not None:
                    yield name, uris[0], uris[1]
                current, name, uris = key, row_name, ([], [])
            if side == 0 and not uris[0]:
                name = row_name
            uris[side].append(uri)
        if current is not None:
            yield name, uris[0], uris[1]


def _name_parts(root: str, file_path: str) -> tuple[list[str], str, str]:
    """(relative folders, stem, lower-case extension) of a listed file below ``root``."""
    rel = file_path[len(root.rstrip("/")) :].lstrip("/").replace("\\", "/")
    *folders, base = rel.split("/")
    stem, ext = os.path.splitext(base)
    return folders, stem, ext.lower()


def _pair_name(folders: list[str], stem: str) -> str:
    """Pair id from a nested file: ``scene/scene_A.png`` → ``scene``; ``x/y/01.png`` → ``x__y__01``."""
    if folders and folders[-1].lower() == stem.lower():
        folders = folders[:-1]
    return "__".join([*folders, stem])


def iter_folder_groups(
    source: str, fs: Any, path: str, folder_a: str, folder_b: str, config: PairsConfig
) -> Iterator[tuple[str, list[str], list[str]]]:
    """Stem groups of a two-folder layout (stems and nested sub-paths matched case-insensitively)."""
    matcher = _Matcher(config)
    for side, folder in ((0, folder_a), (1, folder_b)):
        root = path.rstrip("/") + "/" + folder
        for page in iter_files(fs, root, recursive=config.recursive):
            keys, names, uris = [], [], []
            for file_path in page:
                folders, stem, ext = _name_parts(root, file_path)
                if ext not in config.extensions or stem.startswith("."):
                    continue
                name = _pair_name(folders, stem)
                keys.append(name.lower())
                names.append(name)
                uris.append(to_uri(file_path, source))
            matcher.add(keys, [side] * len(keys), names, uris)
    yield from matcher.groups()


def iter_suffix_groups(
    source: str, fs: Any, path: str, config: PairsConfig
) -> Iterator[tuple[str, list[str], list[str]]]:
    """Stem groups of a one-folder layout whose file names carry the A/B suffix patterns."""
    patterns = [(config.pattern_a, config.pattern_b)] if config.pattern_a else list(DEFAULT_PATTERNS)
    compiled = [(_pattern_regex(a), _pattern_regex(b)) for a, b in patterns]
    matcher = _Matcher(config)
    ignored = 0
    for page in iter_files(fs, path, recursive=config.recursive):
        keys, sides, names, uris = [], [], [], []
        for file_path in page:
            folders, stem, ext = _name_parts(path, file_path)
            if ext not in config.extensions:
                continue
            base = stem + ext
            for rx_a, rx_b in compiled:
                hit = [(side, m) for side, m in ((0, rx_a.match(base)), (1, rx_b.match(base))) if m]
                if hit:
                    side, match = hit[0]
                    name = _pair_name(folders, match.group("stem"))
                    keys.append(name.lower())
                    sides.append(side)
                    names.append(name)
                    uris.append(to_uri(file_path, source))
                    break
            else:
                ignored += 1
        matcher.add(keys, sides, names, uris)
    if ignored:
        logger.info("%d files in %s match no A/B pattern and were ignored", ignored, source)
    yield from matcher.groups()
