"""The tool's mark on its outputs, and resume's test for it.

Every fused output this tool commits carries a mark: ``{"tool": "maugif-ray", "pair_id": ...}`` as JSON, in a PNG
``tEXt`` chunk (keyword :data:`MARK_KEY`, placed right after ``IHDR`` so the first kilobytes of the file hold it)
or in a VRT's dataset ``<Metadata>`` (the VRT is a raster's commit point). Resume trusts an output that is not in
the manifest only when its mark names this pair and this tool recorded a run at this output (a
``_manifest/config-<run_id>.json``): a file that merely has an output's name (an input, a copy, another tool's
output) is never taken for a finished pair. The mark holds no run id, so that outputs stay byte-identical across
runs; an output is trusted only at a location where this tool recorded a run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.io.done_set import DoneSet
from pipeline.io.fsutil import is_local
from pipeline.schema import MANIFEST_DIR

__all__ = [
    "MARK_KEY",
    "add_png_mark",
    "add_vrt_mark",
    "make_mark",
    "marked_pair_ids",
    "read_mark",
    "recorded_runs",
]

logger = logging.getLogger(__name__)

MARK_KEY = "maugif-ray"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEAD_BYTES = 4096
_VRT_MARK = re.compile(r'<MDI key="' + MARK_KEY + r'">([^<]*)</MDI>')


def make_mark(pair_id: str) -> str:
    """The mark's text: JSON naming the tool and the pair.

    No run id: outputs stay byte-identical whichever run writes them (rewrites are harmless, and a killed job's
    rerun produces the bytes of a clean run, see tests/ops/test_faults.py); which runs wrote at an output is in its
    manifest and ``config-<run_id>.json`` files.
    """
    return json.dumps({"tool": MARK_KEY, "pair_id": pair_id}, sort_keys=True, separators=(",", ":"))


def add_png_mark(png: bytes, mark: str) -> bytes:
    """``png`` with a ``tEXt`` chunk ``MARK_KEY=mark`` inserted after ``IHDR``.

    Raises:
        ValueError: ``png`` does not start with a PNG signature and an IHDR chunk.
    """
    if png[:8] != _PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise ValueError("not a PNG stream (no signature and IHDR chunk)")
    end_ihdr = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    data = MARK_KEY.encode("latin-1") + b"\x00" + mark.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:end_ihdr] + chunk + png[end_ihdr:]


def add_vrt_mark(xml: str, mark: str) -> str:
    """A VRT document with the mark in its dataset metadata (right after the ``<VRTDataset>`` tag)."""
    from xml.sax.saxutils import escape

    head, sep, rest = xml.partition(">")
    if not sep or not head.lstrip().startswith("<VRTDataset"):
        raise ValueError("not a VRT document (no <VRTDataset> element)")
    return f'{head}>\n  <Metadata>\n    <MDI key="{MARK_KEY}">{escape(mark)}</MDI>\n  </Metadata>{rest}'


def _png_mark(head: bytes) -> str | None:
    if head[:8] != _PNG_SIGNATURE:
        return None
    offset = 8
    while offset + 8 <= len(head):
        length = struct.unpack(">I", head[offset : offset + 4])[0]
        kind = head[offset + 4 : offset + 8]
        if kind == b"IDAT":
            return None
        data = head[offset + 8 : offset + 8 + length]
        if kind == b"tEXt" and len(data) == length:
            key, _, value = data.partition(b"\x00")
            if key == MARK_KEY.encode("latin-1"):
                return value.decode("latin-1")
        offset += 12 + length
    return None


def read_mark(head: bytes) -> dict[str, Any] | None:
    """The mark in the first bytes of a PNG or a VRT document, or None."""
    text = _png_mark(head)
    if text is None and head.lstrip()[:11] == b"<VRTDataset":
        from xml.sax.saxutils import unescape

        match = _VRT_MARK.search(head.decode("utf-8", "replace"))
        text = unescape(match.group(1)) if match else None
    if text is None:
        return None
    try:
        mark = json.loads(text)
    except ValueError:
        return None
    return mark if isinstance(mark, dict) else None


def recorded_runs(fs: Any, root: str) -> set[str]:
    """Run ids recorded at an output (``_manifest/config-<run_id>.json``)."""
    try:
        names = fs.ls(f"{root.rstrip('/')}/{MANIFEST_DIR}", detail=False)
    except FileNotFoundError:
        return set()
    runs = set()
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith("config-") and base.endswith(".json"):
            runs.add(base[len("config-") : -len(".json")])
    return runs


_CHUNK = 50_000


def _names(fs: Any, folder: str) -> Iterator[str]:
    """The entries of ``folder``: streamed with ``os.scandir`` on a local disk (a folder of a million outputs is
    never one list), listed by the filesystem elsewhere (s3fs pages through the listing itself)."""
    if is_local(fs):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    yield entry.path
        except (FileNotFoundError, NotADirectoryError):
            return
        return
    try:
        yield from fs.ls(folder, detail=False)
    except FileNotFoundError:
        return


def _candidate_chunks(fs: Any, folder: str) -> Iterator[list[tuple[str, str]]]:
    """``(stem, path)`` of the entries of ``folder`` that have an output's name (``<id>.png`` or ``<id>.vrt``, not
    hidden, not ``_``-prefixed), in chunks of :data:`_CHUNK`."""
    chunk: list[tuple[str, str]] = []
    for name in _names(fs, folder):
        base = name.rstrip("/").rsplit("/", 1)[-1]
        stem, dot, ext = base.rpartition(".")
        if not dot or ext not in ("png", "vrt") or base.startswith((".", "_")):
            continue
        chunk.append((stem, name))
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def marked_pair_ids(
    output: str, exclude: Iterable[str] = (), *, current_run: str | None = None, key_shards: int = 0
) -> tuple[set[str], int]:
    """Pair ids whose final output at the top of ``output`` (or, with ``key_shards`` > 1, of each of its shard
    prefixes, :mod:`pipeline.io.key_shards`) carries this tool's mark for that pair, at an output where this tool
    recorded a run. An output found under another shard than its pair id's is not trusted.

    Only outputs not in ``exclude`` (the manifest's ``ok`` pairs; a :class:`~pipeline.io.done_set.DoneSet` is
    tested a chunk of names at a time) are opened, and only their first kilobytes
    (a VRT is small) are read: normally just the outputs committed after the last manifest flush of a crashed run.

    ``current_run``: this run's id, not counted as a run recorded at the output (it has written nothing yet).

    Returns:
        ``(trusted pair ids, number of same-named files that were not trusted)``.
    """
    from pipeline.io.fsutil import filesystem_for, join_key
    from pipeline.io.key_shards import shard_name, shard_names

    fs, root = filesystem_for(output)
    shards = shard_names(key_shards) or [None]
    if not isinstance(exclude, (DoneSet, set, frozenset)):
        exclude = set(exclude)
    runs: set[str] | None = None
    trusted: set[str] = set()
    untrusted = 0
    for shard in shards:
        folder = root if shard is None else filesystem_for(join_key(output, shard))[1]
        for chunk in _candidate_chunks(fs, folder):
            stems = [stem for stem, _ in chunk]
            if isinstance(exclude, DoneSet):
                excluded = exclude.contains_each(stems).to_pylist()
            else:
                excluded = [stem in exclude for stem in stems]
            for (stem, name), is_done in zip(chunk, excluded, strict=True):
                if is_done:
                    continue
                if runs is None:
                    runs = recorded_runs(fs, root) - {current_run}  # an earlier run must have written here
                try:
                    with fs.open(name, "rb") as handle:
                        head = handle.read(_HEAD_BYTES if name.endswith(".png") else 1 << 20)
                except OSError:
                    continue
                mark = read_mark(head)
                in_place = shard == shard_name(stem, key_shards)
                if mark and mark.get("tool") == MARK_KEY and mark.get("pair_id") == stem and runs and in_place:
                    trusted.add(stem)
                else:
                    untrusted += 1
    if untrusted:
        logger.warning(
            "resume: %d file(s) at %s have an output's name but not this tool's mark; their pairs will be fused",
            untrusted,
            output,
        )
    return trusted, untrusted
