"""Column names of every row that travels through the pipeline, defined once.

Rows are dicts (Ray Data "items") or Arrow/pandas columns with these keys. Never spell a key as a string literal
elsewhere: import it from here.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

# Pair rows (discovery → reading).
PAIR_ID = "pair_id"
URI_A = "uri_a"
URI_B = "uri_b"
TASK = "task"
PAIR_COLUMNS = (PAIR_ID, URI_A, URI_B, TASK)
SOURCE_LINE = "source_line"  # discovery only: the manifest line (row for Parquet) a pair came from

# Decoded rows (reading → fusion → writing).
IMAGE_A = "image_a"
IMAGE_B = "image_b"
FUSED = "fused"  # channel-last (H, W, C) (or (H, W) for a 2-D image A), in image A's dtype
DETAIL_A = "detail_a"  # (H, W) float32 contribution maps (optional)
DETAIL_B = "detail_b"
META_A = "meta_a"  # JSON: dtype, bands, nodata, crs, transform, descriptions, format
META_B = "meta_b"
TILE_ROW = "tile_row"
TILE_COL = "tile_col"
WINDOW = "window"  # JSON string: the tile's core window on the output grid
READ_WINDOWS = "read_windows"  # JSON string: a scene tile row's source windows (pipeline.fuse.scene_plan)
SCENE_STATE = "scene_state"  # bytes: a scene's shared state (pipeline.fuse.scene_state), on each of its tile rows
BYTES_IN = "bytes_in"
BYTES_OUT = "bytes_out"
STORAGE_RETRIES = "storage_retries"  # storage operations retried (throttling, transient errors) for this row

# Status / manifest rows.
STATUS = "status"
OUTPUT_URI = "output_uri"
ERROR_STAGE = "error_stage"
ERROR = "error"
SECONDS = "seconds"
RUN_ID = "run_id"
WRITTEN_AT = "written_at"
EXTRAS = "extras"  # JSON object text: what a pair's fit estimated (sensor registration, MTF gain), or null
MANIFEST_COLUMNS = (PAIR_ID, STATUS, OUTPUT_URI, ERROR_STAGE, ERROR, SECONDS)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

# Error stages.
STAGE_DISCOVER = "discover"
STAGE_READ = "read"
STAGE_FUSE = "fuse"
STAGE_WRITE = "write"

# Reserved names at the top level of an output location.
MANIFEST_DIR = "_manifest"
SUMMARY_FILE = "_summary.json"
EXTRAS_DIR = "_extras"


# Array columns. Images travel between stages as self-describing ``.npy`` bytes in a binary column, never as
# Ray tensor columns: a tensor column cannot hold a failed row's null next to fused arrays, nor uint8 next to
# uint16 arrays, so two blocks of an ordinary mixed batch would fail to concatenate and take the job down.
ARRAY_COLUMNS = (IMAGE_A, IMAGE_B, FUSED, DETAIL_A, DETAIL_B)


def encode_array(array: Any) -> bytes | None:
    """An array as ``.npy`` bytes (dtype and shape included) for an :data:`ARRAY_COLUMNS` column; None stays None.

    Raises:
        TypeError: an object array (it could only travel pickled).
    """
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"cannot encode an array of dtype {array.dtype}: expected numeric pixels")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_array(value: Any) -> np.ndarray | None:
    """Inverse of :func:`encode_array`; arrays pass through unchanged (rows built outside Ray Data), None stays None.

    Raises:
        TypeError: a value that is neither bytes nor an array.
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.dtype.kind != "O":
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.lib.format.read_array(io.BytesIO(value), allow_pickle=False)
    raise TypeError(f"expected .npy bytes or an ndarray in an array column, got {type(value).__name__}")
