"""One ONNX file from raw features to probabilities: parity with the Python pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from _models import build_tabular, build_usps, exported, tabular_frame, tabular_test, usps_test

from tandem import TorchRegressor, export, features, inference
from tandem.inference import InputError, OnnxModel


@pytest.fixture(scope="module")
def usps_dir(tmp_path_factory):
    return build_usps(tmp_path_factory.mktemp("usps"))


@pytest.fixture(scope="module")
def usps_exported(usps_dir):
    return exported(usps_dir, usps_test(usps_dir))


@pytest.fixture(scope="module")
def tabular_exported(tmp_path_factory):
    model_dir = build_tabular(tmp_path_factory.mktemp("tabular"))
    return exported(model_dir, tabular_test(model_dir))


def test_usps_onnx_matches_python_pipeline(usps_exported):
    pipe = inference.load(usps_exported)
    test = pd.read_parquet(usps_test(usps_exported))
    model = OnnxModel(usps_exported / "model.onnx")
    report = export.parity(model, pipe, test)
    assert report["passed"] and report["labels_agree"] and report["n_rows"] == len(test)
    assert report["max_abs_diff"] <= 1e-5
    assert model.meta["layout"] == "matrix" and model.meta["image_shape"] == [1, 16, 16]
    assert model.classes == [str(k) for k in range(1, 11)]  # natural order, not "1", "10", "2"
    assert model.meta["served"] == "plain" and model.meta["model_classes"] == model.classes
    # one graph: raw pixels in, probabilities and labels out, any batch size
    graph = onnx.load(str(usps_exported / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["features"]
    assert [o.name for o in graph.output] == ["probabilities", "label"]
    X = test[model.feature_names].iloc[:1]
    probs, labels = model.session.run(None, model.feeds(X))
    assert probs.shape == (1, 10) and np.isclose(probs.sum(), 1, atol=1e-5)
    assert labels[0] == pipe.predict(X)["prediction"][0]


def test_a_cnn_with_a_global_head_exports(tmp_path):
    # three blocks and a global max-pool head (the AdaptiveMaxPool2d ONNX must hold too)
    model_dir = build_usps(tmp_path, module="cnn", module__channels=(4, 8, 8),
                           module__head="global", max_epochs=1)  # fmt: skip
    report = export.export(inference.load(model_dir), pd.read_parquet(usps_test(model_dir)))
    assert report["passed"] and report["labels_agree"]
    assert (model_dir / "model.onnx").is_file() and (model_dir / "model.torchscript.pt").is_file()


def test_torchscript_file_is_the_network(usps_exported):
    """The served network's logits, columns in the served (natural) class order."""
    pipe = inference.load(usps_exported)
    test = pd.read_parquet(usps_test(usps_exported))
    net = torch.jit.load(str(usps_exported / "model.torchscript.pt"))
    X = pipe.preprocessor.transform(test[pipe.feature_names]).to_numpy(np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(X[:7])).numpy()
    expected = pipe.predict_proba(test.head(7))
    np.testing.assert_allclose(torch.softmax(torch.tensor(logits), 1).numpy(), expected, atol=1e-5)
    order = [list(pipe.estimator.classes_).index(c) for c in pipe.classes]
    np.testing.assert_allclose(expected, pipe.estimator.predict_proba(X[:7])[:, order], atol=1e-7)


def test_tabular_onnx_with_categoricals_missing_and_unknown_values(tabular_exported):
    pipe = inference.load(tabular_exported)
    assert pipe.categorical == ["colour", "city"]
    test = pd.read_parquet(tabular_test(tabular_exported))
    odd = pd.DataFrame({
        "age": [np.nan, 30.0, 200.0, 41.0],
        "income-usd": [1e4, np.nan, 5.0, 2e5],
        "colour": ["rare", "purple", None, "blue"],  # infrequent, unknown, missing
        "city": [None, "Atlantis", "Oslo", "Lima"],
    })  # fmt: skip
    frame = pd.concat([test.drop(columns="label"), odd], ignore_index=True)
    model = OnnxModel(tabular_exported / "model.onnx")
    report = export.parity(model, pipe, frame)
    assert report["passed"], report
    assert report["max_abs_diff"] <= 1e-5 and report["label_mismatches"] == 0
    assert model.meta["layout"] == "columns"
    assert model.meta["input_names"][model.feature_names.index("income-usd")] == "income_usd"


