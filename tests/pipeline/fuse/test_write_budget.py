"""What one write task and the job's blocks in flight may hold when scenes are tile rows (issue 14)."""

from __future__ import annotations

from pipeline.config.fuse_config import FuseJobConfig
from pipeline.fuse.memory import object_store_limit, rows_per_write


def _config(**fields) -> FuseJobConfig:
    return FuseJobConfig(input="pairs.csv", output={"uri": "out"}, **fields)


def test_write_bundles_of_tile_rows_follow_the_tile_size():
    # 48 MiB of 1024² RGB tiles: 16 rows per write task instead of 64; small tiles keep rows_per_write
    assert rows_per_write(_config()) == 16
    assert rows_per_write(_config(tiling={"tile_size": 512})) == 64
    assert rows_per_write(_config(tiling={"tile_size": 4096})) == 1
    assert rows_per_write(_config(resources={"write_max_mb": 96})) == 32
    # no tile rows: the configured bundle, untouched
    assert rows_per_write(_config(tiling={"window_min_pixels": None})) == 64
    assert rows_per_write(_config(method="average")) == 64


def test_object_store_budget_is_set_for_the_job_and_restored():
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before = options.resource_limits
    with object_store_limit(256):
        assert options.resource_limits.object_store_memory == 256 * 2**20
    assert options.resource_limits == before
    with object_store_limit(None):
        assert options.resource_limits == before
