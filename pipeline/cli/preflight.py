"""Pre-flight checks: the user mistakes every job can make, found on the driver before Ray starts.

Each check is cheap and bounded, so a job over a million-pair manifest starts as fast as one over ten pairs:

- the input exists (a missing bucket is named as a missing bucket) and yields at least one pair: discovery
  stops at the first batch that holds a pair (a manifest's first rows); when nothing is found, the message says
  what discovery saw (files, sub-folders) and the layout the task expects;
- the output bucket exists, the output is writable (a probe object is written and removed) and the output is
  neither inside nor equal to an input location (the input folder, a manifest, or the folders of the pair URIs
  in the manifest's first rows), after normalising local paths and ``s3://`` URIs;
- every checkpoint loads and was trained for the task it is given for (:mod:`pipeline.cli.preflight_checkpoint`).

:func:`run_checks` runs the steps in order, skipping those whose prerequisite failed, and returns
:class:`Check` results; jobs print them (``--check``) or turn any failure into exit code 2.
This module imports neither Ray nor rasterio; torch is imported only to load a checkpoint.
"""

from __future__ import annotations

import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.io_config import PairsConfig, StorageConfig
from pipeline.errors import PipelineError

__all__ = [
    "Check",
    "DiscoverySeen",
    "check_bucket",
    "PreflightError",
    "Step",
    "check_input",
    "check_output_outside",
    "check_output_writable",
    "format_checks",
    "is_inside",
    "is_s3_uri",
    "normalize_location",
    "probe_pairs",
    "run_checks",
]

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 1000
"""Manifest rows whose pair-URI folders count as input locations (a sample: the check stays cheap)."""


class PreflightError(PipelineError, ValueError):
    """A user mistake found before Ray starts (missing input or bucket, no pairs, unwritable output, an output
    inside an input, a checkpoint that cannot be used)."""


@dataclass(frozen=True)
class Check:
    """The outcome of one pre-flight step: ``ok`` with what was found, or the one-line problem."""

    name: str
    ok: bool | None  # None: skipped because a step it needs failed
    detail: str
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass
class Step:
    """One named check; ``run`` returns a one-line description of what it found or raises an error."""

    name: str
    run: Callable[[], str]
    needs: tuple[str, ...] = ()


@dataclass
class DiscoverySeen:
    """What discovery saw during :func:`probe_pairs`, shared by the checks that follow it."""

    pairs: int = 0
    failures: int = 0
    first_failures: list[str] = field(default_factory=list)
    locations: set[str] = field(default_factory=set)


def run_checks(steps: Iterable[Step]) -> list[Check]:
    """Run ``steps`` in order; a step whose ``needs`` failed is skipped. Errors become failed checks."""
    results: list[Check] = []
    failed: set[str] = set()
    for step in steps:
        missing = [n for n in step.needs if n in failed]
        if missing:
            failed.add(step.name)
            results.append(Check(step.name, None, f"skipped: needs {', '.join(missing)}"))
            continue
        try:
            results.append(Check(step.name, True, step.run()))
        except Exception as e:  # every failure is reported as a line; the job decides the exit code
            failed.add(step.name)
            logger.debug("pre-flight step %s failed", step.name, exc_info=True)
            results.append(Check(step.name, False, _one_line(e), e))
    return results


def format_checks(checks: list[Check]) -> str:
    """The checklist: ``[ok]``, ``[FAIL]`` or ``[skip]`` and the detail of each step."""
    marks = {True: "[ok]  ", False: "[FAIL]", None: "[skip]"}
    width = max((len(c.name) for c in checks), default=0)
    return "\n".join(f"{marks[c.ok]} {c.name.ljust(width)}  {c.detail}" for c in checks)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, (PipelineError,)) or type(error).__module__.startswith(("pipeline", "maugif_core")):
        return text
    return f"{type(error).__name__}: {text}"


# ------------------------------------------------------------------------------------------------- locations


def normalize_location(uri: str) -> str:
    """A comparable form of a location: ``s3://bucket/key`` without trailing ``/``; an absolute, resolved local
    path (``file://`` stripped, symlinks resolved, relative paths taken from the working directory)."""
    text = uri.strip()
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        if scheme in ("s3", "s3a"):
            parts = [p for p in rest.split("/") if p not in ("", ".")]
            return "s3://" + posixpath.normpath("/".join(parts)).lstrip("/") if parts else "s3://"
        if scheme != "file":
            return f"{scheme}://{rest.rstrip('/')}"
        text = rest if rest.startswith("/") else "/" + rest
    return os.path.realpath(os.path.abspath(os.path.expanduser(text)))


