"""Output key sharding (issue 18, USERS.md row 13): outputs under N prefixes, resume finds them there, and an
output never mixes two key layouts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from test_batch import _config, _write_manifest, _write_pairs
from test_batch_state import checkpoint  # noqa: F401  (module fixture)

from pipeline import schema as S
from pipeline.config.eval_config import FusedSourceConfig
from pipeline.errors import ConfigError, OutputKeyError
from pipeline.evaluate.fused_dirs import index_fused_dir
from pipeline.fuse.batch import run_batch_fuse
from pipeline.io.key_shards import pair_output, shard_name, shard_names
from pipeline.io.manifest import read_manifest
from pipeline.io.writers import png_uri

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(600)


def test_shard_names_are_stable_hex_and_stay_inside_the_output():
    assert shard_name("p000", 0) is None and shard_name("p000", 1) is None
    assert pair_output("s3://b/out", "p000", 1) == "s3://b/out"
    assert shard_names(16) == [format(i, "x") for i in range(16)] and shard_names(256)[:2] == ["00", "01"]
    assert shard_names(1000)[-1] == "3e7"  # width of N - 1 in hex
    # The same id gets the same shard in every process (a fixed hash, not Python's salted hash()).
    assert [shard_name(p, 256) for p in ("p000", "scene-7", "x")] == ["1c", "0e", "4f"]
    spread = {shard_name(f"pair{i:06d}", 16) for i in range(2000)}
    assert spread == set(shard_names(16))
    # Hostile ids cannot leave the prefix: the shard is hex only, and the writers still refuse the id itself.
    assert pair_output("s3://b/out", "../../etc", 16).startswith("s3://b/out/")
    with pytest.raises(OutputKeyError):
        png_uri(pair_output("s3://b/out", "../x", 16), "../x")


def _load_job():
    spec = importlib.util.spec_from_file_location("batch_fuse_job", REPO / "jobs" / "batch_fuse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sharded_outputs_resume_and_refuse_another_layout(ray_session, tmp_path, checkpoint, capsys):  # noqa: F811
    data = tmp_path / "in"
    rows = _write_pairs(data, 6, size=(24, 32), seed=31)
    _write_manifest(data / "pairs.csv", rows)
    out = tmp_path / "out"
    config = _config(str(data / "pairs.csv"), str(out), checkpoint, output={"uri": str(out), "key_shards": 4})
    first = run_batch_fuse(config)
    assert (first["pairs_ok"], first["pairs_failed"]) == (6, 0)
    for row in rows:
        pid = row["pair_id"]
        assert (out / shard_name(pid, 4) / f"{pid}.png").is_file()
    used = {p.name for p in out.iterdir()} - {S.MANIFEST_DIR, S.SUMMARY_FILE}
    assert used <= set(shard_names(4)) and len(used) >= 2  # nothing flat at the top, several prefixes in use
    outputs = {r[S.PAIR_ID]: r[S.OUTPUT_URI] for r in read_manifest(str(out)).to_pylist()}
    assert outputs == {r["pair_id"]: str(out / shard_name(r["pair_id"], 4) / f"{r['pair_id']}.png") for r in rows}
    # An evaluation pointed at the output finds the sharded outputs by pair id.
    index = index_fused_dir(FusedSourceConfig(name="ours", uri=str(out)))
    assert set(index) == {r["pair_id"] for r in rows}

    # A crash after the outputs were committed but before the manifest parts: resume finds the marked outputs
    # under their shards.
    for part in (out / S.MANIFEST_DIR).glob("part-*.parquet"):
        part.unlink()
    again = run_batch_fuse(config)
    assert (again["pairs_ok"], again["pairs_skipped"]) == (0, 6)

    # Another layout at this output is refused before anything runs, naming the output and both values.
    flat = _config(str(data / "pairs.csv"), str(out), checkpoint)
    with pytest.raises(ConfigError, match=r"output\.key_shards=4 by earlier runs.*output\.key_shards=0"):
        run_batch_fuse(flat)
    assert not list(out.glob("*.png"))
    code = _load_job().main(
        ["--input", str(data / "pairs.csv"), "--checkpoint", checkpoint, "--output", str(out), "--task", "mff"]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(out) in err and "key_shards=4" in err and "key_shards=0" in err, err
    assert not list(out.glob("*.png"))
