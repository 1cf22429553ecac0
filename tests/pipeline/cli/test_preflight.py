"""Pre-flight checks on real files: every checkpoint problem, location normalising, the cheap pair probe."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

import maugif_core
from pipeline.cli.preflight import (
    DiscoverySeen,
    PreflightError,
    check_output_outside,
    is_inside,
    normalize_location,
    probe_pairs,
)
from pipeline.cli.preflight_checkpoint import check_checkpoint
from pipeline.config.io_config import PairsConfig

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "mff"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "mff.safetensors"
    maugif_core.save_checkpoint(maugif_core.build_model("mff"), path)
    return path


def _metadata(path: Path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size])["__metadata__"]


def _bad_checkpoints(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, a fragment its pre-flight message must contain)."""
    model = maugif_core.build_model("mff")
    meta = _metadata(good)
    pickled = folder / "pickled.pt"
    torch.save(model.state_dict(), pickled)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(k for k, v in state.items() if v.ndim == 4)
    state[first] = torch.zeros(2, *state[first].shape[1:])
    shapes = folder / "shapes.safetensors"
    shapes.write_bytes(save_safetensors(state, metadata=meta))
    config = json.loads(meta["config"])
    config["task"] = "sharpen-everything"
    unknown = folder / "unknown.safetensors"
    unknown.write_bytes(save_safetensors(model.state_dict(), metadata={**meta, "config": json.dumps(config)}))
    truncated = folder / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {
        "pickle": (pickled, "refusing to unpickle"),
        "wrong shapes": (shapes, "weights do not match the stored config"),
        "unknown task": (unknown, "stored config is invalid"),
        "truncated": (truncated, "truncated or corrupt"),
        "missing": (folder / "nope.safetensors", "does not exist"),
    }


def test_every_checkpoint_problem_is_found_before_ray(good, tmp_path):
    for name, (path, fragment) in _bad_checkpoints(good, tmp_path).items():
        with pytest.raises(PreflightError) as info:
            check_checkpoint(str(path), "mff")
        message = str(info.value)
        assert str(path) in message and fragment in message, (name, message)


def test_task_mismatch_general_and_mechanism(good, tmp_path):
    assert "task 'mff'" in check_checkpoint(str(good), "mff")
    with pytest.raises(PreflightError, match="trained for task 'mff' but is given for task 'vif'"):
        check_checkpoint(str(good), "vif")
    assert "allowed" in check_checkpoint(str(good), "vif", allow_task_mismatch=True)
    general = tmp_path / "general.safetensors"
    maugif_core.save_checkpoint(maugif_core.build_model("general"), general)
    assert "task 'general'" in check_checkpoint(str(general), "vif")  # one model for every additive task
    with pytest.raises(PreflightError, match="holds a additive 'mff' model, but it is given for the multiplicative"):
        check_checkpoint(str(good), "pansharpen", allow_task_mismatch=True)


def test_locations_are_normalised():
    assert normalize_location("s3://Bucket//a/./b/") == "s3://Bucket/a/b"
    assert normalize_location("S3://b/a") == "s3://b/a"
    assert normalize_location("file:///tmp/x/") == normalize_location("/tmp/x")
    assert is_inside("s3://b/in/vi", "s3://b/in") and is_inside("s3://b/in", "s3://b/in")
    assert not is_inside("s3://b/input2", "s3://b/in") and not is_inside("/tmp/in", "s3://tmp/in")


def test_output_inside_symlinked_input_is_found(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(PreflightError, match="is inside the input location"):
        check_output_outside(str(tmp_path / "link" / "out"), str(tmp_path / "real"), [])
    assert "outside" in check_output_outside(str(tmp_path / "out"), str(tmp_path / "real"), [])


def test_probe_reads_only_the_first_rows_of_a_large_manifest(tmp_path):
    manifest = tmp_path / "big.csv"
    a, b = SAMPLES / "source1" / "mfiwhu_1.png", SAMPLES / "source2" / "mfiwhu_1.png"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair_id", "uri_a", "uri_b", "task"])
        writer.writerows([f"p{i:07d}", str(a), str(b), "mff"] for i in range(200_000))
    seen = DiscoverySeen()
    detail = probe_pairs(str(manifest), task=None, config=PairsConfig(batch_size=1000), storage=None, seen=seen)
    assert seen.pairs == 1000 and "1000 pairs" in detail  # one batch, not 200,000 rows
    assert seen.locations == {str(a.parent), str(b.parent)}


def test_probe_of_a_manifest_of_bad_rows_says_why(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("pair_id,uri_a,uri_b,task\nx,a.png,,mff\ny,a.png,b.png,sharpen\n")
    with pytest.raises(PreflightError) as info:
        probe_pairs(str(manifest), task=None, config=PairsConfig(), storage=None, seen=DiscoverySeen())
    assert "all 2 discovered rows are bad" in str(info.value) and "unknown task 'sharpen'" in str(info.value)
