"""Ok and failed rows of any size and dtype travel together through the real batch job on a local Ray.

Equal-size pairs used to make ``fused`` a Ray tensor column; a failed row's null in another batch of the same block
could not join it and the whole job died (``Found columns with both objects and tensors``). Arrays now travel as
``.npy`` bytes (:func:`pipeline.schema.encode_array`), so these runs mix equal sizes, two dtypes and failures in
one block at the default settings and at block/batch sizes that make batches straddle blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import write_manifest
from PIL import Image

from pipeline import schema as S
from pipeline.config.fuse_config import FuseJobConfig
from pipeline.fuse.batch import run_batch_fuse
from pipeline.io.manifest import read_manifest

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "mff"

pytestmark = pytest.mark.timeout(300)


def write_good_pairs(folder: Path, n: int, size: tuple[int, int] = (40, 48), sixteen_bit: int = 0) -> list[dict]:
    """``n`` equal-size pairs cut from the bundled MFI-WHU sample (real pixels); the last ``sixteen_bit`` of them as
    16-bit grey PNGs."""
    name = sorted(p.name for p in (SAMPLES / "source1").glob("*.png"))[0]
    a0 = np.asarray(Image.open(SAMPLES / "source1" / name).convert("RGB"))
    b0 = np.asarray(Image.open(SAMPLES / "source2" / name).convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        top, left = 2 * i, 3 * i
        a = a0[top : top + size[0], left : left + size[1]]
        b = b0[top : top + size[0], left : left + size[1]]
        if i >= n - sixteen_bit:
            a = a[..., 1].astype(np.uint16) * 257
            b = b[..., 1].astype(np.uint16) * 257
        Image.fromarray(a).save(folder / f"g{i:02d}_a.png")
        Image.fromarray(b).save(folder / f"g{i:02d}_b.png")
        rows.append({"pair_id": f"g{i:02d}", "uri_a": f"g{i:02d}_a.png", "uri_b": f"g{i:02d}_b.png", "task": "mff"})
    return rows


def latest_records(output: str) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for row in read_manifest(output).to_pylist():
        latest[row[S.PAIR_ID]] = row
    return latest


def test_array_codec_round_trips_and_passes_arrays_through():
    for array in (np.arange(12, dtype=np.uint16).reshape(3, 2, 2), np.zeros((0,), np.float32)):
        decoded = S.decode_array(S.encode_array(array))
        assert decoded.dtype == array.dtype and decoded.shape == array.shape
        np.testing.assert_array_equal(decoded, array)
    plain = np.ones((2, 2), np.uint8)
    assert S.decode_array(plain) is plain and S.decode_array(None) is None and S.encode_array(None) is None
    with pytest.raises(TypeError, match="dtype object"):
        S.encode_array(np.array([None, 1], dtype=object))
    with pytest.raises(TypeError, match="expected .npy bytes"):
        S.decode_array("not an array")


@pytest.mark.parametrize(
    ("sizes", "interleave"),
    [
        # The defaults (one decode block for every row, fusion batches of 16): the first batch is 16 equal-size
        # 8-bit pairs (a tensor column before the fix), the second mixes 16-bit and 8-bit outputs and failures.
        ({}, False),
        # Small blocks and batches that straddle them, failures between the good pairs.
        ({"resources": {"rows_per_decode": 5}, "fusion": {"batch_size": 3}}, True),
        ({"resources": {"rows_per_decode": 2}, "fusion": {"batch_size": 7}, "pairs": {"batch_size": 4}}, True),
    ],
    ids=["defaults", "blocks5-batch3", "blocks2-batch7"],
)
def test_equal_size_pairs_and_failures_in_one_block_all_fuse(ray_session, tmp_path, sizes, interleave):
    data = tmp_path / "in"
    good = write_good_pairs(data, 17, sixteen_bit=1)
    bad = [
        {"pair_id": "missing", "uri_a": "g00_a.png", "uri_b": "nope.png", "task": "mff"},
        {"pair_id": "lonely", "uri_a": "g01_a.png", "uri_b": "", "task": "mff"},
    ]
    # 8-bit RGB A with a 16-bit grey B: a valid pair whose output is 8-bit, next to 16-bit outputs.
    good.append({"pair_id": "mixed", "uri_a": "g00_a.png", "uri_b": "g16_b.png", "task": "mff"})
    rows = good[:4] + bad[:1] + good[4:9] + bad[1:] + good[9:] if interleave else good[:16] + bad + good[16:]
    write_manifest(data / "pairs.csv", rows)
    out = str(tmp_path / "out")
    config = FuseJobConfig(input=str(data / "pairs.csv"), output={"uri": out}, failures={"max_fraction": 1.0}, **sizes)
    summary = run_batch_fuse(config)
    assert (summary["pairs_ok"], summary["pairs_failed"]) == (18, 2)
    assert {p.stem for p in Path(out).glob("*.png")} == {r["pair_id"] for r in good}
    assert np.asarray(Image.open(Path(out) / "g16.png")).dtype == np.uint16
    latest = latest_records(out)
    assert "nope.png" in latest["missing"][S.ERROR] and latest["lonely"][S.ERROR_STAGE] == S.STAGE_DISCOVER
    assert all(latest[r["pair_id"]][S.STATUS] == S.STATUS_OK for r in good)
