"""The evaluation runs (``make_results.py evaluate``): ``jobs/evaluate.py`` on every test set, the general
model, the ablations and the remote-sensing sets."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from pipeline.evaluate.results.methods import (
    ADDITIVE_BASELINES,
    ENVELOPED,
    MODEL_METHODS,
    SPECTRAL_BASELINES,
    VIFB_FUSED,
)
from pipeline.evaluate.results.paths import REPO
from pipeline.evaluate.results.rows import ablation_dir, envelope_dir
from pipeline.evaluate.results.testsets import (
    ABLATIONS,
    ADDITIVE_SETS,
    DATASETS,
    GENERAL_SETS,
    RS_SETS,
    TASK_MODEL,
    heldout_set,
    write_manifest,
)


def run_evaluate(argv: list[str], force: bool = False) -> bool:
    """Run jobs/evaluate.py unless its output is complete (or ``force``); True if it ran."""
    output = Path(argv[argv.index("--output") + 1])
    if (output / "summary.json").is_file() and not force:
        print(f"{output}: done already, skipped (--force reruns)")
        return False
    print("$ python jobs/evaluate.py " + " ".join(argv), flush=True)
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "evaluate.py"), *argv], check=False)
    if done.returncode == 2:
        raise SystemExit(f"jobs/evaluate.py rejected its arguments: {argv}")
    if done.returncode:
        print(f"warning: jobs/evaluate.py exited {done.returncode} (some runs failed: see failures.csv)")
    return True


def run_model_evaluation(argv: list[str], output: Path, methods: list[str], force: bool) -> None:
    """Score a checkpoint (``argv``: input, task, checkpoint, ... flags) into ``output`` with ``methods`` plus the
    three model variants (MODEL_METHODS and ENVELOPED) in one run. An output made before the envelope variant
    existed is kept and gets only that variant, from a second run into :func:`envelope_dir` (read back together
    by :func:`read_evaluation`)."""
    summary = output / "summary.json"
    if summary.is_file() and not force and ENVELOPED not in json.loads(summary.read_text()).get("methods", []):
        run_evaluate(argv + evaluate_flags(output=envelope_dir(output), methods=ENVELOPED, grid_pairs=0))
        return
    run_evaluate(argv + evaluate_flags(output=output, methods=",".join([*MODEL_METHODS, ENVELOPED, *methods])), force)


MULTIPLICATIVE_CODE = ("maugif_core/multiplicative/*.py",)


def multiplicative_fingerprint() -> str:
    """A hash of the multiplicative model's source and of its config schema (fields, defaults), stored with each
    remote-sensing evaluation so that the report can tell whether its MAUGIF rows still describe the current
    code. The additive model's config does not enter it."""
    import hashlib

    from maugif_core.config import MultiplicativeConfig

    digest = hashlib.sha256()
    for pattern in MULTIPLICATIVE_CODE:
        for path in sorted(REPO.glob(pattern)):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    digest.update(json.dumps(MultiplicativeConfig.model_json_schema(), sort_keys=True).encode())
    return digest.hexdigest()[:12]


def evaluate_flags(**options: object) -> list[str]:
    """``--key value`` pairs for jobs/evaluate.py (None skipped; ``_`` in keys becomes ``-``)."""
    return [x for k, v in options.items() if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]


def cmd_evaluate(
    work: Path,
    ckpts: Path,
    rs_dir: Path | None,
    only: list[str] | None,
    limit: int | None,
    rs_steps: int,
    force: bool = False,
) -> None:
    """Run jobs/evaluate.py on every test set (``only``: set keys) into ``work/eval/<set>``."""
    for key, test_set in ADDITIVE_SETS.items():
        if only and key not in only:
            continue
        common = evaluate_flags(input=work / "manifests" / f"{key}.csv", convention=test_set.convention, limit=limit)
        methods = list(ADDITIVE_BASELINES)
        extra: list[str] = []
        if key == "vifb":  # cross-check of our VIFB-convention scoring against the published table
            methods.append(VIFB_FUSED)
            extra = evaluate_flags(
                fused_dir=f"{VIFB_FUSED}={DATASETS / 'VIFB' / 'reference_fused'}",
                fused_pattern=f"{{pair_id}}_{VIFB_FUSED}.jpg",
            )
        checkpoint = ckpts / TASK_MODEL[key] / "final" / "model.safetensors"
        if not checkpoint.is_file():
            print(f"{key}: skipped, {checkpoint} not trained yet (make_results.py train)")
            continue
        run_model_evaluation(
            common + evaluate_flags(task=test_set.task, checkpoint=checkpoint) + extra,
            work / "eval" / key,
            methods,
            force,
        )
        if test_set.task == "mef":  # OpenCV's Mertens: the multi-exposure peer of SPEC §1.3 (needs no model)
            run_evaluate(
                common + evaluate_flags(task="mef", output=work / "eval_peers" / key, methods="mertens", grid_pairs=0),
                force,
            )
        if key in GENERAL_SETS:
            general = ckpts / "general" / "mixed" / "final" / "model.safetensors"
            if not general.is_file():
                print(f"{key}: general model skipped, {general} not trained yet")
                continue
            general_argv = common + evaluate_flags(task="general", checkpoint=general, grid_pairs=0)
            run_model_evaluation(general_argv, work / "eval_general" / key, [], force)
    for name, (base, _overrides) in ABLATIONS.items():
        key = heldout_set(base)
        if only and key not in only and not any(name.startswith(o) for o in only):
            continue
        checkpoint = ckpts / name / "final" / "model.safetensors"
        if not checkpoint.is_file():
            print(f"ablation {name}: skipped, {checkpoint} not trained yet (make_results.py train --only {name})")
            continue
        test_set = ADDITIVE_SETS[key]
        argv = evaluate_flags(input=work / "manifests" / f"{key}.csv", convention=test_set.convention, limit=limit)
        argv += evaluate_flags(task=test_set.task, checkpoint=checkpoint, grid_pairs=0)
        run_model_evaluation(argv, ablation_dir(work, name) / key, [], force)
    if rs_dir is None:
        return
    with (rs_dir / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for key, (_title, task, ids) in RS_SETS.items():
        if only and key not in only:
            continue
        manifest = work / "manifests" / f"{key}.csv"
        write_manifest(manifest, [(r["pair_id"], r["uri_a"], r["uri_b"]) for r in rows if r["pair_id"] in ids], task)
        for protocol in ("wald", "full"):
            if protocol == "full" and key == "paris_hs_ms":
                continue  # one grid: no full-resolution protocol
            output = work / "eval" / f"{key}_{protocol}"
            code = multiplicative_fingerprint()
            if run_evaluate(
                evaluate_flags(input=manifest, task=task, protocol=protocol, output=output)
                + evaluate_flags(methods=",".join(["maugif", *SPECTRAL_BASELINES]), limit=limit)
                + ["--set", f"multiplicative.steps={rs_steps}", "--set", "same_grid_ratio=3"],
                force,
            ):
                (output / "code.json").write_text(json.dumps({"multiplicative_fingerprint": code}))
