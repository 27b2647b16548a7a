"""The baselines stage's glue: every model scored, and every model's fit time recorded (whether
or not the model takes ``n_jobs``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml
from conftest import ROOT


def test_every_baseline_gets_scores_and_a_fit_time(tmp_path, monkeypatch):
    from tandem.cli import restrict
    from tandem.config import validate

    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 4))
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0.5).astype(int) + (X[:, 1] > 0.5).astype(int)]
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    frame = pd.DataFrame(X, columns=list("pqrs")).assign(label=y)
    frame.iloc[:60].to_parquet(folder / "features_train.parquet", index=False)
    frame.iloc[60:].to_parquet(folder / "features_test.parquet", index=False)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"] = {"toy": {
        "data": {"source": "openml", "data_id": 1, "target": "label", "task": "classification"},
        **{section: {} for section in ("split", "preprocess", "train", "evaluate", "baselines")},
    }}  # fmt: skip
    raw["cv"]["dataset"] = raw["tune"]["dataset"] = "toy"
    raw["ensemble"]["datasets"] = []
    raw["baselines"]["random_forest"]["n_estimators"] = 5
    raw["baselines"]["hist_gradient_boosting"]["max_iter"] = 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    from stages import baselines as stage

    keys = tuple(k.replace("{name}", "toy") for k in stage.PARAMS)
    stage.run(restrict(validate(raw), keys), "toy")
    scores = json.loads((tmp_path / "metrics/toy/baselines.json").read_text())
    timings = json.loads((tmp_path / "logs/timings/baselines@toy.json").read_text())
    assert set(scores) == {"logistic_regression", "random_forest", "hist_gradient_boosting"}
    assert all(set(s) == {"accuracy"} and 0 <= s["accuracy"] <= 1 for s in scores.values())
    assert set(timings["fit_seconds"]) == set(scores)
    assert all(s >= 0 for s in timings["fit_seconds"].values())
