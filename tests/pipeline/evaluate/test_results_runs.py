"""The results tooling's sets, splits, training commands and evaluation runs (no training, no evaluation run)."""

from __future__ import annotations

import csv
import json
import re

from pipeline.evaluate.results import experiments, schedule, testsets
from pipeline.evaluate.results.methods import ENVELOPED, MODEL_METHODS


def test_every_held_out_model_never_sees_the_set_it_scores():
    for key, test_set in testsets.ADDITIVE_SETS.items():
        model = testsets.TASK_MODEL[key]
        task, train_sets = testsets.MODELS[model]
        assert testsets.heldout_set(model) == key and task == test_set.task
        assert key not in train_sets and train_sets
        assert all(testsets.ADDITIVE_SETS[s].task == task for s in train_sets)
    general_sets = testsets.MODELS["general/mixed"][1]
    assert set(testsets.GENERAL_SETS) == set(testsets.ADDITIVE_SETS) - set(general_sets)
    assert all(model in testsets.MODELS for model in testsets.BUNDLE.values())
    for name, (base, _overrides) in testsets.ABLATIONS.items():
        assert testsets.heldout_set(name) == testsets.heldout_set(base)
        assert testsets.ablation_prefix(name) in ("vif-t0", "vif-t0-long")
    assert testsets.heldout_set("general/mixed") is None


def test_the_set_listers_pair_the_shared_datasets():
    counts = {key: len(s.list_pairs()) for key, s in testsets.ADDITIVE_SETS.items()}
    assert counts["tno"] == 25 and counts["roadscene"] == 50 and counts["vifb"] == 11
    assert counts["mefb_even"] + counts["mefb_odd"] == 50 and counts["mefb_even"] == 25
    pair_id, uri_a, uri_b = testsets.ADDITIVE_SETS["lytro"].list_pairs()[0]
    assert uri_a.endswith(f"{pair_id}-A.jpg") and uri_b.endswith(f"{pair_id}-B.jpg")


def test_manifests_prefix_training_ids_with_their_set(tmp_path, monkeypatch):
    monkeypatch.setattr(testsets, "ADDITIVE_SETS", {k: testsets.ADDITIVE_SETS[k] for k in ("lytro", "mfiwhu")})
    monkeypatch.setattr(testsets, "MODELS", {"mff/heldout-mfiwhu": ("mff", ("lytro",))})
    testsets.cmd_manifests(tmp_path)
    with (tmp_path / "manifests" / "train" / "mff__heldout-mfiwhu.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and all(r["pair_id"].startswith("lytro_lytro-") and r["task"] == "mff" for r in rows)
    with (tmp_path / "manifests" / "mfiwhu.csv").open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(testsets.ADDITIVE_SETS["mfiwhu"].list_pairs())


def test_schedule_gives_every_model_the_same_samples_per_stage():
    assert schedule.Schedule().epochs(20) == (15, 30)  # 80 crops per epoch: 1200 / 80, 2400 / 80
    assert schedule.Schedule().epochs(7) == (43, 86)  # rounded up
    assert schedule.Schedule().epochs(10_000) == (1, 1)  # at least one epoch


def test_train_command_of_an_ablation_carries_its_overrides_and_schedule(tmp_path):
    job = next(j for j in schedule._training_jobs() if j[0] == "vif-t0-long/heldout-tno")
    manifest = tmp_path / "manifests" / "train" / "vif__heldout-tno.csv"
    testsets.write_manifest(manifest, [(f"p{i}", "a", "b") for i in range(20)], "vif")
    command, facts = schedule.train_command(tmp_path, tmp_path / "ckpts", job, schedule.Schedule())
    sets = [command[i + 1] for i, x in enumerate(command) if x == "--set"]
    assert "model.overrides={threshold: 0.0}" in sets and "train.cpus_per_worker=2" in sets
    assert "train.epochs_stage1=15" in sets and "train.epochs_stage2=90" in sets  # 3x stage-2 samples
    assert command[command.index("--output") + 1] == str(tmp_path / "ckpts" / "vif-t0-long" / "heldout-tno")
    assert facts["samples_stage2"] == 7200 and facts["train_sets"] == ["roadscene", "vifb"]


def test_train_record_keeps_the_first_and_last_loss_of_each_stage(tmp_path):
    run = tmp_path / "maugif-train"
    run.mkdir()
    (run / "metrics.csv").write_text("stage,epoch,loss\n1,0,3.0\n1.0,1,2.12345\n2,0,1.5\n2,1,1.25\n")
    record = schedule.write_train_record(tmp_path, ["jobs/train.py", "--input", "a b.csv"], {"pairs": 3}, 12.34)
    assert record["command"] == "python jobs/train.py --input 'a b.csv'"
    assert record["loss"] == {
        "stage1": {"first_epoch_loss": 3.0, "last_epoch_loss": 2.1235},
        "stage2": {"first_epoch_loss": 1.5, "last_epoch_loss": 1.25},
    }
    assert json.loads((tmp_path / "train_record.json").read_text())["seconds"] == 12.3
    assert schedule._last_losses(tmp_path / "missing.csv") == {}


def test_evaluate_flags_and_the_code_fingerprint():
    flags = experiments.evaluate_flags(input="m.csv", fused_dir=None, grid_pairs=0)
    assert flags == ["--input", "m.csv", "--grid-pairs", "0"]
    fingerprint = experiments.multiplicative_fingerprint()
    assert re.fullmatch("[0-9a-f]{12}", fingerprint) and fingerprint == experiments.multiplicative_fingerprint()


def test_model_evaluation_adds_only_the_missing_variant_to_an_older_output(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(experiments, "run_evaluate", lambda argv, force=False: calls.append(argv) or True)
    fresh, old = tmp_path / "eval" / "fresh", tmp_path / "eval" / "old"
    old.mkdir(parents=True)
    (old / "summary.json").write_text(json.dumps({"methods": ["maugif", "maugif:running", "dwt"]}))
    experiments.run_model_evaluation(["--task", "vif"], fresh, ["dwt"], force=False)
    experiments.run_model_evaluation(["--task", "vif"], old, ["dwt"], force=False)
    experiments.run_model_evaluation(["--task", "vif"], old, ["dwt"], force=True)  # --force: the whole run again

    def flag(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag(calls[0], "--output") == str(fresh)
    assert flag(calls[0], "--methods").split(",") == [*MODEL_METHODS, ENVELOPED, "dwt"]
    assert flag(calls[1], "--output") == str(tmp_path / "eval_envelope" / "old")
    assert flag(calls[1], "--methods") == ENVELOPED
    assert flag(calls[2], "--output") == str(old) and flag(calls[2], "--methods").endswith(",dwt")


def test_a_finished_evaluation_is_not_rerun(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    assert experiments.run_evaluate(["--output", str(tmp_path)]) is False
    assert "done already, skipped" in capsys.readouterr().out
