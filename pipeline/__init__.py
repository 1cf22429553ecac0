"""maugif-ray's Ray pipeline: the public, Ray-native API of the batch job's pieces.

Compose them with your own Ray Data code (README "Python API")::

    import ray
    from pipeline import FusionPredictor, decode_row, read_pairs, write_fused

    ds = read_pairs("samples/manifest.csv")                    # one row per pair: pair_id, uri_a, uri_b, task
    ds = ds.map(decode_row, num_cpus=0.5)                      # CPU tasks: image_a, image_b (HWC), meta_a, meta_b
    ds = ds.map_batches(FusionPredictor, fn_constructor_kwargs={"config": {"method": "maugif"}},
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5)
    write_fused(ds, "outputs/api")                             # PNG / COG + manifest, as the batch job writes

The row schema (keys in :mod:`pipeline.schema`) is documented in docs/API.md. Images are ``(H, W, C)`` everywhere;
array columns travel as ``.npy`` bytes (:func:`decode_array` turns one back into an array).

Importing ``pipeline`` is cheap: each name below is imported from its module on first use, so ``import pipeline``
imports neither Ray nor torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config.fuse_config import FuseJobConfig
    from pipeline.config.io_config import PairsConfig, ReadConfig, StorageConfig
    from pipeline.config.output_config import OutputConfig
    from pipeline.fuse.batch import decode_row, resume_done, run_batch_fuse
    from pipeline.fuse.predictor import FusionPredictor, PredictorConfig
    from pipeline.fuse.sinks import FusedImageDatasink
    from pipeline.fuse.write import write_fused
    from pipeline.io.decode import decode_pair
    from pipeline.io.pairs import read_pairs
    from pipeline.schema import decode_array, encode_array

# public name -> module that defines it
_EXPORTS = {
    "read_pairs": "pipeline.io.pairs",
    "decode_row": "pipeline.fuse.batch",
    "decode_pair": "pipeline.io.decode",
    "FusionPredictor": "pipeline.fuse.predictor",
    "PredictorConfig": "pipeline.fuse.predictor",
    "FusedImageDatasink": "pipeline.fuse.sinks",
    "write_fused": "pipeline.fuse.write",
    "decode_array": "pipeline.schema",
    "encode_array": "pipeline.schema",
    "resume_done": "pipeline.fuse.batch",
    "run_batch_fuse": "pipeline.fuse.batch",
    "FuseJobConfig": "pipeline.config.fuse_config",
    "OutputConfig": "pipeline.config.output_config",
    "PairsConfig": "pipeline.config.io_config",
    "ReadConfig": "pipeline.config.io_config",
    "StorageConfig": "pipeline.config.io_config",
}

__all__ = [
    "FuseJobConfig",
    "FusedImageDatasink",
    "FusionPredictor",
    "OutputConfig",
    "PairsConfig",
    "PredictorConfig",
    "ReadConfig",
    "StorageConfig",
    "decode_array",
    "decode_pair",
    "decode_row",
    "encode_array",
    "read_pairs",
    "resume_done",
    "run_batch_fuse",
    "write_fused",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
