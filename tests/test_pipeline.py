"""End to end: the real pipeline under `dvc repro` (tests/e2e.py), with the default registry's
USPS entry (an OpenML image set) plus one entry of each other source kind, added by params alone: a
CSV tracked with `dvc add`, an image folder and a sklearn loader (a regression set). Proves partial
reruns per entry, `dvc exp run`, plots, push/pull and the model registry, and the CLI and /predict
on the real outputs. The other default entries are OpenML tables that take the same path as USPS's
fetch and the CSV's tabular stages; leaving them out keeps a full run to a few minutes on 2 cores
(every stage costs seconds of start-up). The first full run is the session's ``pipeline_run``.

Reproducibility and crash safety, on a second run from a clean copy:

- it gives the same dvc.lock hashes, for every output of the entries it runs, as the first run,
  even though it was SIGKILLed in the middle of training and resumed from its checkpoint;
- a stage SIGKILLed while it writes its outputs leaves every previous output whole (or absent),
  never truncated, and the next `dvc repro` completes;
- reverting a param after an experiment restores the outputs from DVC's run-cache, no retraining.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import offline_env
from e2e import (
    ADDED,
    ALL_STAGES,
    CHAIN,
    ENTRIES,
    GIT,
    PER_ENTRY,
    commit,
    make_project,
    out_hashes,
    repro,
    run,
    set_params,
)

# one file, so that one xdist worker (--dist loadfile) runs every test of the session's pipeline run
pytestmark = pytest.mark.slow


def test_full_run_then_partial_reruns(pipeline_run):
    repo, env = pipeline_run.repo, pipeline_run.env
    assert pipeline_run.first_stages == ALL_STAGES
    metrics = json.loads((repo / "metrics/usps/eval.json").read_text())
    served = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "log_loss"}
    assert set(metrics) == served | {"accuracy_plain"}  # TTA is served; the network alone beside
    assert metrics["accuracy"] > 0.85
    baselines = json.loads((repo / "metrics/usps/baselines.json").read_text())
    assert set(baselines) == {"logistic_regression", "random_forest", "svc",
                              "hist_gradient_boosting"}  # fmt: skip
    diabetes = json.loads((repo / "metrics/diabetes/baselines.json").read_text())
    assert set(diabetes) == {"ridge", "random_forest", "hist_gradient_boosting"}
    assert set(json.loads((repo / "metrics/diabetes/eval.json").read_text())) == {
        "rmse",
        "mae",
        "r2",
    }
    provenance = json.loads((repo / "data/usps/raw.json").read_text())
    assert (provenance["data_id"], provenance["rows"], provenance["columns"]) == (41070, 9298, 257)
    for name in ("confusion", "worst", "learning_curves"):
        assert (repo / f"reports/usps/{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (repo / "reports/summary.png").read_bytes()[:4] == b"\x89PNG"
    summary = (repo / "reports/summary.csv").read_text()
    assert summary.startswith("dataset,model,")
    assert {line.split(",")[0] for line in summary.splitlines()[1:]} == set(ENTRIES)
    assert "\nusps,torch ensemble," in summary  # usps's seed ensemble beside its single model
    assert (repo / "models/usps/ensemble/member-1/config.json").is_file()
    predictions = json.loads((repo / "plots/predictions/usps.json").read_text())
    assert len(predictions) == 2325 and set(predictions[0]) == {"actual", "predicted"}
    assert (repo / "dvclive/usps/plots/metrics/train_loss.tsv").is_file()

    assert repro(repo, env) == set()  # nothing changed, nothing runs

    # an entry's own override reruns that entry's training (and what reads it), nothing else
    set_params(repo, datasets__usps__train={"lr": 0.002})
    assert repro(repo, env) == {
        "resolve@usps", "train@usps", "evaluate@usps", "export@usps", "ensemble@usps", "cv",
        "summary",
    }  # fmt: skip

    set_params(repo, datasets__diabetes__preprocess={"scaler": "minmax"})
    assert repro(repo, env) == {f"{s}@diabetes" for s in ("resolve", *CHAIN[2:])} | {"summary"}

    # a bad entry stops the run at that entry's fetch (editing its data reruns all of the entry:
    # test_editing_one_csv_row_reruns_only_that_entry)
    set_params(repo, datasets__mycsv__data__drop=["no_such_column"])
    bad = run(["dvc", "repro"], repo, env, check=False)
    assert bad.returncode != 0 and "no_such_column" in bad.stdout + bad.stderr
    run(["git", "checkout", "--", "params.yaml"], repo, env)
    repro(repo, env)
    commit(repo, env, "second run")


def test_every_source_kind_gets_metrics_plots_and_a_model_predict_accepts(pipeline_run):
    from fastapi.testclient import TestClient

    from tandem.serve import create_app

    repo, env = pipeline_run.repo, pipeline_run.env
    for name in ADDED:
        scores = json.loads((repo / f"metrics/{name}/eval.json").read_text())
        if name == "diabetes":  # regression: two epochs of a small MLP score, not more
            assert {"rmse", "mae", "r2"} == set(scores), scores
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


def test_editing_one_csv_row_reruns_only_that_entry(pipeline_run):
    repo, env = pipeline_run.repo, pipeline_run.env
    assert repro(repo, env) == set()
    path = repo / "data/sources/file/mycsv.csv"
    frame = pd.read_csv(path)
    frame.loc[3, "x1"] = 9.5
    frame.to_csv(path, index=False)
    assert repro(repo, env) == {f"{s}@mycsv" for s in CHAIN} | {"summary"}
    assert json.loads((repo / "data/mycsv/raw.json").read_text())["rows"] == 240
    commit(repo, env, "edited one row")


def test_a_single_key_reruns_only_the_stages_it_reaches(pipeline_run):
    """Single-key edits on the completed run: once the recipes are resolved (`dvc repro
    resolve`, seconds), `dvc status` marks exactly the stages whose effective settings changed."""
    repo, env = pipeline_run.repo, pipeline_run.env
    assert repro(repo, env) == set()

    def marked(**edit) -> set[str]:
        set_params(repo, **edit)
        run(["dvc", "repro", "resolve"], repo, env)
        status = json.loads(run(["dvc", "status", "--json"], repo, env).stdout)
        run(["git", "checkout", "--", "params.yaml", "recipes", "dvc.lock"], repo, env)
        return {name.split(":")[-1] for name in status} - {f"resolve@{n}" for n in ENTRIES}

    # a shared key that USPS overrides (its own lr): its training, ensemble and cv stay clean
    assert marked(train__lr=0.002) == {f"train@{n}" for n in ADDED}
    # a label name: the figures, what is served (ONNX and serve name the classes) and the summary
    # (it reads the registry), never training
    renamed = marked(datasets__usps__label_names__1="zero")
    assert renamed == {"evaluate@usps", "export@usps", "summary"}
    # image entries only: the worst-images figure, and the SVM baseline
    assert marked(evaluate__n_worst=5) == {"evaluate@usps", "evaluate@digits"}
    assert marked(baselines__svc__C=3.0) == {"baselines@usps", "baselines@digits"}
    # a machine setting is no param: nothing to rerun
    quiet = run(["dvc", "status"], repo, {**env, "TANDEM_N_JOBS": "2", "TANDEM_BACKEND": "dask"})
    assert "up to date" in quiet.stdout
    assert repro(repo, env) == set()

    # an experiment on one shared training key: a narrow comparison naming the entries it reached
    run(["dvc", "exp", "run", "-n", "shared-lr", "-S", "train.lr=0.002"], repo, env)
    table = run(["dvc", "exp", "show", "--only-changed", "--csv"], repo, env).stdout
    columns = table.splitlines()[0].split(",")
    assert len(columns) <= 40, columns
    assert {f"recipes/{n}/train.yaml:lr" for n in ADDED} <= set(columns), columns
    assert "recipes/usps/train.yaml:lr" not in columns
    run(["git", "checkout", "--", "."], repo, env)  # back to the committed run
    run(["dvc", "checkout", "-q"], repo, env)
    assert repro(repo, env) == set()


def test_exp_run_and_show(pipeline_run):
    repo, env = pipeline_run.repo, pipeline_run.env
    # one entry's override (test_full_run's: its training may come from the run-cache)
    run(["dvc", "exp", "run", "-S", "++datasets.usps.train.lr=0.002", "--name", "lr2"], repo, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(shown)
    assert '"lr2"' in text
    lrs, accuracies = set(), []
    for entry in shown:
        for rev in [entry, *[e for exp in entry.get("experiments") or [] for e in exp["revs"]]]:
            data = rev.get("data") or {}
            p = data.get("params", {}).get("params.yaml", {}).get("data", {})
            m = data.get("metrics", {}).get("metrics/usps/eval.json", {}).get("data", {})
            if p and m:
                lrs.add(p["datasets"]["usps"]["train"].get("lr", p["train"]["lr"]))
                accuracies.append(m["accuracy"])
    assert 0.002 in lrs and len(lrs) >= 2  # the baseline and the experiment, each with metrics
    assert all(0 < a <= 1 for a in accuracies)


def test_cli_train_writes_declared_outputs_and_refuses_bad_keys(pipeline_run):
    repo, env = pipeline_run.repo, pipeline_run.env
    for path in ("models/usps/model", "metrics/usps/train.json"):
        target = repo / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(["tandem", "train", "--dataset", "usps", "--set", "datasets.usps.train.max_epochs=1"],
        repo, env)  # fmt: skip
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


def test_push_then_a_fresh_clone_pulls_everything_and_retrains_nothing(pipeline_run):
    """The team's way: a shared git remote (a bare repo here) and the default DVC remote (a
    folder beside the repo, .dvc/config). `dvc push --run-cache` carries the outputs and the
    run-cache, `dvc exp push` an experiment with its outputs; a teammate's clone pulls them,
    finds nothing to rerun, predicts, gets a registered model, and gets the experiment's results
    by setting its params, without training."""
    repo, env = pipeline_run.repo, pipeline_run.env
    origin = repo.parent / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], repo.parent, env)
    run(["git", "remote", "add", "origin", str(origin)], repo, env)
    remote = repo.parent / "tandem-remote"  # .dvc/config: ../../tandem-remote from .dvc/
    # `make remote`: the absolute path, which pushing an experiment needs (docs/remote.md)
    run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], repo, env)
    # an experiment with its own learning rate (test_full_run's, so its training may come from
    # the local run-cache), then the workspace back at the last commit
    run(["dvc", "exp", "run", "-S", "++datasets.usps.train.lr=0.002", "-n", "shared"], repo, env)
    experiment = out_hashes(repo)["train@usps:models/usps/model"]
    run(["git", "checkout", "--", "params.yaml"], repo, env)
    assert "train@usps" not in repro(repo, env)  # restored from the local run-cache
    commit(repo, env, "before push")
    run([*GIT, "tag", "-a", "usps-model@v1.0.0", "-m", "usps digits, first release"], repo, env)
    run(["git", "push", "-q", "origin", "HEAD:main", "--tags"], repo, env)
    run(["dvc", "push", "--run-cache"], repo, env)
    run(["dvc", "exp", "push", "origin", "shared"], repo, env)
    assert (remote / "runs").is_dir()
    assert (remote / "files/md5" / experiment[:2] / experiment[2:]).is_file()

    clone = repo.parent / "clone"  # beside the repo, so the relative remote is the same folder
    run(["git", "clone", "-q", "-b", "main", str(origin), str(clone)], repo.parent, env)
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
    # its outputs fetched from the remote (`--pull`), not rerun (a stage whose outputs are all
    # metrics kept in git, like cv, may recompute them: they are not in the remote)
    set_params(clone, datasets__usps__train__lr=0.002)  # as `-S ++datasets.usps.train.lr=...`
    log = run(["dvc", "repro", "--pull"], clone, env).stdout
    assert "Running stage 'train@usps'" not in log, log
    assert "Stage 'train@usps' is cached - skipping run, checking out outputs" in log, log
    assert "Running stage 'export@usps'" not in log, log
    assert out_hashes(clone)["train@usps:models/usps/model"] == experiment


def test_plots_are_one_chart_per_question_and_none_renders_blank(pipeline_run):
    """`dvc plots show --json`: at most 4 interactive charts per entry (learning curves,
    validation score, predictions, curves), the summary PNG as the only image, and every chart
    rendered offline (vl-convert) draws marks: none is blank."""
    import io as bytes_io
    from xml.etree import ElementTree

    import vl_convert
    from PIL import Image

    repo, env = pipeline_run.repo, pipeline_run.env
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

    def marks(spec: dict) -> int:
        """The items the chart draws (lines, rects, points), from its SVG rendering: the groups
        vega marks "role-mark", which axes, grids and legends are not."""
        root = ElementTree.fromstring(vl_convert.vegalite_to_svg(spec))
        return sum(
            1
            for group in root.iter("{http://www.w3.org/2000/svg}g")
            if "role-mark" in group.get("class", "").split()
            for item in group
            if item.get("d") or item.get("width") or item.get("x2")
        )

    for key, spec in vega.items():
        Image.open(bytes_io.BytesIO(vl_convert.vegalite_to_png(spec))).verify()  # renders
        # blank: nothing drawn beyond what the chart draws with no data (ROC's diagonal)
        drawn, empty = marks(spec), marks({**spec, "data": {"values": []}})
        assert drawn > empty, f"{key} renders blank ({drawn} marks, {empty} with no data)"


def test_metrics_are_the_scores_alone(pipeline_run):
    """`dvc metrics show`: per entry the torch model's scores (eval.json) and each baseline's
    headline score (baselines.json: accuracy, or R²), plus the searches' scores; training records,
    counts and the export's parity check are outputs or logs, not metrics, and the summary's
    table is no metric either. No number is in two metrics files, nor twice in one."""
    repo, env = pipeline_run.repo, pipeline_run.env
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    files = {k: v["data"] for k, v in next(iter(shown.values()))["data"].items()}
    expected = {f"metrics/{n}/{k}.json" for n in ENTRIES for k in ("eval", "baselines")}
    searches = {"search/cv.json", "search/tune/best.json"}
    assert set(files) == expected | searches | {"metrics/usps/ensemble.json"}
    # the seed ensemble is scored like the single model (eval.json's keys)
    assert set(files["metrics/usps/ensemble.json"]) == set(files["metrics/usps/eval.json"])

    baselines = {"logistic_regression", "ridge", "random_forest", "hist_gradient_boosting", "svc"}
    for name in ENTRIES:
        scores = files[f"metrics/{name}/eval.json"]  # the torch model's, flat
        assert scores and all(isinstance(v, float) for v in scores.values()), scores
        headline = "r2" if "r2" in scores else "accuracy"
        others = files[f"metrics/{name}/baselines.json"]
        assert set(others) <= baselines and len(others) >= 3, others
        assert all(set(s) == {headline} for s in others.values()), others  # one number each
    assert files["search/tune/best.json"].pop("failed_candidates") == 0  # a count, beside them
    for search in ("search/cv.json", "search/tune/best.json"):  # {scorer: {mean, std}}
        assert all(set(v) == {"mean", "std"} for v in files[search].values()), files[search]
    # no key stands for the same quantity twice: macro recall is balanced accuracy, MSE is
    # RMSE squared, a best score is the best candidate's mean
    names = {k for data in files.values() for k in _leaf_keys(data)}
    for twice in ("recall_macro", "mse", "best_score", "folds", "rows", "n_candidates"):
        assert twice not in names, twice


def _leaf_keys(data: dict):
    for key, value in data.items():
        yield from _leaf_keys(value) if isinstance(value, dict) else (key,)


# ---------------------------------------------------------------- reproducibility and crashes
# an image entry (a classifier) and a tabular regressor with its target scaler: every kind of
# output (a tabular classifier's outputs are the image one's, with a tabular preprocessor)
SECOND = ("usps", "diabetes")

# the wrapper kills its own process (SIGKILL: no cleanup, no `finally`) at the moment it is about
# to rename the N-th finished temp file onto TARGET, i.e. in the middle of writing outputs
KILLER = textwrap.dedent("""
    import os, signal, sys
    target, nth = sys.argv[1], int(sys.argv[2])
    seen, real = 0, os.replace
    def replace(src, dst, *args, **kwargs):
        global seen
        if os.path.normpath(os.fspath(dst)).endswith(os.path.normpath(target)):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    from tandem.cli import app
    sys.argv = ["tandem", *sys.argv[3:]]
    app()
