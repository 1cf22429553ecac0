"""Row-level progress of a batch job: write tasks report finished rows to a tiny actor; the driver polls it.

Ray Data's own progress bars count blocks and print ``Total Progress: 0/?`` in a log; this counts pairs. Write
tasks call :meth:`ProgressCounter.add` (fire-and-forget, batched: every ``REPORT_ROWS`` rows or
``REPORT_SECONDS``); the driver's :class:`ProgressPoller` thread reads :meth:`ProgressCounter.snapshot` every
half second and hands it to a callback (the job's console: a tqdm bar in a terminal, a line every few seconds in
a log). The counter also keeps when each report arrived, so a dry run can tell start-up from steady state, and
which per-scene fits (multiplicative tasks, minutes each) run now, so a long fit is visible as it happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "ProgressCounter",
    "ProgressPoller",
    "RowReporter",
    "rates_from_history",
    "report_scene",
    "start_counter",
]

logger = logging.getLogger(__name__)

REPORT_ROWS = 16
REPORT_SECONDS = 0.5


class ProgressCounter:
    """Counts finished rows by status (run as a Ray actor with ``num_cpus=0``, see :func:`start_counter`)."""

    def __init__(self) -> None:
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.history: list[tuple[float, int]] = []  # (wall time, rows processed so far: ok + failed)
        self.fitting: dict[str, float] = {}  # scenes whose per-scene fit runs now → wall time it started
        self.fitted = 0

    def scene(self, pair_id: str, event: str, at: float) -> None:
        """A per-scene fit (multiplicative tasks) started (``event="start"``) or ended (``"end"``)."""
        if event == "start":
            self.fitting[pair_id] = at
        elif self.fitting.pop(pair_id, None) is not None:
            self.fitted += 1

    def add(self, counts: dict[str, int], at: float) -> None:
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(value)
        processed = self.counts["ok"] + self.counts["failed"]
        if counts.get("ok", 0) or counts.get("failed", 0):
            self.history.append((at, processed))

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.counts,
            "history": list(self.history),
            "fitting": sorted(self.fitting.items(), key=lambda kv: kv[1]),
            "fitted": self.fitted,
        }


def start_counter(name: str | None = None) -> Any:
    """A :class:`ProgressCounter` actor on the connected cluster (no CPU reserved); ``name`` makes it findable by
    the fusion actors (:func:`report_scene`)."""
    import ray

    options: dict[str, Any] = {"num_cpus": 0}
    if name:
        options["name"] = name
    return ray.remote(**options)(ProgressCounter).remote()


def report_scene(counter_name: str | None, pair_id: str, event: str) -> None:
    """Tell the job's named counter that a per-scene fit of ``pair_id`` starts or ends (no-op without a name;
    never raises: progress is informative only)."""
    if not counter_name:
        return
    try:
        import ray

        ray.get_actor(counter_name).scene.remote(pair_id, event, time.time())
    except Exception:
        logger.debug("scene progress report failed", exc_info=True)


class RowReporter:
    """Used inside a write task: batches row statuses into :meth:`ProgressCounter.add` calls."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.pending: dict[str, int] = {}
        self.rows = 0
        self.last = time.monotonic()

    def row(self, status: str) -> None:
        if self.counter is None:
            return
        self.pending[status] = self.pending.get(status, 0) + 1
        self.rows += 1
        if self.rows >= REPORT_ROWS or time.monotonic() - self.last >= REPORT_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.counter is None or not self.pending:
            return
        try:
            self.counter.add.remote(dict(self.pending), time.time())
        except Exception:  # progress is informative only: never fail a write because of it
            logger.debug("progress report failed", exc_info=True)
        self.pending, self.rows, self.last = {}, 0, time.monotonic()


class ProgressPoller:
    """Driver thread: polls the counter every ``interval`` seconds and calls ``callback(snapshot)``."""

    def __init__(self, counter: Any, callback: Callable[[dict[str, Any]], None], interval: float = 0.5) -> None:
        self.counter = counter
        self.callback = callback
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maugif-progress", daemon=True)
        self.latest: dict[str, Any] = {"ok": 0, "failed": 0, "skipped": 0, "history": []}

    def __enter__(self) -> ProgressPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the final counts

    def poll(self) -> dict[str, Any]:
        import ray

        try:
            self.latest = ray.get(self.counter.snapshot.remote(), timeout=10)
        except Exception:
            logger.debug("progress poll failed", exc_info=True)
            return self.latest
        try:
            self.callback(self.latest)
        except Exception:
            logger.debug("progress callback failed", exc_info=True)
        return self.latest

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()


def rates_from_history(history: list[tuple[float, int]], started: float) -> dict[str, float | None]:
    """Start-up time and steady-state rate from the counter's report history.

    Start-up is the time from ``started`` (wall clock) to the first finished row; the steady-state rate is the
    rows finished after the first report divided by the time between the first and the last report (None with
    fewer than two reports).
    """
    if not history:
        return {"startup_s": None, "steady_pairs_per_s": None}
    first_t, first_n = history[0]
    last_t, last_n = history[-1]
    steady = (last_n - first_n) / (last_t - first_t) if last_t > first_t and last_n > first_n else None
    return {"startup_s": max(0.0, first_t - started), "steady_pairs_per_s": steady}
