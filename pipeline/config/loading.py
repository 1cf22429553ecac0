"""Job configs from YAML plus ``--set key=value`` overrides, validated by pydantic before Ray starts.

One mechanism for every job (``jobs/train.py``, ``jobs/batch_fuse.py``)::

    config = load_job_config(
        TrainJobConfig,
        "configs/train_default.yaml",            # None: start from the model's defaults
        ["train.lr=1e-3", "train.use_gpu=true"],  # repeatable --set overrides, applied in order
        **{"storage.path": "s3://bucket/run"},    # dedicated CLI flags (None = not given), applied last
    )

Values of overrides are parsed as YAML scalars (``1e-3``, ``true``, ``[1, 2]``, ``null``) and then coerced and
checked by the pydantic model, except for fields typed as strings, which keep the text verbatim
(``--set storage.name=007`` stays ``"007"``). Every failure (missing file, bad YAML, unknown key, bad value, a
cross-field rule) is a :class:`~pipeline.errors.ConfigError` whose message names the dotted field.

This module imports only PyYAML, pydantic and fsspec, so validating a job config takes well under a second.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

__all__ = [
    "apply_overrides",
    "config_to_yaml",
    "format_validation_error",
    "load_job_config",
    "load_yaml",
    "parse_override",
    "save_config",
]

M = TypeVar("M", bound=BaseModel)

_NULLS = ("null", "~", "none", "None", "NULL")


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping from a local path or any fsspec URI.

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, or a top level that is not a mapping.
    """
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, ValueError) as e:
        raise ConfigError(f"config file {path!r} cannot be read: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"a.b.c=value"`` into ``("a.b.c", "value")``.

    Raises:
        ConfigError: no ``=``, or an empty key or key component.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key=value with a dotted key, e.g. train.lr=0.001")
    return key, value


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an annotation, with ``Annotated`` and ``Optional``/unions flattened."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _leaf_annotation(model_cls: type[BaseModel], keys: list[str]) -> Any | None:
    """The annotation of the field at ``keys`` below ``model_cls``; None when the path leaves the models."""
    current: Any = model_cls
    for i, key in enumerate(keys):
        models = [t for t in _unwrap(current) if _is_model(t)]
        if not models or key not in models[0].model_fields:
            return None
        current = models[0].model_fields[key].annotation
        if i == len(keys) - 1:
            return current
    return None


def _parse_value(model_cls: type[BaseModel], key: str, raw: str) -> Any:
    """Parse an override's text: verbatim for string fields, a YAML scalar/collection otherwise."""
    annotation = _leaf_annotation(model_cls, key.split("."))
    if annotation is not None:
        members = _unwrap(annotation)
        accepts_none = type(None) in members
        if accepts_none and raw.strip() in _NULLS:
            return None
        stringy = [
            t
            for t in members
            if t is str
            or (typing.get_origin(t) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(t)))
        ]
        if stringy and all(t is type(None) or t in stringy for t in members):
            return raw
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is {child!r}, not a section with keys")
        node = child
    node[parts[-1]] = value


def apply_overrides(
    model_cls: type[BaseModel], data: Mapping[str, Any], overrides: Iterable[str | tuple[str, Any]]
) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted overrides applied in order.

    Args:
        model_cls: The config model, used to decide how override text is parsed (strings stay verbatim).
        data: The loaded YAML mapping.
        overrides: ``"key=value"`` strings (text parsed as YAML) or ``(key, value)`` pairs (values as given).

    Raises:
        ConfigError: a malformed override, or one that descends into a value that is not a section.
    """
    merged = _deep_copy(data)
    for item in overrides:
        if isinstance(item, str):
            key, raw = parse_override(item)
            value = _parse_value(model_cls, key, raw)
        else:
            key, value = item
        _set_dotted(merged, key, value)
    return merged


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _fields_at(model_cls: type[BaseModel], keys: list[str]) -> list[str]:
    annotation: Any = model_cls if not keys else _leaf_annotation(model_cls, keys)
    models = [t for t in _unwrap(annotation) if _is_model(t)] if annotation is not None else []
    return list(models[0].model_fields) if models else []


def format_validation_error(error: ValidationError, model_cls: type[BaseModel]) -> str:
    """One line per problem, each starting with the dotted field name (``train.lr: ...``).

    Unknown keys get a "did you mean" hint from the fields valid at that level.
    """
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        where = ".".join(loc) or "config"
        if item["type"] == "extra_forbidden":
            valid = _fields_at(model_cls, loc[:-1])
            hint = difflib.get_close_matches(loc[-1], valid, n=1)
            suggestion = f"; did you mean {'.'.join([*loc[:-1], hint[0]])!r}?" if hint else ""
            lines.append(f"{where}: unknown key{suggestion} (valid keys here: {', '.join(valid)})")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "value_error" and (not loc or message.startswith(where)):
            lines.append(message)  # a cross-field rule: its message names its fields itself
        elif item["type"] in ("missing", "value_error"):
            lines.append(f"{where}: {message}")
        else:
            lines.append(f"{where}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_job_config(
    model_cls: type[M],
    config_path: str | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
    **cli_fields: Any,
) -> M:
    """Build and validate a job config: YAML file, then ``--set`` overrides, then dedicated CLI flags.

    Args:
        model_cls: The pydantic config model (``extra="forbid"``, ``frozen=True``).
        config_path: A YAML file (local path or fsspec URI); None starts from the model's defaults.
        overrides: ``"dotted.key=value"`` strings, applied in order (later wins).
        **cli_fields: Dotted keys to values from dedicated CLI flags (``**{"storage.path": args.output}``;
            ``__`` may stand for ``.`` in keyword names). None means "flag not given" and is skipped. Applied
            last.

    Returns:
        The validated config.

    Raises:
        ConfigError: any problem, with a message naming the field(s).
    """
    data = load_yaml(config_path) if config_path is not None else {}
    flags = [(key.replace("__", "."), value) for key, value in cli_fields.items() if value is not None]
    merged = apply_overrides(model_cls, data, [*overrides, *flags])
    try:
        return model_cls.model_validate(merged)
    except ValidationError as e:
        source = f" (from {config_path})" if config_path else ""
        raise ConfigError(f"invalid {model_cls.__name__}{source}:\n{format_validation_error(e, model_cls)}") from e


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML (every field, defaults included, in declaration order)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def save_config(config: BaseModel, uri: str, *, storage: Any = None) -> str:
    """Write the resolved config as YAML to ``uri`` (local path or ``s3://``), atomically.

    Args:
        config: The validated config.
        uri: Target file.
        storage: A :class:`~pipeline.config.io_config.StorageConfig` for ``s3://`` targets (None: the environment's).

    Returns:
        ``uri``.
    """
    from pipeline.io.fsutil import atomic_write_bytes
    from pipeline.io.storage import get_filesystem

    fs, _ = get_filesystem(uri, storage)
    atomic_write_bytes(uri, config_to_yaml(config).encode("utf-8"), fs=fs)
    return uri