""")


def clean_copy(tmp: Path, first) -> tuple[Path, dict]:
    """The first run's project, clean (no results), with two of its entries and only the
    per-entry chain: cv and tune are fits like train's (seeded the same way), and summary reads
    metrics; leaving them out keeps the run to a couple of minutes."""
    env = offline_env(tmp / "openml-cache")
    repo = make_project(tmp / "b", env, {k: first.entries[k] for k in SECOND}, clean=True)
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if "foreach" in v}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    commit(repo, env, "init")
    return repo, env


def killed(repo: Path, env: dict, target: str, nth: int, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, target, str(nth), *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def second(tmp_path_factory, pipeline_run):
    return clean_copy(tmp_path_factory.mktemp("repro"), pipeline_run)


def test_identical_runs_even_across_a_sigkill_and_the_run_cache(pipeline_run, second):
    b, env_b = second
    # the first run's outputs of these entries, recorded before any test changed them
    first = {
        k: v
        for k, v in pipeline_run.first_hashes.items()
        if k.split(":")[0].split("@")[-1] in SECOND
    }
    assert first and all(first.values())

    # the second run: SIGKILLed while writing the checkpoint after epoch 2, so epoch 1's is the
    # last one
    run(["dvc", "repro", "preprocess@usps"], b, env_b)
    killed(b, env_b, "checkpoints/usps.pt", 2, "train", "--dataset", "usps")
    state = torch.load(b / "checkpoints" / "usps.pt", weights_only=True)  # whole, not truncated
    assert len(state["loop"]["history"]) == 1 and not state["complete"]
    assert not (b / "models/usps/model").exists() and not (b / "metrics/usps/train.json").exists()
    repro(b, env_b)  # train goes on from epoch 2
    assert torch.load(b / "checkpoints" / "usps.pt", weights_only=True)["complete"]
    second_hashes = out_hashes(b)
    differing = sorted(
        k for k in first.keys() | second_hashes.keys() if first.get(k) != second_hashes.get(k)
    )
    assert not differing, f"{len(differing)} outputs differ: {differing}"

    # an experiment, then the param reverted: DVC's run-cache gives the old outputs back
    commit(b, env_b, "second run")
    run(["dvc", "exp", "run", "-S", "++datasets.usps.train.lr=0.002"], b, env_b)
    model = "train@usps:models/usps/model"
    assert out_hashes(b)[model] != first[model]
    run(["git", "checkout", "--", "params.yaml"], b, env_b)
    log = run(["dvc", "repro"], b, env_b).stdout
    assert "Running stage 'train@usps'" not in log, log
    assert "Stage 'train@usps' is cached - skipping run, checking out outputs" in log, log
    assert out_hashes(b) == second_hashes


def test_sigkill_while_writing_outputs_leaves_them_whole(second):
    b, env_b = second
    files = ("metrics/usps/train.json", "dvclive/usps/metrics.json")
    before = {p: (b / p).read_bytes() for p in files}
    set_params(b, datasets__usps__train__lr=0.004)  # USPS's own lr: a shared one does not reach it
    # killed as it renames metrics/usps/train.json into place: the model is already the new one
    killed(b, env_b, "metrics/usps/train.json", 1, "train", "--dataset", "usps")
    assert (b / "metrics/usps/train.json").read_bytes() == before["metrics/usps/train.json"]
    from tandem import TorchClassifier

    TorchClassifier.load(b / "models/usps/model")  # whole: loads
    for path in (b / "metrics").rglob("*.json"):
        yaml.safe_load(path.read_text())  # every JSON output parses (none truncated)
    stages = repro(b, env_b)
    assert "train@usps" in stages
    status = run(["dvc", "status"], b, env_b).stdout
    assert "changed" not in status, status


NET = """from torch import nn


