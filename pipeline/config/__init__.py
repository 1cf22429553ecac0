"""Configuration home: pydantic v2 frozen models (``FrozenConfig``) and their YAML + ``--set`` loading.

Modules:

- ``io_config``: FrozenConfig, StorageConfig, PairsConfig, ReadConfig, IngestConfig (storage, discovery, reading)
- ``output_config``: tiling and everything written under an output location
- ``fuse_config, train_config, eval_config``: the three jobs' configs
- ``loading``: load_job_config, apply_overrides, config_to_yaml, save_config
"""