def test_piecewise_linear_encoding_exports(tmp_path):
    train = tabular_frame(400, 0)
    X, y = train.drop(columns="label"), train["label"]
    prep = features.build_tabular_preprocessor(
        X, min_frequency=10, numeric_encoding="piecewise_linear", n_bins=8
    ).set_output(transform="pandas")
    Xt = prep.fit_transform(X, y)
    from tandem import TorchClassifier

    model = TorchClassifier(module="mlp", max_epochs=2, random_state=0, device="cpu").fit(Xt, y)
    features.save_transformer(prep, tmp_path / "preprocessor.skops")
    model.save(tmp_path / "model")
    report = export.export(inference.load(tmp_path), tabular_frame(150, 1))
    assert report["passed"], report


def test_regression_export_applies_the_target_scaler(tmp_path):
    from sklearn.preprocessing import StandardScaler

    frame = tabular_frame(300, 0)
    X, y = frame.drop(columns="label"), frame["age"].fillna(40) * 1000.0 + 5.0
    prep = features.build_tabular_preprocessor(X, min_frequency=10).set_output(transform="pandas")
    scaler = StandardScaler().fit(y.to_numpy().reshape(-1, 1))
    model = TorchRegressor(module="mlp", max_epochs=2, random_state=0, device="cpu")
    model.fit(prep.fit_transform(X), scaler.transform(y.to_numpy().reshape(-1, 1)).ravel())
    features.save_transformer(prep, tmp_path / "preprocessor.skops")
    model.save(tmp_path / "model", target_scaler=scaler)
    pipe = inference.load(tmp_path)
    report = export.export(pipe, tabular_frame(100, 1))
    assert report["passed"] and report["max_rel_diff"] <= 1e-5
    assert np.abs(pipe.predict_proba(X)).mean() > 1000  # in the target's units