class TinyNet(nn.Module):
    def __init__(self, n_features, n_outputs, width=16):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, width), nn.ReLU(),
                                    nn.Linear(width, n_outputs))

    def forward(self, x):
        return self.layers(x)
"""


def test_an_entry_trains_the_projects_own_module_and_editing_it_reruns_that_entry(pipeline_run):
    """`train.module: nets/tiny.py:TinyNet`, a file of the project: `dvc repro` trains it, and
    editing the file retrains that entry alone (its recipe holds the file's hash)."""
    repo, env = pipeline_run.repo, pipeline_run.env
    (repo / "nets/tiny.py").write_text(NET)
    ref = "nets/tiny.py:TinyNet"
    entry = {**pipeline_run.entries["mycsv"], "train": {"module": ref,
             "module_kwargs": {ref: {"width": 8}}}}  # fmt: skip
    set_params(repo, datasets__mine=entry)
    mine = {f"{s}@mine" for s in PER_ENTRY}
    try:
        ran = repro(repo, env)
        assert mine <= ran and ran - mine - {f"resolve@{n}" for n in ENTRIES} == {"summary"}
        config = json.loads((repo / "models/mine/model/config.json").read_text())
        assert config["module_spec"] == ref and config["params"]["module__width"] == 8
        assert json.loads((repo / "metrics/mine/export.json").read_text())["passed"]
        (repo / "nets/tiny.py").write_text(NET.replace("nn.ReLU()", "nn.Tanh()"))
        ran = repro(repo, env) - {f"resolve@{n}" for n in (*ENTRIES, "mine")}
        assert ran == {"train@mine", "evaluate@mine", "export@mine", "summary"}
    finally:  # back to the committed run for any test after this one
        run(["git", "checkout", "--", "."], repo, env)
        run(["git", "clean", "-fdq", "nets", "recipes"], repo, env)
        run(["dvc", "checkout", "-q"], repo, env, check=False)


def test_fine_tuning_from_uspss_weights_beats_training_from_scratch(pipeline_run):
    """Transfer learning in the pipeline: USPS's trained CNN is written out (`tandem weights`),
    tracked under data/sources/weights/, and starts a new entry of sklearn's 8x8 digits (PNGs,
    resized to 16x16 by the fetch stage; 30 per class train, 60 are held out), its first block
    frozen. The same recipe from scratch, at equal epochs, scores lower on the held-out images;
    the fine-tuned model is exported, and predict serves it."""
    from PIL import Image
    from sklearn.datasets import load_digits

    repo, env = pipeline_run.repo, pipeline_run.env
    weights = "data/sources/weights/usps.safetensors"
    run(["tandem", "weights", "--dataset", "usps", "-o", weights], repo, env)
    digits, per_class = load_digits(), {}
    for image, digit in zip(digits.images, digits.target, strict=True):
        if per_class.setdefault(digit, 0) < 90:  # labelled as USPS labels them: "1" is a 0
            per_class[digit] += 1
            folder = repo / f"data/sources/images/digits16/{digit + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image * 255 / 16).astype("uint8")
            Image.fromarray(pixels, mode="L").save(folder / f"{per_class[digit]:02d}.png")
    run(["dvc", "add", "-q", weights, "data/sources/images/digits16"], repo, env)
    usps = pipeline_run.entries["usps"]
    recipe = {"module": "auto", "module_kwargs": usps["train"]["module_kwargs"],
              "max_epochs": 5, "lr": 0.003}  # fmt: skip
    entry = {"data": {"source": "images", "path": "data/sources/images/digits16",
                      "target": "digit", "task": "classification", "modality": "image",
                      "image_shape": [16, 16], "channels": 1},
             "label_names": usps["label_names"], "split": {"test_size": 2 / 3},
             "preprocess": {"scaler": "none"}, "evaluate": {}, "baselines": {}}  # fmt: skip
    tuned = {**recipe, "init_weights": weights, "freeze": ["1", "2", "4", "5"]}
    set_params(repo, datasets__tuned={**entry, "train": tuned},
               datasets__scratch={**entry, "train": recipe})  # fmt: skip
    try:
        ran = repro(repo, env)
        assert {"train@tuned", "train@scratch", "export@tuned"} <= ran
        assert not {s for s in ran if s.endswith("@usps")} - {"resolve@usps"}
        scores = {n: json.loads((repo / f"metrics/{n}/eval.json").read_text())["accuracy"]
                  for n in ("tuned", "scratch")}  # fmt: skip
        print(f"held-out accuracy (600 images): {scores}")
        assert scores["tuned"] > scores["scratch"], scores
        recipe_file = yaml.safe_load((repo / "recipes/tuned/train.yaml").read_text())
        assert len(recipe_file["init_weights_sha256"]) == 64
        assert json.loads((repo / "metrics/tuned/export.json").read_text())["passed"]
        out = repo / "sevens.csv"  # folder "8" holds sevens, served under their label name
        run(["tandem", "predict", "--dataset", "tuned", "data/sources/images/digits16/8", "-o",
             str(out)], repo, env)  # fmt: skip
        assert (pd.read_csv(out, dtype={"prediction": str})["prediction"] == "7").mean() > 0.8
        # a new weights file retrains only the entry that starts from it
        run(["tandem", "weights", "--dataset", "scratch", "-o", weights], repo, env)
        run(["dvc", "add", "-q", weights], repo, env)
        run(["dvc", "repro", "resolve"], repo, env)
        status = json.loads(run(["dvc", "status", "--json"], repo, env).stdout)
        assert {s for s in status if s.startswith("train@")} == {"train@tuned"}
    finally:  # back to the committed run for any test after this one
        run(["git", "checkout", "--", "."], repo, env)
        run(["git", "clean", "-fdq", "data/sources", "recipes"], repo, env)
        run(["dvc", "checkout", "-q"], repo, env, check=False)
