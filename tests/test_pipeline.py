"""End to end: the real pipeline under `dvc repro` in a temporary git repo, on a copy of the
shared offline OpenML cache, with the default registry's USPS entry (an OpenML image set) plus
one entry of each other source kind, added by params alone: a CSV tracked with `dvc add`, an image
folder and a sklearn loader (a regression set). Proves partial reruns per entry, `dvc exp run`,
plots, push/pull and the model registry, and the CLI and /predict on the real outputs. The other
default entries are OpenML tables that take the same path as USPS's fetch and the CSV's tabular
stages; leaving them out keeps the file to a few minutes on 2 cores (every stage costs seconds of
start-up)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import copy_project, offline_env

pytestmark = pytest.mark.slow

PER_ENTRY = ("fetch", "split", "preprocess", "train", "evaluate", "export", "baselines")
DEFAULT = ("usps",)  # kept from the default registry
ADDED = ("mycsv", "digits", "diabetes")
ENTRIES = (*DEFAULT, *ADDED)
ALL_STAGES = {f"{s}@{d}" for s in PER_ENTRY for d in ENTRIES} | {"summary", "cv", "tune"}

# the real pipeline with smaller numbers, so the whole file runs in a few minutes on 2 cores
SMALL = {
    "train": {"module": "mlp", "module_kwargs": {"mlp": {"hidden_sizes": [64]}}, "max_epochs": 2,
              "min_steps": 0, "lr_schedule": None, "patience": None},
    "baselines": {"linear": {"max_iter": 30}, "random_forest": {"n_estimators": 10},
                  "hist_gradient_boosting": {"max_iter": 5}},
    "cv": {"folds": 3, "max_rows": 300, "max_epochs": 1},
    "tune": {"max_rows": 300},
}  # fmt: skip
# the entries a user adds: params alone, plus the data under data/sources/
NO_OVERRIDES = {s: {} for s in ("split", "preprocess", "train", "evaluate", "baselines")}
NEW_ENTRIES = {
    "mycsv": {**NO_OVERRIDES, "data": {
        "source": "file", "path": "data/sources/file/mycsv.csv", "target": "label",
        "task": "classification", "drop": ["id"]}},
    "digits": {**NO_OVERRIDES, "data": {
        "source": "images", "path": "data/sources/images/digits", "target": "digit",
        "task": "classification", "modality": "image", "image_shape": [8, 8], "channels": 1},
        "train": {"module": "auto"}},  # the CNN, on 8x8 images
    "diabetes": {**NO_OVERRIDES, "data": {
        "source": "sklearn", "name": "load_diabetes", "target": "target", "task": "regression"}},
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
            node = node.setdefault(part, {})
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def commit(repo: Path, env: dict, message: str) -> None:
    """Commit everything, if anything changed (a run restored from the run-cache may not)."""
    git = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]
    run([*git, "add", "-A"], repo, env)
    if run(["git", "status", "--porcelain"], repo, env).stdout.strip():
        run([*git, "commit", "-qm", message], repo, env)


def write_sources(repo: Path) -> None:
    """A CSV with numbers, a category and an id column; PNGs of sklearn's 8x8 digits, a third of
    them saved at 16x16 (mixed sizes are resized to image_shape)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.RandomState(0)
    n = 240
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x1 + 0.5 * x2 + (colour == "red") > 0.3, "yes", "no")
    frame = pd.DataFrame({"id": np.arange(n), "x1": x1.round(4), "x2": x2.round(4),
                          "colour": colour, "label": label})  # fmt: skip
    frame.to_csv(repo / "data/sources/file/mycsv.csv", index=False)
    digits = load_digits()
    for i in range(400):
        folder = repo / "data/sources/images/digits" / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L")
        if i % 3 == 0:
            image = image.resize((16, 16), Image.Resampling.NEAREST)
        image.save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("e2e")
    env = offline_env(tmp / "openml-cache")
    repo = copy_project(tmp / "repo")
    params = _merge(yaml.safe_load((repo / "params.yaml").read_text()), SMALL)
    params["datasets"] = {k: params["datasets"][k] for k in DEFAULT} | NEW_ENTRIES
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]
    run(["git", "init", "-q"], repo, env)
    write_sources(repo)
    run(
        ["dvc", "add", "-q", "data/sources/file/mycsv.csv", "data/sources/images/digits"], repo, env
    )
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "init"], repo, env)
    return repo, env


def ensure_run(repo: Path, env: dict) -> None:
    if not (repo / "dvc.lock").is_file():
        repro(repo, env)
        commit(repo, env, "run")


