"""Option validation shared by the baselines: the option error, task names and level counts."""

from __future__ import annotations

from numbers import Integral

from maugif_core.config import ADDITIVE_TASKS, MULTIPLICATIVE_TASKS
from maugif_core.errors import MaugifError, ShapeError, UnknownTaskError

__all__ = ["OptionError", "check_levels", "check_task"]


class OptionError(MaugifError, ValueError):
    """A baseline option (levels, weights, eps, ...) has a value outside its domain."""


def check_task(task: str | None, method: str, *, additive: bool) -> None:
    """Raise :class:`UnknownTaskError` unless ``task`` is None or a task of the method's mechanism.

    Args:
        task: task name passed by the caller, or None.
        method: baseline name, for the message.
        additive: True for the additive baselines, False for the pansharpening / HS-MS ones.
    """
    if task is None:
        return
    allowed = ADDITIVE_TASKS if additive else MULTIPLICATIVE_TASKS
    if task not in allowed:
        raise UnknownTaskError(f"task: baseline {method!r} expects one of {', '.join(allowed)} (or None), got {task!r}")


def check_levels(levels: int | None, max_levels: int, default: int, shape: tuple[int, ...]) -> int:
    """Resolve a decomposition depth.

    Args:
        levels: requested number of levels, or None for ``min(default, max_levels)``.
        max_levels: the deepest decomposition the image size allows.
        default: depth used when ``levels`` is None.
        shape: image shape, for the message.

    Returns:
        The number of levels to use (0 only when ``levels`` is None and the image is too small for one level).

    Raises:
        OptionError: ``levels`` is not a positive integer.
        ShapeError: ``levels`` is deeper than the image size allows.
    """
    if levels is None:
        return min(default, max_levels)
    if isinstance(levels, bool) or not isinstance(levels, Integral) or levels < 1:
        raise OptionError(f"levels: expected a positive integer or None, got {levels!r}")
    if levels > max_levels:
        raise ShapeError(
            f"levels: an image of size {shape[0]}x{shape[1]} allows at most {max_levels} levels, got {levels}"
        )
    return int(levels)
