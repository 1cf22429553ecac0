"""``jobs/batch_fuse.py`` as a user runs it: user mistakes exit 2 before Ray starts, with one line naming the input
and what was expected (issue 13, cases 1-4).

The three cases of the issue's "done when" run the job as a subprocess and assert it exits 2 in under 5 s and never
imported Ray; the other mistakes call ``main()`` in this process (no Ray is started there either: the pre-flight
returns before ``import ray``).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factories import BATCH_FUSE_WRAPPER

import maugif_core

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "mff"

pytestmark = pytest.mark.timeout(120)


def _load_job():
    spec = importlib.util.spec_from_file_location("batch_fuse_job", REPO / "jobs" / "batch_fuse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_subprocess(*args: str) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BATCH_FUSE_WRAPPER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


@pytest.fixture
def vif_folder(tmp_path: Path) -> Path:
    """A folder in the vi/ + ir/ layout (real images: the bundled MFI-WHU samples stand in for both sides)."""
    root = tmp_path / "mypairs"
    for side, source in (("vi", "source1"), ("ir", "source2")):
        (root / side).mkdir(parents=True)
        for path in sorted((SAMPLES / source).glob("*.png")):
            shutil.copy(path, root / side / path.name)
    return root


@pytest.fixture(scope="module")
def mff_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "mff.safetensors"
    maugif_core.save_checkpoint(maugif_core.build_model("mff"), path)
    return str(path)


# ------------------------------------------------------------------- the three "done when" cases, as subprocesses


def _assert_fast_exit_2(code: int, text: str, seconds: float, *expected: str) -> str:
    assert code == 2, text
    assert "RAY_IMPORTED=False" in text, text
    assert seconds < 5.0, f"took {seconds:.1f} s"
    errors = [line for line in text.splitlines() if line.startswith("batch_fuse: error:")]
    assert len(errors) == 1 and "Traceback" not in text, text
    for fragment in expected:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_missing_input_exits_2_fast_without_ray(tmp_path):
    missing = tmp_path / "no-such-folder"
    code, text, seconds = _run_subprocess("--input", str(missing), "--task", "vif", "--output", str(tmp_path / "o"))
    _assert_fast_exit_2(code, text, seconds, str(missing), "does not exist", "expected a manifest")
    assert not (tmp_path / "o").exists()  # nothing left behind


def test_output_inside_input_exits_2_fast_without_ray(vif_folder):
    before = sorted(p.relative_to(vif_folder) for p in vif_folder.rglob("*"))
    out = vif_folder / "vi"
    code, text, seconds = _run_subprocess("--input", str(vif_folder), "--task", "vif", "--output", str(out))
    _assert_fast_exit_2(code, text, seconds, f"output '{out}' is inside the input location '{vif_folder}'")
    assert sorted(p.relative_to(vif_folder) for p in vif_folder.rglob("*")) == before  # inputs untouched


def test_bad_checkpoint_exits_2_fast_without_ray(vif_folder, tmp_path):
    bogus = tmp_path / "random.safetensors"
    bogus.write_bytes(os.urandom(4096))
    code, text, seconds = _run_subprocess(
        "--input", str(vif_folder), "--task", "vif", "--checkpoint", str(bogus), "--output", str(tmp_path / "o")
    )
    _assert_fast_exit_2(code, text, seconds, f"checkpoint '{bogus}'", "not a safetensors file")


# ------------------------------------------------------------------- other mistakes, main() in this process


def _main(capsys, *args: str) -> tuple[int, str, str]:
    code = _load_job().main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("batch_fuse: error: "), err
    return lines[0]


def test_output_equal_to_a_manifest_pair_folder_is_refused(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    shutil.copytree(SAMPLES, pairs)
    manifest = tmp_path / "manifest.csv"  # the manifest lives elsewhere: its pair URIs name the input folders
    with manifest.open("w", newline="") as f:
        rows = [[p.stem, str(p), str(pairs / "source2" / p.name), "mff"] for p in sorted((pairs / "source1").iterdir())]
        csv.writer(f).writerows([["pair_id", "uri_a", "uri_b", "task"], *rows])
    code, _, err = _main(capsys, "--input", str(manifest), "--output", str(pairs / "source1" / "."))
    assert code == 2
    assert f"is the input location '{pairs / 'source1'}'" in _one_error(err)


def test_task_without_its_folders_says_what_discovery_saw(vif_folder, capsys):
    code, _, err = _main(capsys, "--input", str(vif_folder), "--task", "mff", "--output", str(vif_folder.parent / "o"))
    assert code == 2
    line = _one_error(err)
    for fragment in ("yields no pairs for task mff", "ir/ (4 entries), vi/ (4 entries)", "source1|near|focus1/",
                     "{stem}-A.*", "use --task vif"):  # fmt: skip
        assert fragment in line, line


def test_empty_folder_is_not_success(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _main(capsys, "--input", str(tmp_path / "empty"), "--task", "mff", "--output", str(tmp_path / "o"))
    assert code == 2
    assert "yields no pairs for task mff: it holds 0 file(s) and no sub-folders" in _one_error(err)


def test_checkpoint_of_another_task_is_refused_unless_allowed(vif_folder, mff_checkpoint, tmp_path, capsys):
    args = ["--input", str(vif_folder), "--task", "vif", "--checkpoint", mff_checkpoint, "--output", str(tmp_path)]
    code, _, err = _main(capsys, *args[:-1], str(tmp_path / "o"))
    assert code == 2
    line = _one_error(err)
    assert f"checkpoint '{mff_checkpoint}' was trained for task 'mff' but is given for task 'vif'" in line
    assert "--allow-task-mismatch" in line
    code, out, err = _main(capsys, *args[:-1], str(tmp_path / "o"), "--allow-task-mismatch", "--check")
    assert code == 0, out + err
    assert "allowed by allow_task_mismatch" in out and "[FAIL]" not in out


def test_check_prints_a_checklist_and_starts_nothing(vif_folder, tmp_path, capsys):
    out_dir = tmp_path / "new" / "out"
    code, out, _ = _main(capsys, "--check", "--input", str(vif_folder), "--task", "vif", "--output", str(out_dir))
    assert code == 0
    names = [line.split()[1] for line in out.splitlines() if line.startswith("[")]
    assert names == ["input", "pairs", "output", "output", "output", "output"] and "all checks passed" in out
    assert not (tmp_path / "new").exists()  # the probe and the folders it needed are removed again
    code, out, _ = _main(capsys, "--check", "--input", str(tmp_path / "gone"), "--output", str(out_dir))
    assert code == 2 and "[FAIL] input" in out and "[skip] pairs" in out


def test_missing_buckets_are_named_as_buckets(s3_server, s3_bucket, vif_folder, tmp_path, capsys):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    for path in vif_folder.rglob("*.png"):
        fs.put(str(path), f"{s3_bucket}/in/{path.relative_to(vif_folder)}")
    code, _, err = _main(capsys, "--input", "s3://no-such-bucket-13/in", "--task", "vif", "--output", str(tmp_path))
    assert code == 2
    assert "input bucket 'no-such-bucket-13' does not exist (input s3://no-such-bucket-13/in)" in _one_error(err)
    code, _, err = _main(
        capsys, "--input", f"s3://{s3_bucket}/in", "--task", "vif", "--output", "s3://no-such-out-13/fused"
    )
    assert code == 2
    assert "output bucket 'no-such-out-13' does not exist" in _one_error(err)
    code, _, err = _main(
        capsys, "--input", f"s3://{s3_bucket}/in", "--task", "vif", "--output", f"s3://{s3_bucket}//in/vi/"
    )
    assert code == 2
    assert f"is inside the input location 's3://{s3_bucket}/in'" in _one_error(err)
    code, out, err = _main(
        capsys, "--check", "--input", f"s3://{s3_bucket}/in", "--task", "vif", "--output", f"s3://{s3_bucket}/out"
    )
    assert code == 0, out + err
    fs.invalidate_cache()
    assert not fs.exists(f"{s3_bucket}/out")  # the probe object was removed


def test_config_error_is_one_line_per_problem(tmp_path, capsys):
    code, _, err = _main(capsys, "--input", str(tmp_path), "--set", "fusion.batch_sise=3")
    assert code == 2 and err.startswith("batch_fuse: error: invalid configuration")
    assert "fusion.batch_sise: unknown key; did you mean 'fusion.batch_size'?" in err


# ------------------------------------------------------------------- the console while a job runs (cases 5, 6)


def test_progress_console_in_a_terminal_and_in_a_log():
    import io

    from pipeline.cli.console import ProgressConsole

    tty = io.StringIO()
    bar = ProgressConsole(tty, interactive=True)
    for done in (0, 40, 120):
        bar({"ok": done, "failed": 2, "skipped": 10, "total": 1000, "discovering": False})
        time.sleep(0.05)
    bar.close()
    text = tty.getvalue()
    assert "132/1000" in text and "pair/s" in text and "<" in text  # tqdm: count/total, rate, elapsed<ETA
    assert "failed=2" in text
    log = io.StringIO()
    lines = ProgressConsole(log, interactive=False, interval_s=0.0)
    lines({"ok": 0, "failed": 0, "skipped": 0, "total": 500, "discovering": True})
    lines({"ok": 10, "failed": 1, "skipped": 0, "total": 500, "discovering": False})
    time.sleep(0.2)
    lines({"ok": 60, "failed": 1, "skipped": 0, "total": 500, "discovering": False})
    first, second, third = log.getvalue().splitlines()
    assert first.startswith("progress: 0/500+ pairs, 0 failed")  # total still growing while discovering
    assert "11/500 pairs (2.2%), 1 failed" in second
    assert "61/500 pairs (12.2%)" in third and "pairs/s, ETA " in third


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_job_in_a_log_shows_progress_digest_and_keeps_its_exit_code(ray_session, tmp_path, mff_checkpoint):
    """As a user runs it with output to a log: progress lines, no warning noise, a failure digest, and the rerun
    of the unchanged input exits like the first run (3 of 7 pairs unreadable, budget 0.5: exit 0 both times)."""
    import ray

    data = tmp_path / "in"
    data.mkdir()
    rows = []
    for i, path in enumerate(sorted((SAMPLES / "source1").glob("*.png"))):
        rows.append([f"p{i}", str(path), str(SAMPLES / "source2" / path.name), "mff"])
    (data / "broken.png").write_bytes((SAMPLES / "source1" / "mfiwhu_1.png").read_bytes()[:500])
    rows += [[f"bad{i}", str(data / "broken.png"), rows[0][2], "mff"] for i in range(3)]
    with (data / "pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["pair_id", "uri_a", "uri_b", "task"], *rows])
    address = ray.get_runtime_context().gcs_address
    args = ["--input", str(data / "pairs.csv"), "--output", str(tmp_path / "out"), "--address", address,
            "--task", "mff", "--checkpoint", mff_checkpoint, "--set", "failures.max_fraction=0.5"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_DATA_DISABLE_PROGRESS_BARS", None)
    runs = [
        subprocess.run([sys.executable, "jobs/batch_fuse.py", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=240)
        for _ in range(2)
    ]  # fmt: skip
    first, second = runs
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "progress: " in first.stderr and "pairs" in first.stderr
    for noise in ("Warning", "Traceback", "Total Progress", "INFO"):
        assert noise not in first.stderr + second.stderr, (noise, first.stderr)
    assert "failures by stage and reason (3 pairs):" in first.stdout and "bad0  [read]" in first.stdout
    assert "0 ok, 3 failed, 4 already done" in second.stdout
    assert "input state: 4 ok (earlier runs included), 3 failed" in second.stdout