def test_full_run_then_partial_reruns(pipeline_repo):
    repo, env = pipeline_repo
    assert repro(repo, env) == ALL_STAGES
    metrics = json.loads((repo / "metrics/usps/eval.json").read_text())
    assert set(metrics) >= {"accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                            "f1_macro", "roc_auc_ovr", "log_loss"}  # fmt: skip
    assert metrics["accuracy"] > 0.85
    baselines = json.loads((repo / "metrics/usps/baselines.json").read_text())
    assert set(baselines) == {"logistic_regression", "random_forest", "svc",
                              "hist_gradient_boosting"}  # fmt: skip
    diabetes = json.loads((repo / "metrics/diabetes/baselines.json").read_text())
    assert set(diabetes) == {"ridge", "random_forest", "hist_gradient_boosting"}
    assert {"mse", "rmse", "mae", "r2"} <= set(
        json.loads((repo / "metrics/diabetes/eval.json").read_text())
    )
    provenance = json.loads((repo / "data/usps/raw.json").read_text())
    assert (provenance["data_id"], provenance["rows"], provenance["columns"]) == (41070, 9298, 257)
    for name in ("confusion", "worst", "learning_curves"):
        assert (repo / f"reports/usps/{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (repo / "reports/summary.png").read_bytes()[:4] == b"\x89PNG"
    summary = (repo / "reports/summary.csv").read_text()
    assert summary.startswith("dataset,model,")
    assert {line.split(",")[0] for line in summary.splitlines()[1:]} == set(ENTRIES)
    predictions = json.loads((repo / "plots/predictions/usps.json").read_text())
    assert len(predictions) == 2325 and set(predictions[0]) == {"actual", "predicted"}
    assert (repo / "dvclive/usps/plots/metrics/train_loss.tsv").is_file()

    assert repro(repo, env) == set()  # nothing changed, nothing runs
    commit(repo, env, "first run")

    # an entry's own override reruns that entry's training (and what reads it), nothing else
    set_params(repo, datasets__usps__train={"lr": 0.002})
    assert repro(repo, env) == {"train@usps", "evaluate@usps", "export@usps", "cv", "summary"}

    set_params(repo, datasets__diabetes__preprocess={"scaler": "minmax"})
    assert repro(repo, env) == {f"{s}@diabetes" for s in PER_ENTRY[2:]} | {"summary"}

    # an entry's data (here its drop list) is read from fetch on: all of that entry reruns
    set_params(repo, datasets__mycsv__data__drop=["id", "x2"])
    assert repro(repo, env) == {f"{s}@mycsv" for s in PER_ENTRY} | {"summary"}
    set_params(repo, datasets__mycsv__data__drop=["no_such_column"])
    bad = run(["dvc", "repro"], repo, env, check=False)
    assert bad.returncode != 0 and "no_such_column" in bad.stdout + bad.stderr
    run(["git", "checkout", "--", "params.yaml"], repo, env)
    repro(repo, env)
    commit(repo, env, "second run")


def test_every_source_kind_gets_metrics_plots_and_a_model_predict_accepts(pipeline_repo):
    from fastapi.testclient import TestClient

    from tandem.serve import create_app

    repo, env = pipeline_repo
    ensure_run(repo, env)
    for name in ADDED:
        scores = json.loads((repo / f"metrics/{name}/eval.json").read_text())
        if name == "diabetes":  # regression: two epochs of a small MLP score, not more
            assert {"mse", "rmse", "mae", "r2"} <= set(scores), scores
        else:
            assert scores["accuracy"] > 0.6, (name, scores)
            assert (repo / f"reports/{name}/confusion.png").is_file()
        assert (repo / f"reports/{name}/learning_curves.png").is_file()
        assert json.loads((repo / f"plots/predictions/{name}.json").read_text())
        assert json.loads((repo / f"metrics/{name}/export.json").read_text())["passed"]
    provenance = json.loads((repo / "data/digits/raw.json").read_text())
    assert provenance["source"] == "images" and provenance["rows"] == 400
    assert provenance["image_shape"] == [1, 8, 8]
    assert json.loads((repo / "data/mycsv/raw.json").read_text())["file_sha256"]
    config = json.loads((repo / "models/digits/model/config.json").read_text())["params"]
    assert config["module"] == "cnn" and config["module__image_shape"] == [8, 8]
    assert config["augment__shape"] == [1, 8, 8]  # recorded for TTA and predict, any module

    # tandem predict: CSV rows (the id column is ignored: dropped in training) and PNG files
    rows = repo / "rows.csv"
    pd.read_csv(repo / "data/sources/file/mycsv.csv").head(5).drop(columns="label").to_csv(
        rows, index=False
    )
    out = run(["tandem", "predict", str(rows), "--dataset", "mycsv"], repo, env).stdout
    assert out.splitlines()[0].startswith("id,prediction,proba_no,proba_yes")
    assert len(out.splitlines()) == 6
    folder = repo / "data/sources/images/digits/7"
    out = run(["tandem", "predict", str(folder), "--dataset", "digits"], repo, env).stdout
    lines = out.splitlines()[1:]
    assert len(lines) == len(list(folder.glob("*.png")))
    assert sum(line.split(",")[1] == "7" for line in lines) >= len(lines) // 2

    # /predict of the served model, for the CSV entry's rows and the image entry's PNGs
    client = TestClient(create_app(repo / "models/mycsv", backend="onnx"))
    records = pd.read_csv(rows).drop(columns="id").to_dict("records")
    answer = client.post("/predict", json={"rows": records})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 5
    client = TestClient(create_app(repo / "models/digits", backend="torch"))
    png = [base64.b64encode(p.read_bytes()).decode() for p in sorted(folder.glob("*.png"))[:3]]
    answer = client.post("/predict", json={"images": png})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3

    # the sklearn entry (a regressor): CSV rows to tandem predict, JSON rows to /predict
    from sklearn.datasets import load_diabetes

    table = load_diabetes(as_frame=True).frame.drop(columns="target").head(4)
    table.to_csv(repo / "diabetes_rows.csv", index=False)
    out = run(["tandem", "predict", "diabetes_rows.csv", "--dataset", "diabetes"], repo, env).stdout
    assert len(out.splitlines()) == 5 and "prediction" in out.splitlines()[0]
    client = TestClient(create_app(repo / "models/diabetes", backend="onnx"))
    answer = client.post("/predict", json={"rows": table.to_dict("records")})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 4


def test_editing_one_csv_row_reruns_only_that_entry(pipeline_repo):
    repo, env = pipeline_repo
    ensure_run(repo, env)
    assert repro(repo, env) == set()
    path = repo / "data/sources/file/mycsv.csv"
    frame = pd.read_csv(path)
    frame.loc[3, "x1"] = 9.5
    frame.to_csv(path, index=False)
    assert repro(repo, env) == {f"{s}@mycsv" for s in PER_ENTRY} | {"summary"}
    assert json.loads((repo / "data/mycsv/raw.json").read_text())["rows"] == 240
    commit(repo, env, "edited one row")


def test_exp_run_and_show(pipeline_repo):
    repo, env = pipeline_repo
    ensure_run(repo, env)
    # one entry's override: only that entry's training reruns in the experiment
    run(["dvc", "exp", "run", "-S", "++datasets.usps.train.lr=0.004", "--name", "lr4"], repo, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(shown)
    assert '"lr4"' in text
    lrs, accuracies = set(), []
    for entry in shown:
        for rev in [entry, *[e for exp in entry.get("experiments") or [] for e in exp["revs"]]]:
            data = rev.get("data") or {}
            p = data.get("params", {}).get("params.yaml", {}).get("data", {})
            m = data.get("metrics", {}).get("metrics/usps/eval.json", {}).get("data", {})
            if p and m:
                lrs.add(p["datasets"]["usps"]["train"].get("lr", p["train"]["lr"]))
                accuracies.append(m["accuracy"])
    assert 0.004 in lrs and len(lrs) >= 2  # the baseline and the experiment, each with metrics
    assert all(0 < a <= 1 for a in accuracies)


def test_cli_train_writes_declared_outputs_and_refuses_bad_keys(pipeline_repo):
    repo, env = pipeline_repo
    ensure_run(repo, env)
    for path in ("models/usps/model", "metrics/usps/train.json"):
        target = repo / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(["tandem", "train", "--dataset", "usps", "--set", "train.max_epochs=1"], repo, env)
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["do"]
    for kind in ("outs", "metrics", "plots"):
        for entry in declared.get(kind, []):
            path = (entry if isinstance(entry, str) else next(iter(entry))).replace(
                "${key}", "usps"
            )
            assert (repo / path).exists(), path
    assert json.loads((repo / "metrics/usps/train.json").read_text())["epochs"] == 1

    before = (repo / "metrics/usps/train.json").read_bytes()
    bad = run(["tandem", "train", "--dataset", "usps", "--set", "train.no_such_key=1"], repo, env,
              check=False)  # fmt: skip
    assert bad.returncode != 0
    assert "train.no_such_key" in bad.stderr + bad.stdout
    assert (repo / "metrics/usps/train.json").read_bytes() == before  # nothing written


def test_push_then_a_fresh_clone_pulls_everything_and_retrains_nothing(pipeline_repo):
    """The default remote (a folder beside the repo, .dvc/config) carries outputs and run-cache:
    a teammate's clone pulls them, finds nothing to rerun, predicts, gets a registered model,
    and gets an experiment's results by setting its params, without training."""
    repo, env = pipeline_repo
    ensure_run(repo, env)
    git = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]
    # an experiment with its own learning rate, then the param reverted: the run-cache has both
    set_params(repo, datasets__usps__train={"lr": 0.003})
    assert "train@usps" in repro(repo, env)
    run(["git", "checkout", "--", "params.yaml"], repo, env)
    assert "train@usps" not in repro(repo, env)  # restored from the local run-cache
    commit(repo, env, "before push")
    run([*git, "tag", "-a", "usps-model@v1.0.0", "-m", "usps digits, first release"], repo, env)
    run(["dvc", "push", "--run-cache"], repo, env)
    remote = repo.parent / "tandem-remote"  # .dvc/config: ../../tandem-remote from .dvc/
    assert (remote / "files" / "md5").is_dir() and (remote / "runs").is_dir()

    clone = repo.parent / "clone"  # beside the repo, so the relative remote is the same folder
    run(["git", "clone", "-q", str(repo), str(clone)], repo.parent, env)
    assert not (clone / "models/usps/model").exists()
    run(["dvc", "pull", "--run-cache"], clone, env)
    assert json.loads(run(["dvc", "status", "--json"], clone, env).stdout) == {}
    assert repro(clone, env) == set()
    rows = clone / "rows.csv"
    pd.read_csv(clone / "data/sources/file/mycsv.csv").head(3).drop(columns="label").to_csv(
        rows, index=False
    )
    out = run(["tandem", "predict", str(rows), "--dataset", "mycsv"], clone, env).stdout
    assert len(out.splitlines()) == 4

    # the model registry: artifacts in dvc.yaml, a version tag, `dvc artifacts get`
    run(["dvc", "artifacts", "get", ".", "usps-model", "-o", "registry/usps"], clone, env)
    from tandem import TorchClassifier

    assert TorchClassifier.load(clone / "registry/usps").classes_.size == 10

    # the experiment's params in the clone: its training is restored from the pulled run-cache,
    # not rerun (a stage whose outputs are all metrics kept in git, like cv, may recompute them:
    # DVC pushes only cached outputs with the run-cache)
    set_params(clone, datasets__usps__train={"lr": 0.003})
    log = run(["dvc", "repro"], clone, env).stdout
    assert "Running stage 'train@usps'" not in log, log
    assert "Stage 'train@usps' is cached - skipping run, checking out outputs" in log, log
    assert "Running stage 'export@usps'" not in log, log


def test_plots_are_one_chart_per_question_and_none_renders_blank(pipeline_repo):
    """`dvc plots show --json`: at most 4 interactive charts per entry (learning curves,
    validation score, predictions, curves), the summary PNG as the only image, and every chart
    rendered offline (vl-convert) shows coloured marks: none is blank."""
    import io as bytes_io

    import vl_convert
    from PIL import Image

    repo, env = pipeline_repo
    ensure_run(repo, env)
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo, env).stdout)
    assert not shown.get("errors"), shown.get("errors")
    plots = shown["data"]
    vega = {k: v[0]["content"] for k, v in plots.items() if v and v[0]["type"] == "vega"}
    images = sorted(k for k, v in plots.items() if v and v[0]["type"] == "image")
    assert images == ["reports/summary.png"]
    charts = {name: sorted(k for k in vega if k.endswith(f"/{name}.json")) for name in ENTRIES}
    assert set(vega) == {k for keys in charts.values() for k in keys}  # nothing else, no per class
    for name, keys in charts.items():
        assert [k.split("/")[1] for k in keys] == [
            "curves", "learning", "predictions", "validation"
        ], (name, keys)  # fmt: skip
    for key, spec in vega.items():
        png = Image.open(bytes_io.BytesIO(vl_convert.vegalite_to_png(spec))).convert("RGB")
        pixels = np.asarray(png).astype(int)
        coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 40).mean()
        assert coloured > 0.001, f"{key} renders blank ({coloured:.4f} coloured)"


def test_metrics_are_the_scores_alone(pipeline_repo):
    """`dvc metrics show`: per entry the torch model's scores (eval.json) and the baselines'
    (baselines.json), plus the searches'; training records and the export's parity check are
    outputs, not metrics, and the summary's table is no metric either."""
    repo, env = pipeline_repo
    ensure_run(repo, env)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    files = next(iter(shown.values()))["data"]
    expected = {f"metrics/{n}/{k}.json" for n in ENTRIES for k in ("eval", "baselines")}
    assert set(files) == expected | {"search/cv.json", "search/tune/best.json"}

    baselines = {"logistic_regression", "ridge", "random_forest", "hist_gradient_boosting", "svc"}
    for name in ENTRIES:  # the torch model's scores live in eval.json alone
        assert set(files[f"metrics/{name}/baselines.json"]["data"]) <= baselines
        assert all(
            not isinstance(v, dict) for v in files[f"metrics/{name}/eval.json"]["data"].values()
        )
