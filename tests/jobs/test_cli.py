"""The ``maugif`` console command: sub-commands, help generated from the config models, ``--print-config``, and
the ``[project.scripts]`` entry that installs it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_console_script_entry_resolves_to_the_dispatcher():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["maugif"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def test_top_level_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fuse", "train", "evaluate", "check", "methods"):
        assert f"  {command}" in out
    assert main(["fuze"]) == 2
    assert "unknown command 'fuze': expected one of fuse, train, evaluate, check, methods" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "key", "description"),
    [
        ("fuse", "fusion.num_actors", "Fusion actors"),
        ("train", "train.lr", None),
        ("evaluate", "convention", "Additive metric convention"),
    ],
)
def test_help_lists_config_keys_with_their_descriptions(capsys, command, key, description):
    from pipeline.cli.common import field_description

    models = {
        "fuse": "pipeline.config.fuse_config:FuseJobConfig",
        "train": "pipeline.config.train_config:TrainJobConfig",
        "evaluate": "pipeline.config.eval_config:EvalJobConfig",
    }
    module, _, name = models[command].partition(":")
    expected = field_description(getattr(importlib.import_module(module), name), key)
    assert expected and (description is None or expected.startswith(description))
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped
    assert f"{key} = " in out and " ".join(expected.split()) in out


def test_method_flag_help_comes_from_the_field(capsys):
    with pytest.raises(SystemExit):
        main(["fuse", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--method NAME Fusion method: maugif (default), a classical baseline" in out and "(sets method)" in out


def test_print_config_prints_the_resolved_yaml(capsys, tmp_path):
    argv = ["fuse", "--input", "pairs/", "--output", str(tmp_path), "--method", "laplacian",
            "--set", "fusion.batch_size=4", "--print-config"]  # fmt: skip
    assert main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["method"] == "laplacian" and config["fusion"]["batch_size"] == 4
    assert config["output"]["uri"] == str(tmp_path) and config["input"] == "pairs/"
    assert main(["train", "--set", "train.lr=0.001", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 0.001
    argv = ["evaluate", "--input", "p.csv", "--task", "mff", "--output", str(tmp_path), "--method", "dwt",
            "--print-config"]  # fmt: skip
    assert main(argv) == 0
    assert yaml.safe_load(capsys.readouterr().out)["method"] == "dwt"


def test_check_runs_the_preflight_and_methods_lists_them(capsys, tmp_path):
    assert main(["check", "fuse", "--input", str(REPO / "samples" / "manifest.csv"), "--output", str(tmp_path)]) == 0
    assert "pre-flight: all checks passed" in capsys.readouterr().out
    assert main(["check", "deploy"]) == 2
    assert "expected a job to check (fuse, train, evaluate), got 'deploy'" in capsys.readouterr().err
    assert main(["methods"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["laplacian"][1:4] == ["additive", "halo", "64"] and lines["maugif"][1] == "any"


def test_jobs_wrapper_and_module_run_the_same_command(tmp_path):
    """``python jobs/batch_fuse.py`` and ``python -m pipeline.cli.main fuse`` print the same config."""
    args = ["--input", "pairs/", "--output", str(tmp_path), "--print-config"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    wrapper = subprocess.run([sys.executable, "jobs/batch_fuse.py", *args], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    module = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "fuse", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert wrapper.returncode == module.returncode == 0, wrapper.stderr + module.stderr
    assert wrapper.stdout == module.stdout and "method: maugif" in wrapper.stdout


@pytest.mark.parametrize("command", ["fuse", "evaluate"])
def test_unknown_method_exits_2_listing_the_methods(capsys, tmp_path, command):
    argv = [command, "--input", str(REPO / "samples" / "manifest.csv"), "--output", str(tmp_path / "o"),
            "--task", "mff", "--method", "laplace"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"maugif {command}: error: invalid configuration" in err
    assert "unknown method 'laplace': expected one of maugif, average, maxabs, dwt, laplacian" in err
