"""A regression model's target scaler is part of the model: written inside its directory before
the directory is swapped in, recorded in its config, and an error when it has gone missing
(a missing file is never read as "no scaler")."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from tandem import TorchRegressor, features, inference
from tandem.cli import app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tabular regression model directory as the pipeline writes it (scaled target)."""
    rng = np.random.RandomState(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (3 * X["a"] - X["b"]).to_numpy() * 1000.0 + 5000.0
    prep = features.build_preprocessor("standard").fit(X)
    scaler = StandardScaler().fit(y.reshape(-1, 1))
    est = TorchRegressor(module__hidden_sizes=(16,), max_epochs=20, random_state=0)
    est.fit(prep.transform(X), scaler.transform(y.reshape(-1, 1)).ravel())
    folder = tmp_path_factory.mktemp("regression")
    features.save_transformer(prep, folder / "preprocessor.skops")
    est.save(folder / "model", target_scaler=scaler)
    X.to_csv(folder / "rows.csv", index=False)
    return folder


def test_scaler_is_saved_inside_the_model_and_recorded(model_dir):
    config = json.loads((model_dir / "model" / "config.json").read_text())
    assert config["target_scaler"] == "target_scaler.skops"
    assert (model_dir / "model" / "target_scaler.skops").is_file()
    pred = inference.load(model_dir).predict_proba(pd.read_csv(model_dir / "rows.csv"))
    assert np.abs(pred).mean() > 1000  # in the target's own units, not standardised


def test_a_regressor_without_scaler_records_none(tmp_path):
    est = TorchRegressor(module__hidden_sizes=(4,), max_epochs=1, random_state=0)
    est.fit(np.random.RandomState(0).normal(size=(30, 2)), np.arange(30.0))
    est.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["target_scaler"] is None
    assert TorchRegressor.load_target_scaler(tmp_path / "model") is None


def test_missing_scaler_is_an_error_not_scaled_predictions(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model" / "target_scaler.skops").unlink()
    with pytest.raises(FileNotFoundError, match="target_scaler.skops is missing"):
        inference.load(broken)
    result = CliRunner().invoke(app, ["predict", str(broken / "rows.csv"), "--model-dir",
                                      str(broken)])  # fmt: skip
    assert result.exit_code == 1 and "target_scaler.skops is missing" in result.output


def test_config_that_does_not_say_is_refused(model_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    config_file = old / "model" / "config.json"
    config = json.loads(config_file.read_text())
    del config["target_scaler"]  # as an older tandem wrote it
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not record whether the model learnt a scaled"):
        inference.load(old)


def test_a_failed_scaler_write_leaves_the_previous_model_whole(model_dir, tmp_path, monkeypatch):
    target = tmp_path / "model"
    shutil.copytree(model_dir / "model", target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    est = TorchRegressor.load(target)

    def fail(obj, path):
        raise OSError("disk full")

    monkeypatch.setattr(features, "save_transformer", fail)
    with pytest.raises(OSError, match="disk full"):
        est.save(target, target_scaler=StandardScaler().fit([[0.0], [1.0]]))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary directory left
