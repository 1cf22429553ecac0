"""Output key sharding (``output.key_shards``): each pair's outputs under one of N prefixes of the output.

S3 limits request rates per key prefix (about 3,500 PUT/s; writing many small outputs under one prefix draws
``503 SlowDown``). With ``key_shards = N > 1`` every output of a pair (its PNG, or its COG tiles, VRT, STAC item and
scene COG, and its extras) goes under ``<output>/<shard>/`` instead of ``<output>/``, where ``<shard>`` is
:func:`shard_name`: a stable hash of the pair id (BLAKE2b, the same on every machine and Python process) modulo N,
written as zero-padded lower-case hex of the width of ``N - 1`` (``key_shards=16``: ``0`` … ``f``;
``key_shards=256``: ``00`` … ``ff``). Shard names are hex digits only, so a key never leaves the output prefix;
the pair id itself is still checked by :mod:`pipeline.io.writers`. ``0`` or ``1``: flat, ``<output>/<pair_id>.png``.
The manifest, summary, STAC collection and run configs stay at the top of the output.

The layout is part of an output: each run's ``_manifest/config-<run_id>.json`` records its ``output.key_shards``
(a config without it is from before sharding: flat), and :func:`check_key_shards` refuses a run whose layout
differs from the one recorded, since its resume would not find the earlier outputs and the output would mix
layouts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pipeline.errors import ConfigError
from pipeline.schema import MANIFEST_DIR

__all__ = ["check_key_shards", "pair_output", "recorded_key_shards", "shard_name", "shard_names"]

logger = logging.getLogger(__name__)


def _width(shards: int) -> int:
    return len(format(shards - 1, "x"))


def shard_name(pair_id: str, shards: int) -> str | None:
    """The shard prefix of ``pair_id`` among ``shards`` (None when ``shards`` <= 1: flat layout)."""
    if shards <= 1:
        return None
    digest = hashlib.blake2b(pair_id.encode("utf-8"), digest_size=8).digest()
    return format(int.from_bytes(digest, "big") % shards, f"0{_width(shards)}x")


def shard_names(shards: int) -> list[str]:
    """Every shard prefix of a layout of ``shards`` (empty for a flat layout)."""
    if shards <= 1:
        return []
    return [format(i, f"0{_width(shards)}x") for i in range(shards)]


def pair_output(output: str, pair_id: str, shards: int) -> str:
    """The location a pair's outputs are written under: ``output`` itself, or ``<output>/<shard>``."""
    from pipeline.io.fsutil import join_key

    shard = shard_name(pair_id, shards)
    return output if shard is None else join_key(output, shard)


def _layout(shards: int) -> int:
    return shards if shards > 1 else 1  # 0 and 1 are the same flat layout


def recorded_key_shards(output: str, storage: Any = None, *, exclude_run: str | None = None) -> dict[str, int]:
    """``{run_id: key_shards}`` of the runs recorded at ``output`` (their saved configs; 0 for a config from
    before sharding). Unreadable configs are left out."""
    from pipeline.io.storage import get_filesystem

    fs, path = get_filesystem(output, storage)
    try:
        names = sorted(fs.glob(f"{path.rstrip('/')}/{MANIFEST_DIR}/config-*.json"))
    except FileNotFoundError:
        return {}
    recorded: dict[str, int] = {}
    for name in names:
        run_id = name.rstrip("/").rsplit("/", 1)[-1][len("config-") : -len(".json")]
        if run_id == exclude_run:
            continue
        try:
            with fs.open(name, "rb") as handle:
                saved = json.loads(handle.read())
        except (OSError, ValueError):
            continue
        recorded[run_id] = int((saved.get("output") or {}).get("key_shards") or 0)
    return recorded


def check_key_shards(output: str, key_shards: int, storage: Any = None, *, exclude_run: str | None = None) -> str:
    """Refuse a run whose ``output.key_shards`` layout differs from the one earlier runs recorded at ``output``.

    Returns:
        A one-line description for the pre-flight.

    Raises:
        ConfigError: earlier runs at ``output`` wrote another layout (the message names the output, the recorded
            value and the given one).
    """
    recorded = recorded_key_shards(output, storage, exclude_run=exclude_run)
    if not recorded:
        return "no earlier runs"
    layouts = {_layout(v) for v in recorded.values()}
    if layouts != {_layout(key_shards)}:
        values = ", ".join(str(v) for v in sorted(set(recorded.values())))
        raise ConfigError(
            f"output {output!r} was written with output.key_shards={values} by earlier runs, but this run has "
            f"output.key_shards={key_shards}: its resume would not find the earlier outputs and the output would mix "
            f"key layouts; expected output.key_shards={values} for this output (or a new output location)"
        )
    return f"{len(recorded)} earlier run(s), key_shards {key_shards}"
