"""``--method`` in the evaluation job: the method under test heads the table, plugins are accepted by name and
scored like any method, and a wrong method stops the job before Ray."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import schema as S
from pipeline.config.eval_config import EvalJobConfig
from pipeline.errors import ConfigError


def _config(tmp_path, **fields) -> EvalJobConfig:
    base = {"input": str(tmp_path / "pairs.csv"), "task": "mff", "output": str(tmp_path / "out")}
    return EvalJobConfig(**{**base, **fields})


def test_method_heads_the_default_table(tmp_path):
    assert _config(tmp_path).method_names == ("maugif", "average", "maxabs", "dwt", "laplacian")
    assert _config(tmp_path, method="dwt").method_names == ("dwt", "maugif", "average", "maxabs", "laplacian")
    spectral = _config(tmp_path, task="pansharpen", method="gsa")
    assert spectral.method_names[:2] == ("gsa", "maugif")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("laplace", "method: unknown method 'laplace': expected one of maugif, average"),
        ("gsa", "method: 'gsa' cannot fuse task mff"),
    ],
)
def test_a_wrong_method_is_a_config_error(tmp_path, method, message):
    from pipeline.config.loading import load_job_config

    with pytest.raises(ConfigError, match=message):
        load_job_config(EvalJobConfig, None, [], input="p.csv", task="mff", output=str(tmp_path), method=method)


def test_a_plugin_method_is_scored_like_a_baseline(tmp_path, monkeypatch, method_plugin):
    from pipeline.evaluate.evaluation import PairEvaluator

    with pytest.raises(ValueError, match="unknown method 'brighter'"):
        _config(tmp_path, method="brighter")
    monkeypatch.syspath_prepend(str(method_plugin))
    importlib.invalidate_caches()
    config = _config(tmp_path, method="brighter", methods=("brighter", "average"))
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (72, 72, 3), dtype=np.uint8) for _ in range(2))
    evaluator = PairEvaluator(config.model_dump(mode="json"), {}, [])
    row = {S.PAIR_ID: "p", S.TASK: "mff", S.STATUS: S.STATUS_OK, S.IMAGE_A: a, S.IMAGE_B: b,
           S.META_A: json.dumps({"descriptions": [None] * 3})}  # fmt: skip
    rows = pd.DataFrame(evaluator(row))
    assert (rows["error"] == "").all(), rows["error"].tolist()
    assert set(rows["method"]) == {"brighter", "average"}
    assert {"ssim", "psnr", "seconds"} <= set(rows.loc[rows["method"] == "brighter", "metric"])
    np.testing.assert_array_equal(evaluator.fuse("brighter", _Scene(a, b), "p", {}, "mff"), np.maximum(a, b))


class _Scene:
    def __init__(self, image_a, image_b):
        self.image_a, self.image_b = image_a, image_b
