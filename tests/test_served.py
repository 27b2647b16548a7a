"""The served model is the scored model: eval.json's headline, `tandem predict` and `tandem serve`
(torch and onnxruntime) answer with one model, test-time augmentation included, and name the
classes as the entry's label_names and the figures do, in natural order."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _models import PIXELS, build_usps, digit_images, evaluate_labels, usps_test
from conftest import ROOT
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from tandem import evaluation, inference
from tandem.cli import View, app
from tandem.serve import create_app

runner = CliRunner()
USPS_NAMES = {str(k + 1): str(k) for k in range(10)}  # params.yaml's: "10" is the digit 9
DIGITS = [str(k) for k in range(10)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project's pipeline files with USPS's own params (evaluate.tta on, label_names "1".."10"
    -> "0".."9") and a tiny image model, after `tandem evaluate` and `tandem export`. The test
    split holds digits, and noise images labelled as the plain network reads them: the shifted
    views read some of them otherwise, so the plain and the served accuracy differ."""
    root = tmp_path_factory.mktemp("served")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    model_dir = build_usps(root, max_epochs=1)
    rng = np.random.RandomState(3)
    noise = pd.DataFrame(rng.uniform(-1, 1, (60, len(PIXELS))), columns=PIXELS)
    noise["class"] = evaluate_labels(model_dir, noise)
    test = pd.concat([pd.read_parquet(usps_test(model_dir)), noise], ignore_index=True)
    test.to_parquet(usps_test(model_dir), index=False)
    prep = inference.load(model_dir).preprocessor
    features = pd.DataFrame(prep.transform(test[PIXELS]), columns=PIXELS).assign(
        **{"class": test["class"]}
    )
    features.to_parquet(root / "data/usps/features_test.parquet", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for stage in ("evaluate", "export"):
            result = runner.invoke(app, [stage, "--dataset", "usps"])
            assert result.exit_code == 0, result.output
    return root


def metrics(root, kind: str) -> dict:
    return json.loads((root / f"metrics/usps/{kind}.json").read_text())


def predict(*args) -> pd.DataFrame:
    result = runner.invoke(app, ["predict", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def png_folder(folder, images) -> None:
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(folder / f"digit_{i:02d}.png")


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_served_model_scores_eval_json_headline(project, tmp_path, backend):
    """The test split through `tandem predict` (the exported file, or torch as served) gives back
    eval.json's scores: the headline is the served model's, not a variant beside it."""
    model_dir, test_file = project / "models/usps", project / "data/usps/test.parquet"
    out = tmp_path / "pred.parquet"
    predict(test_file, "--model-dir", model_dir, "--backend", backend, "-o", out)
    pred, test = pd.read_parquet(out), pd.read_parquet(test_file)
    truth = test["class"].map(USPS_NAMES)
    scores = metrics(project, "eval")
    assert (pred["prediction"] == truth).mean() == scores["accuracy"]
    proba = pred.filter(like="proba_")
    assert list(proba.columns) == [f"proba_{d}" for d in DIGITS]
    p = proba.to_numpy(np.float64, copy=True)
    p /= p.sum(axis=1, keepdims=True)  # float32 rows from onnxruntime, for log loss
    again = evaluation.classification_metrics(truth, pred["prediction"], p, DIGITS)
    assert again == pytest.approx({k: scores[k] for k in again}, rel=1e-4, abs=1e-6)
    # the plain network's accuracy is beside the headline, and it is another model on these rows
    plain = evaluate_labels(model_dir, test)
    assert scores["accuracy_plain"] == np.mean(plain == test["class"])
    assert (pd.Series(plain).map(USPS_NAMES) != pred["prediction"]).any()
    assert scores["accuracy_plain"] > scores["accuracy"]  # the plain network is not the headline
    exported = metrics(project, "export")
    assert exported["served"] == "tta" and exported["accuracy"] == scores["accuracy"]


def test_the_exported_graph_is_the_tta_network(project):
    """model.onnx and model.torchscript.pt are the test-time augmented network (parity-checked
    like the plain one), columns in natural order, labels named."""
    model_dir = project / "models/usps"
    pipe = inference.load(model_dir)
    assert pipe.serving.tta and pipe.classes == DIGITS
    test = pd.read_parquet(project / "data/usps/test.parquet")
    X = pipe.preprocessor.transform(test[PIXELS])
    order = [list(pipe.estimator.classes_).index(str(k + 1)) for k in range(10)]
    tta = pipe.estimator.predict_proba_tta(X)[:, order]
    plain = pipe.estimator.predict_proba(X)[:, order]
    model = inference.OnnxModel(model_dir / "model.onnx")
    assert model.served == "tta" and model.classes == DIGITS
    assert model.meta["model_classes"] == [str(k) for k in range(1, 11)]
    probs, labels = model.session.run(None, model.feeds(test[PIXELS]))
    np.testing.assert_allclose(probs, tta, atol=1e-5)
    assert np.abs(probs - plain).max() > 1e-3
    assert list(labels) == [DIGITS[i] for i in tta.argmax(1)]
    report = metrics(project, "export")
    assert report["passed"] and report["max_abs_diff"] <= 1e-5 and report["n_rows"] == len(test)
    net = torch.jit.load(str(model_dir / "model.torchscript.pt"))
    with torch.no_grad():
        logits = net(torch.from_numpy(X.to_numpy(np.float32)))
    np.testing.assert_allclose(torch.softmax(logits.double(), 1).numpy(), tta, atol=1e-5)
    serving = json.loads((model_dir / "serving.json").read_text())
    assert serving["served"] == "tta" and serving["classes"] == DIGITS


def test_a_png_digit_gets_its_own_name_from_predict_and_serve(project, tmp_path):
    """USPS's label "7" is the digit 6: predict and serve answer "6", probability columns in the
    digits' order, in torch and onnxruntime."""
    model_dir = project / "models/usps"
    images, labels = digit_images(10, seed=11)
    names = [USPS_NAMES[label] for label in labels]
    png_folder(tmp_path / "digits", images)
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        predict(tmp_path / "digits", "--model-dir", model_dir, "--backend", backend, "-o", out)
        pred = pd.read_csv(out, dtype={"prediction": str})
        assert list(pred.columns) == ["file", "prediction", *[f"proba_{d}" for d in DIGITS]]
        assert list(pred["prediction"]) == names, backend
        client = TestClient(create_app(model_dir, backend=backend))
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image, mode="L").save(buffer, format="PNG")
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        body = client.post("/predict", json={"images": encoded}).json()
        assert body["predictions"] == names and body["classes"] == DIGITS, backend
        np.testing.assert_allclose(body["probabilities"], pred.filter(like="proba_"), atol=1e-5)


def test_metadata_shows_the_served_models_numbers(project):
    for backend in ("torch", "onnx"):
        meta = TestClient(create_app(project / "models/usps", backend=backend)).get("/metadata")
        meta = meta.json()
        assert meta["served"] == "tta" and meta["classes"] == DIGITS
        assert meta["metrics"]["eval"] == metrics(project, "eval")
        assert meta["metrics"]["export"]["accuracy"] == meta["metrics"]["eval"]["accuracy"]


def test_metadata_leaves_out_an_eval_json_of_another_variant():
    from tandem.serve import served_metrics

    scores = {"accuracy": 0.9, "accuracy_plain": 0.8}
    assert served_metrics({"eval": scores}, "tta") == {"eval": scores}
    shown = served_metrics({"eval": scores, "export": {"passed": True}}, "plain")
    assert "eval" not in shown and "tta network" in shown["note"] and shown["export"]
    assert served_metrics({"eval": {"accuracy": 0.9}}, "plain") == {"eval": {"accuracy": 0.9}}


def test_tta_flag_is_redundant_on_a_model_that_serves_it(project, tmp_path):
    model_dir, test_file = project / "models/usps", project / "data/usps/test.parquet"
    rows = tmp_path / "rows.csv"
    pd.read_parquet(test_file).head(20).to_csv(rows, index=False)
    outputs = []
    for args in ((), ("--tta",), ("--tta", "--backend", "onnx")):
        out = tmp_path / f"pred{len(outputs)}.csv"
        result = predict(rows, "--model-dir", model_dir, "-o", out, *args)
        assert ("--tta changes nothing" in result.output) == ("--tta" in args)
        outputs.append(pd.read_csv(out, dtype={"prediction": str}))
    for other in outputs[1:]:
        assert list(other["prediction"]) == list(outputs[0]["prediction"])
        np.testing.assert_allclose(other.filter(like="proba_"), outputs[0].filter(like="proba_"),
                                   atol=1e-5)  # fmt: skip


def test_renaming_a_label_reruns_export_and_evaluate_never_training():
    """tta lives in the evaluate section, label_names with the entry (recipes/NAME/labels.yaml):
    the stages that read them are evaluate and export (which serves what evaluate scores);
    training reads neither."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = {name: stage["do"].get("params", []) for name, stage in stages.items()
              if "do" in stage}  # fmt: skip
    assert not [p for p in params["train"] if "evaluate" in str(p)]
    assert {"recipes/${key}/evaluate.yaml": None} in params["evaluate"]  # the whole recipe
    assert {"recipes/${key}/evaluate.yaml": ["tta"]} in params["export"]
    readers = {name for name, declared in params.items() if "labels.yaml" in str(declared)}
    assert readers == {"evaluate", "export"}
    assert "models/${key}/serving.json" in stages["export"]["do"]["outs"]


def test_the_export_stage_serves_the_entrys_evaluate_settings(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from stages.export import serving

    image = View(modality="image", task="classification")
    tabular = View(modality="tabular", task="classification")
    shared = View(tta=False)
    params = View(evaluate=shared, datasets=View(
        usps=View(data=image, evaluate={"tta": True}, label_names={"2": "two"}),
        plain=View(data=image, evaluate={}, label_names=None),
        adult=View(data=tabular, evaluate={"tta": True}, label_names=None),
    ))  # fmt: skip
    usps = serving(params, "usps")
    assert usps.tta and usps.label_names == {"2": "two"}
    assert serving(params, "plain") == inference.Serving(False, None)
    assert serving(params, "adult") == inference.Serving(False, None)  # TTA shifts images only


def test_the_summary_names_the_served_model_the_ensemble_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    from stages import summary

    scores = {"accuracy": 0.99, "log_loss": 0.03}
    files = {
        "usps/eval": {**scores, "accuracy_plain": 0.98},
        "usps/ensemble": {**scores, "accuracy": 0.995},
        "usps/baselines": {"svc": {"accuracy": 0.97}},
        "cpu/eval": {"r2": 0.9, "rmse": 1.0}, "cpu/baselines": {"ridge": {"r2": 0.8}},
    }  # fmt: skip
    for name, content in files.items():
        (tmp_path / "metrics" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(content))
    summary.run(View(datasets={"usps": None, "cpu": None}, ensemble=View(datasets=["usps"])))
    table = (tmp_path / "reports/summary.md").read_text()
    usps = table.split("## usps")[1].split("## cpu")[0]
    assert "`torch (served)` is the exported model, whose score is the headline" in usps
    assert "test-time augmentation" in usps and "`torch ensemble` is scored beside it" in usps
    assert "ensemble" not in table.split("## cpu")[1]
    csv = pd.read_csv(tmp_path / "reports/summary.csv")
    assert csv.loc[csv["dataset"] == "usps", "model"].tolist()[:2] == [
        "torch (served)", "torch ensemble"
    ]  # fmt: skip
