"""End to end: the real pipeline under `dvc repro` in a temporary git repo, on a copy of the
shared offline OpenML cache. Proves partial reruns, `dvc exp run`, and the CLI on real outputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, offline_env

pytestmark = pytest.mark.slow

STAGES = {"fetch", "split", "preprocess", "train", "evaluate", "export", "baselines", "compare",
          "cv", "tune"}  # fmt: skip
DATASETS = ("adult", "titanic", "kr-vs-kp", "cpu")
PER_DATASET = ("fetch", "split", "preprocess", "train", "evaluate", "export", "baselines")
TABULAR = {f"tabular-{s}@{d}" for s in PER_DATASET for d in DATASETS} | {"summary"}

# the real pipeline with smaller numbers, so the whole file runs in a few minutes on 2 cores
SMALL = {
    "train": {"module": "mlp", "module_kwargs": {"hidden_sizes": [64]}, "max_epochs": 2,
              "lr_schedule": None, "patience": None},
    "baselines": {"logistic_regression": {"max_iter": 30}, "random_forest": {"n_estimators": 10},
                  "hist_gradient_boosting": {"max_iter": 5}},
    "tabular": {"train": {"max_epochs": 2}, "datasets": {"cpu": {"train": {"max_epochs": 3}}},
                "baselines": {"random_forest": {"n_estimators": 10},
                              "hist_gradient_boosting": {"max_iter": 5}}},
    "cv": {"folds": 3, "max_rows": 300, "max_epochs": 1},
    "tune": {"max_rows": 300},
}  # fmt: skip


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "module_kwargs":
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def repro(repo: Path, env: dict) -> set[str]:
    """Run `dvc repro`; return the names of the stages that actually ran."""
    out = run(["dvc", "repro"], repo, env).stdout
    return set(re.findall(r"Running stage '([^']+)'", out))


def set_params(repo: Path, **changes) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = params
        for part in parents:
            node = node[part]
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("e2e")
    env = offline_env(tmp / "openml-cache")
    repo = copy_project(tmp / "repo")
    params = _merge(yaml.safe_load((repo / "params.yaml").read_text()), SMALL)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]
    run(["git", "init", "-q"], repo, env)
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "init"], repo, env)
    return repo, env


def commit(repo: Path, env: dict, message: str) -> None:
    git = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", message], repo, env)


def test_full_run_then_partial_reruns(pipeline_repo):
    repo, env = pipeline_repo
    assert repro(repo, env) == STAGES | TABULAR
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(metrics) >= {"accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                            "f1_macro", "roc_auc_ovr", "log_loss"}  # fmt: skip
    assert metrics["accuracy"] > 0.85
    baselines = json.loads((repo / "metrics" / "baselines.json").read_text())
    assert set(baselines) == {
        "logistic_regression",
        "random_forest",
        "svc",
        "hist_gradient_boosting",
    }
    provenance = json.loads((repo / "data" / "raw" / "usps.json").read_text())
    assert (provenance["data_id"], provenance["rows"], provenance["columns"]) == (41070, 9298, 257)
    for png in ("confusion", "worst_digits", "learning_curves", "comparison"):
        assert (repo / "reports" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((repo / "metrics" / "roc").glob("class_*.json"))) == 10
    assert (repo / "dvclive" / "plots" / "metrics" / "train_loss.tsv").is_file()

    assert repro(repo, env) == set()  # nothing changed, nothing runs
    commit(repo, env, "first run")

    set_params(repo, train__lr=0.002)
    assert repro(repo, env) == {"train", "evaluate", "export", "compare", "cv"}

    set_params(repo, preprocess__scaler="minmax")
    assert repro(repo, env) == {"preprocess", "train", "evaluate", "export", "baselines",
                                 "compare", "cv", "tune"}  # fmt: skip

    set_params(repo, split__seed=12)
    assert repro(repo, env) == STAGES - {"fetch"}

    out = run(["dvc", "metrics", "show", "--json"], repo, env).stdout
    assert "metrics/eval.json" in out
    commit(repo, env, "second run")


def test_tabular_branch_reruns_only_the_changed_data_set(pipeline_repo):
    repo, env = pipeline_repo
    if not (repo / "metrics" / "tabular_summary.json").is_file():
        repro(repo, env)
    summary = json.loads((repo / "metrics" / "tabular_summary.json").read_text())
    assert set(summary) == set(DATASETS)
    assert set(summary["cpu"]) == {"torch_mlp", "ridge", "random_forest", "hist_gradient_boosting"}
    assert {"mse", "rmse", "mae", "r2"} <= set(summary["cpu"]["torch_mlp"])
    assert "accuracy" in summary["adult"]["torch_mlp"]
    assert (repo / "reports" / "tabular_summary.csv").read_text().startswith("dataset,model,")

    drop = ["name", "ticket", "cabin", "home.dest", "boat", "body", "fare"]
    set_params(repo, tabular__datasets__titanic__drop=drop)
    ran = repro(repo, env)
    assert ran == {f"tabular-{s}@titanic" for s in ("preprocess", "train", "evaluate", "export",
                                                    "baselines")} | {"summary"}  # fmt: skip

    set_params(repo, tabular__datasets__titanic__drop=[*drop, "no_such_column"])
    bad = run(["dvc", "repro"], repo, env, check=False)
    assert bad.returncode != 0 and "no_such_column" in bad.stdout + bad.stderr
    set_params(repo, tabular__datasets__titanic__drop=drop)  # leave the repo valid


def test_exp_run_and_show(pipeline_repo):
    repo, env = pipeline_repo
    if not (repo / "dvc.lock").is_file():
        repro(repo, env)
        commit(repo, env, "run")
    run(["dvc", "exp", "run", "-S", "train.lr=0.004", "--name", "lr4"], repo, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(shown)
    assert '"lr4"' in text
    lrs, accuracies = set(), []
    for entry in shown:
        for rev in [entry, *[e for exp in entry.get("experiments") or [] for e in exp["revs"]]]:
            data = rev.get("data") or {}
            p = data.get("params", {}).get("params.yaml", {}).get("data", {})
            m = data.get("metrics", {}).get("metrics/eval.json", {}).get("data", {})
            if p and m:
                lrs.add(p["train"]["lr"])
                accuracies.append(m["accuracy"])
    assert 0.004 in lrs and len(lrs) >= 2  # the baseline and the experiment, each with metrics
    assert all(0 < a <= 1 for a in accuracies)


def test_cli_train_writes_declared_outputs_and_refuses_bad_keys(pipeline_repo):
    repo, env = pipeline_repo
    if not (repo / "data" / "features" / "train.parquet").is_file():
        repro(repo, env)
    for path in ("models/model", "metrics/train.json"):
        target = repo / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(["tandem", "train", "--set", "train.max_epochs=1"], repo, env)
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]
    for kind in ("outs", "metrics", "plots"):
        for entry in declared.get(kind, []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            assert (repo / path).exists(), path
    assert json.loads((repo / "metrics" / "train.json").read_text())["epochs"] == 1

    before = (repo / "metrics" / "train.json").read_bytes()
    bad = run(["tandem", "train", "--set", "train.no_such_key=1"], repo, env, check=False)
    assert bad.returncode != 0
    assert "train.no_such_key" in bad.stderr + bad.stdout
    assert (repo / "metrics" / "train.json").read_bytes() == before  # nothing written