def test_export_stage_writes_onnx_torchscript_and_metric(tmp_path, monkeypatch):
    """The stage's glue on the pipeline's layout (models/NAME, metrics/NAME)."""
    from conftest import ROOT

    from tandem.cli import View

    build_tabular(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    from stages import export as stage

    assert stage.PARAMS == (
        "evaluate.tta", "datasets.{name}.data", "datasets.{name}.evaluate",
        "datasets.{name}.label_names",
    )  # fmt: skip
    data = View(modality="tabular", task="classification", target="label")
    toy = View(data=data, evaluate={}, label_names={"yes": "over", "no": "under"})
    params = View(evaluate=View(tta=True), datasets=View(toy=toy))
    stage.run(params, "toy")
    report = json.loads((tmp_path / "metrics/toy/export.json").read_text())
    assert report["passed"] and report["labels_agree"] and report["max_abs_diff"] <= 1e-5
    assert report["served"] == "plain"  # TTA shifts images; a tabular model is served plain
    pipe = inference.load(tmp_path / "models/toy")
    test = pd.read_parquet(tabular_test(pipe.model_dir))
    assert report["accuracy"] == np.mean(
        pipe.predict(test)["prediction"] == test["label"].map({"yes": "over", "no": "under"})
    )
    assert (tmp_path / "models/toy/model.onnx").is_file()
    assert (tmp_path / "models/toy/model.torchscript.pt").is_file()
    serving = json.loads((tmp_path / "models/toy/serving.json").read_text())
    assert serving["served"] == "plain" and serving["classes"] == ["under", "over"]
    assert serving["model_classes"] == ["no", "yes"]


def test_a_failed_parity_check_writes_nothing(usps_dir, tmp_path, monkeypatch):
    pipe = inference.load(usps_dir)
    test = pd.read_parquet(usps_test(usps_dir))
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(ValueError, match="disagrees"):
        export.export(pipe, test, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


class Unknown:
    """Stands for any class an attacker could name in a skops file."""


def test_loading_refuses_untrusted_types(usps_dir, tmp_path):
    """Artifacts load without running code: a skops file naming an unknown type is refused."""
    import shutil

    import skops.io as sio

    shutil.copytree(usps_dir, tmp_path / "models")
    sio.dump(Unknown(), tmp_path / "models" / "preprocessor.skops")
    with pytest.raises(ValueError, match="not trusted"):
        inference.load(tmp_path / "models")
    files = {p.suffix for p in usps_dir.rglob("*") if p.is_file()}
    assert files <= {".skops", ".json", ".safetensors", ".onnx", ".pt"}


def test_onnx_model_refuses_a_foreign_file(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="not written by tandem"):
        OnnxModel(tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError):
        OnnxModel(tmp_path / "missing.onnx")
    assert issubclass(InputError, ValueError)


def test_export_is_byte_identical_for_the_same_model(usps_dir, tmp_path):
    """No random graph names or serialization ids: the same model exports to the same bytes in
    another process and another folder (so DVC's hashes of two identical runs agree). TorchScript
    numbers the classes it traces per process, which is why each export runs in its own."""
    import shutil
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); "
        "from _models import exported, usps_test; m = Path(sys.argv[1]); exported(m, usps_test(m))"
    )
    copies = []
    for name in ("a", "b"):
        shutil.copytree(usps_dir.parents[1], tmp_path / name)  # models/usps and data/usps
        model_dir = tmp_path / name / "models" / usps_dir.name
        for out in ("model.onnx", "model.torchscript.pt"):
            (model_dir / out).unlink(missing_ok=True)
        subprocess.run([sys.executable, "-c", script, str(model_dir), str(Path(__file__).parent)],
                       check=True, capture_output=True)  # fmt: skip
        copies.append(model_dir)
    for out in ("model.onnx", "model.torchscript.pt"):
        assert (copies[0] / out).read_bytes() == (copies[1] / out).read_bytes(), out


def test_exports_name_no_folder_of_this_machine(usps_exported):
    """torch's ONNX exporter records each node's stack trace, with the paths of torch's and
    tandem's source files: the export drops them (and TorchScript's debug files), so that a clone
    in another folder, or another virtual environment, exports the same bytes."""
    import tandem

    folders = {str(Path(tandem.__file__).parent), str(Path(torch.__file__).parent)}
    for out in ("model.onnx", "model.torchscript.pt"):
        data = (usps_exported / out).read_bytes()
        assert not [f for f in folders if f.encode() in data], out
    graph = onnx.load(str(usps_exported / "model.onnx")).graph
    assert all(p.key != export.STACK_TRACE for n in graph.node for p in n.metadata_props)


def test_an_all_numeric_tabular_model_exports_with_named_columns(tmp_path):
    """A ColumnTransformer over numbers only (no categorical column) is fed by column, not as an
    image-like matrix, and its NaNs are imputed in the graph as in Python."""
    from sklearn.datasets import load_wine

    from tandem import TorchClassifier, features

    frame = load_wine(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame["target"]
    prep = features.build_tabular_preprocessor(X, numeric_encoding="piecewise_linear", n_bins=4)
    prep = prep.set_output(transform="pandas").fit(X, y)
    model = TorchClassifier(module__hidden_sizes=(16,), max_epochs=3, random_state=0)
    model.fit(prep.transform(X), y)
    models = tmp_path / "wine"
    features.save_transformer(prep, models / "preprocessor.skops")
    model.save(models / "model")
    pipe = inference.load(models)
    assert pipe.by_columns and not pipe.categorical and not pipe.is_image
    test = X.head(20).copy()
    test.iloc[0, 0] = np.nan  # imputed, in Python and in the graph
    report = export.export(pipe, test)
    assert report["passed"], report
    onnx_model = inference.OnnxModel(models / "model.onnx")
    assert onnx_model.meta["layout"] == "columns"
