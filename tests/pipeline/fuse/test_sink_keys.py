"""Output keys never escape the output prefix: unsafe keys and pair ids are refused; such a row becomes a failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.output_config import OutputConfig
from pipeline.errors import OutputKeyError
from pipeline.fuse.sinks import write_row
from pipeline.io.fsutil import join_key
from pipeline.io.writers import png_uri
from pipeline.schema import (
    FUSED,
    META_A,
    PAIR_ID,
    STATUS,
    STATUS_FAILED,
)


# ------------------------------------------------------------------------------------------------- key safety
@pytest.mark.parametrize("bad", ["../evil", "/abs", "a/../../b", "", ".", "a//b", "a\\b", "x\x00y"])
def test_keys_escaping_the_prefix_are_rejected(bad: str) -> None:
    with pytest.raises(OutputKeyError):
        join_key("s3://bucket/out", bad)


@pytest.mark.parametrize("pair_id", ["../evil", "a/b", "_manifest", ".hidden", ""])
def test_unsafe_pair_ids_cannot_name_outputs(pair_id: str) -> None:
    with pytest.raises(OutputKeyError):
        png_uri("out", pair_id)


def test_row_with_an_escaping_pair_id_becomes_a_failure(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    row = {
        PAIR_ID: "../evil",
        FUSED: np.zeros((4, 4, 1), np.uint8),
        META_A: json.dumps({"dtype": "uint8", "count": 1, "height": 4, "width": 4}),
    }
    result = write_row(row, OutputConfig(uri=output))
    assert result["record"][STATUS] == STATUS_FAILED and "OutputKeyError" in result["record"]["error"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == []
