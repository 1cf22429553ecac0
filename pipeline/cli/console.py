"""What a job shows a person while it runs: a row-based progress bar in a terminal, a line every few seconds in a
log, and the known warnings that only add noise.

Used by the entry points in ``jobs/`` only (they own the console); nothing here runs on import.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, TextIO

__all__ = ["ProgressConsole", "quiet_known_warnings"]

# Message patterns of warnings that say nothing to a user of the job (Ray Data deprecations raised by Ray's own
# defaults and by options Ray offers no other way to set, rasterio on plain PNG/JPEG inputs).
KNOWN_NOISE = (
    r".*use_arrow_tensor_v2.*",
    r".*`ray_remote_args` is deprecated.*",
    r".*has no geotransform.*",
    r".*torch\.cuda\.amp.*",
)


def quiet_known_warnings() -> None:
    """Filter :data:`KNOWN_NOISE` in this process (jobs call this; library code never installs filters)."""
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _scenes(fitting: list, fitted: int) -> str:
    """``fitting 2 scene(s) (p7 for 1m05s, ...), 3 fitted`` for per-scene fits (multiplicative tasks)."""
    if not fitting and not fitted:
        return ""
    now = time.time()
    running = ", ".join(f"{pid} for {_duration(now - started)}" for pid, started in list(fitting)[:3])
    more = " …" if len(fitting) > 3 else ""
    text = f"fitting {len(fitting)} scene(s) ({running}{more})" if fitting else "no scene fitting now"
    return f"{text}, {fitted} fitted"


class ProgressConsole:
    """The ``on_progress`` callback of :func:`pipeline.fuse.batch.run_batch_fuse` for a console.

    Args:
        stream: where to write (the job's stderr).
        interactive: a terminal: a tqdm bar (pairs, rate, ETA); otherwise one line every ``interval_s``.
        interval_s: seconds between lines when not interactive.
        label: the bar's label.
    """

    def __init__(self, stream: TextIO, *, interactive: bool, interval_s: float = 5.0, label: str = "pairs") -> None:
        self.stream = stream
        self.interactive = interactive
        self.interval_s = interval_s
        self.label = label
        self.started = time.monotonic()
        self.last_line = 0.0
        self.first_processed: tuple[float, int] | None = None
        self._bar: Any = None
        self.scenes = ""

    def __call__(self, state: dict[str, Any]) -> None:
        ok, failed, skipped = (int(state.get(k, 0)) for k in ("ok", "failed", "skipped"))
        total = int(state.get("total", 0))
        discovering = bool(state.get("discovering", False))
        done = ok + failed + skipped
        self.scenes = _scenes(state.get("fitting") or [], int(state.get("fitted", 0)))
        if self.interactive:
            self._update_bar(done, total, failed, skipped, discovering)
        else:
            self._maybe_line(done, total, failed, skipped, discovering)

    def _update_bar(self, done: int, total: int, failed: int, skipped: int, discovering: bool) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total or None, desc=self.label, unit="pair", file=self.stream, dynamic_ncols=True)
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        postfix = {"failed": failed, "done before": skipped}
        if discovering:
            postfix["discovering"] = "…"
        if self.scenes:
            postfix["scenes"] = self.scenes
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def _maybe_line(self, done: int, total: int, failed: int, skipped: int, discovering: bool) -> None:
        now = time.monotonic()
        processed = done - skipped
        if self.first_processed is None and processed > 0:
            self.first_processed = (now, processed)
        if now - self.last_line < self.interval_s:
            return
        self.last_line = now
        rate = None
        if self.first_processed is not None and now > self.first_processed[0] and processed > self.first_processed[1]:
            rate = (processed - self.first_processed[1]) / (now - self.first_processed[0])
        of = f"{total}{'+' if discovering else ''}" if total else "?"
        share = f" ({done / total:.1%})" if total and not discovering else ""
        eta = f", ETA {_duration((total - done) / rate)}" if rate and total and not discovering else ""
        speed = f", {rate:.2f} pairs/s" if rate else ""
        print(
            f"progress: {done}/{of} {self.label}{share}, {failed} failed, {skipped} done before{speed}{eta}, "
            f"elapsed {_duration(now - self.started)}" + (f"; {self.scenes}" if self.scenes else ""),
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
