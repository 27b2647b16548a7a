"""The preprocess stage fits on the rows the estimator fits on: never the test split, and not
the validation slice the train stage's estimator holds out (its early stopping and validation
curves would otherwise watch rows that the target-aware bins were fitted on). Run through the
stage itself (`tandem preprocess`), not by fitting a transformer by hand."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
from conftest import tool_env

from tandem import TorchClassifier, features


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"f{i}": rng.normal(size=n) * (i + 1) for i in range(4)})
    frame["class"] = np.where(frame["f0"] + rng.normal(size=n) > 0, "yes", "no")
    return frame


def test_stage_fits_on_the_estimators_fit_rows_only(project):
    import sys

    sys.path.insert(0, str(project))
    from stages.preprocess import build_preprocessor, estimator_fit_rows
    from tandem import config

    train, test = _rows(300, 0), _rows(100, 1)
    test[[f"f{i}" for i in range(4)]] += 5.0  # the test rows have other statistics
    for part, frame in (("train", train), ("test", test)):
        (project / "data/adult").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(project / f"data/adult/{part}.parquet", index=False)
    done = subprocess.run(["tandem", "preprocess", "--dataset", "adult"], cwd=project,
                          env=tool_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    fitted = features.load_transformer(project / "models/adult/preprocessor.skops")

    params = config.load_params(project / "params.yaml")
    entry = params.datasets["adult"]
    p_train = config.resolve(params.train, entry, "train")
    X, y = train.drop(columns="class"), train["class"]
    rows = estimator_fit_rows(p_train, entry.data, y)
    # the complement is exactly the slice the train stage's estimator validates on
    est = TorchClassifier(validation_fraction=p_train.validation_fraction,
                          random_state=p_train.seed)
    est.classes_ = np.unique(y)
    _, valid = est._split(np.searchsorted(est.classes_, y), p_train.seed)
    assert valid is not None and len(valid) == 30
    assert sorted(set(range(300)) - set(rows)) == valid.tolist()

    def fit_on(idx):
        prep = build_preprocessor(config.resolve(params.preprocess, entry, "preprocess"),
                                  entry.data, X)  # fmt: skip
        return prep.fit(X.iloc[idx], y.iloc[idx]).transform(test.drop(columns="class"))

    got = fitted.transform(test.drop(columns="class"))
    pd.testing.assert_frame_equal(got, fit_on(rows))
    assert not got.equals(fit_on(np.arange(300)))  # fitted on all training rows: other bins
    stage_features = pd.read_parquet(project / "data/adult/features_train.parquet")
    assert len(stage_features) == 300  # every training row is transformed, validation included