def is_inside(location: str, container: str) -> bool:
    """Whether normalised ``location`` equals ``container`` or lies below it."""
    if location == container:
        return True
    return location.startswith(container.rstrip("/") + "/")


def _parent(uri: str) -> str:
    head, sep, _ = uri.rstrip("/").rpartition("/")
    return head if sep and not head.endswith(":/") else uri


def _bucket(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def is_s3_uri(uri: str) -> bool:
    """True for ``s3://`` and ``s3a://`` URIs."""
    return "://" in uri and uri.split("://", 1)[0].lower() in ("s3", "s3a")


# ------------------------------------------------------------------------------------------------- input


def check_bucket(fs: Any, uri: str, role: str) -> None:
    """The bucket of ``uri`` exists (``role`` names it in the message: input, output, checkpoint).

    Raises:
        PreflightError: a missing, unreachable or forbidden bucket.
    """
    bucket = _bucket(uri)
    try:
        fs.invalidate_cache()
        exists = fs.exists(bucket)
    except PermissionError as e:
        raise PreflightError(f"{role} bucket {bucket!r} ({uri}): access denied: {e}") from e
    except Exception as e:
        raise PreflightError(f"{role} bucket {bucket!r} ({uri}) cannot be reached: {type(e).__name__}: {e}") from e
    if not exists:
        raise PreflightError(f"{role} bucket {bucket!r} does not exist ({role} {uri}): expected an existing bucket")


def check_input(source: str, storage: StorageConfig | None = None, *, what: str = "input") -> str:
    """The input exists: a manifest file or a folder (an ``s3://`` bucket is checked first).

    Raises:
        PreflightError: a missing bucket, file or folder, named as such.
    """
    from pipeline.io.storage import get_filesystem

    fs, path = get_filesystem(source, storage)
    if is_s3_uri(source):
        check_bucket(fs, source, what)
    try:
        is_file, is_dir = fs.isfile(path), fs.isdir(path)
    except Exception as e:
        raise PreflightError(f"{what} {source!r} cannot be reached: {type(e).__name__}: {e}") from e
    if is_file:
        return f"{source} (file)"
    if is_dir:
        return f"{source} (folder)"
    raise PreflightError(f"{what} {source!r} does not exist: expected a manifest (.csv/.parquet/.jsonl) or a folder")


def probe_pairs(
    source: str,
    *,
    task: str | None,
    config: PairsConfig,
    storage: StorageConfig | None,
    seen: DiscoverySeen,
    sample_rows: int = SAMPLE_ROWS,
) -> str:
    """Discovery yields at least one pair (stops at the first batch holding one, after ``sample_rows`` rows).

    Also collects the folders of the pair URIs it saw into ``seen.locations`` (input locations).

    Raises:
        PairDiscoveryError: the source cannot be read as a whole.
        PreflightError: no pair at all; the message says what discovery saw and what the task expects.
    """
    import pyarrow as pa

    from pipeline import schema as S
    from pipeline.io.pairs import iter_pairs

    rows = 0
    for batch in iter_pairs(source, task=task, config=config, storage=storage):
        seen.pairs += batch.pairs.num_rows
        seen.failures += batch.failures.num_rows
        for row in batch.failures.slice(0, max(0, 3 - len(seen.first_failures))).to_pylist():
            seen.first_failures.append(f"{row[S.PAIR_ID]}: {row[S.ERROR]}")
        table = pa.concat_tables([batch.pairs, batch.failures])
        for column in (S.URI_A, S.URI_B):
            for uri in table.column(column).slice(0, sample_rows).drop_null().unique().to_pylist():
                seen.locations.add(_parent(uri))
        rows += table.num_rows
        if seen.pairs and rows >= min(sample_rows, config.batch_size):
            break
    if seen.pairs:
        more = "" if not seen.failures else f" ({seen.failures} bad rows so far, reported per pair)"
        return f"found pairs (first {rows} rows: {seen.pairs} pairs){more}"
    if seen.failures:
        raise PreflightError(
            f"input {source!r} yields no usable pair: all {seen.failures} discovered rows are bad, e.g. "
            + "; ".join(seen.first_failures)
        )
    raise PreflightError(_nothing_found(source, task, config, storage))


def _nothing_found(source: str, task: str | None, config: PairsConfig, storage: StorageConfig | None) -> str:
    """Why a source yields no pair: what it holds, and the layouts the task expects."""
    from pipeline.io.pair_folders import DEFAULT_PATTERNS, TASK_FOLDERS
    from pipeline.io.pair_manifests import manifest_kind
    from pipeline.io.storage import get_filesystem

    if manifest_kind(source) is not None:
        return f"input {source!r} yields no pairs: the manifest has no rows (expected pair_id, uri_a, uri_b rows)"
    fs, path = get_filesystem(source, storage)
    folders: list[str] = []
    extensions: dict[str, int] = {}
    try:
        for entry in fs.ls(path, detail=True)[:10_000]:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory":
                folders.append(name)
            else:
                ext = os.path.splitext(name)[1].lower() or "(none)"
                extensions[ext] = extensions.get(ext, 0) + 1
    except OSError:
        pass
    files = sum(extensions.values())
    saw = f"{files} file(s)" + (
        f" ({', '.join(f'{n} {e}' for e, n in sorted(extensions.items()))})" if extensions else ""
    )
    if folders:
        described = []
        for name in sorted(folders)[:20]:  # a glance, not a full listing
            try:
                count = len(fs.ls(f"{path.rstrip('/')}/{name}", detail=False))
            except OSError:
                count = 0
            described.append(f"{name}/ ({count} entries)")
        saw += " and sub-folders " + ", ".join(described) + (" ..." if len(folders) > 20 else "")
    else:
        saw += " and no sub-folders"
    lower = {f.lower() for f in folders}
    tasks = [task] if task else list(TASK_FOLDERS)
    expected = "; ".join(f"{t}: {'|'.join(TASK_FOLDERS[t][0])}/ + {'|'.join(TASK_FOLDERS[t][1])}/" for t in tasks)
    if config.folder_a:
        expected = f"{config.folder_a}/ + {config.folder_b}/ (pairs.folder_a/folder_b)"
    patterns = [
        f"{a} + {b}" for a, b in ([(config.pattern_a, config.pattern_b)] if config.pattern_a else DEFAULT_PATTERNS)
    ]
    hint = ""
    for other, (names_a, names_b) in TASK_FOLDERS.items():
        if other != task and lower & set(names_a) and lower & set(names_b):
            hint = f"; the sub-folders look like task {other!r}: use --task {other}"
            break
    return (
        f"input {source!r} yields no pairs for task {task or '(any)'}: it holds {saw}; expected sub-folders "
        f"[{expected}] or one folder of files named {' or '.join(patterns)} "
        f"(extensions {', '.join(config.extensions)}){hint}"
    )


# ------------------------------------------------------------------------------------------------- output


def check_output_outside(output: str, source: str, locations: Iterable[str]) -> str:
    """The output is neither inside nor equal to the input or any pair-URI folder.

    Raises:
        PreflightError: naming the output and the input location it falls into.
    """
    out = normalize_location(output)
    candidates = [source, *sorted(locations)]
    for location in candidates:
        norm = normalize_location(location)
        if is_inside(out, norm):
            relation = "is" if out == norm else "is inside"
            raise PreflightError(
                f"output {output!r} {relation} the input location {location!r}: outputs would mix with the inputs "
                "(and be read back as inputs or taken for finished outputs); expected an output location outside "
                "every input folder"
            )
    return f"{output} is outside the input ({len(candidates)} input location(s) checked)"


def check_output_writable(output: str, storage: StorageConfig | None = None) -> str:
    """Write a probe object under ``output`` and remove it (an ``s3://`` bucket is checked first).

    Raises:
        PreflightError: a missing bucket, or an output that cannot be written.
    """
    from pipeline.io.storage import get_filesystem

    fs, path = get_filesystem(output, storage)
    if is_s3_uri(output):
        check_bucket(fs, output, "output")
    local = not is_s3_uri(output) and "://" not in output.replace("file://", "")
    created: list[str] = []
    if local:
        target = os.path.abspath(path)
        probe_dir = target
        while probe_dir and not os.path.exists(probe_dir):
            created.append(probe_dir)
            probe_dir = os.path.dirname(probe_dir)
        if os.path.exists(target) and not os.path.isdir(target):
            raise PreflightError(f"output {output!r} is an existing file: expected a folder (or a new path)")
        path = target
    probe = f"{path.rstrip('/')}/.maugif-probe-{uuid.uuid4().hex[:12]}"
    try:
        if local:
            os.makedirs(path, exist_ok=True)
        with fs.open(probe, "wb") as handle:
            handle.write(b"maugif pre-flight probe\n")
        fs.rm_file(probe)
    except Exception as e:
        raise PreflightError(f"output {output!r} is not writable: {type(e).__name__}: {e}") from e
    finally:
        for folder in created:  # leave no empty folders behind (the deepest first)
            try:
                os.rmdir(folder)
            except OSError:
                break
    return f"{output} is writable (probe object written and removed)"
