"""Bad data gets a clear error naming the file or column: inputs to a fitted preprocessor or
estimator with the wrong columns, shape or dtype, NaN where nothing imputes, corrupt files."""

from __future__ import annotations

import gzip
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest

from tandem import TorchClassifier, io
from tandem.data import DataError, fetch_openml_frame
from tandem.features import build_preprocessor, build_tabular_preprocessor, load_transformer


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.RandomState(0)
    X = pd.DataFrame({"age": rng.normal(40, 9, 80), "fare": rng.exponential(20, 80),
                      "port": rng.choice(["C", "Q", "S"], 80)})  # fmt: skip
    y = np.where(X["age"] > 40, "old", "young")
    prep = build_tabular_preprocessor(X).set_output(transform="pandas").fit(X, y)
    est = TorchClassifier(module__hidden_sizes=(8,), max_epochs=2, random_state=0)
    return X, y, prep, est.fit(prep.transform(X), y)


def test_preprocessor_names_a_missing_column(fitted):
    X, _, prep, _ = fitted
    with pytest.raises(ValueError, match="fare"):
        prep.transform(X.drop(columns="fare"))


def test_estimator_names_text_and_nan_columns(fitted):
    X, y, prep, est = fitted
    features = prep.transform(X)
    bad = features.astype(object)
    bad.iloc[3, 1] = "n/a"
    with pytest.raises(ValueError, match=r"not numbers: \['numeric__fare'\]"):
        est.predict(bad)
    nan = features.copy()
    nan.iloc[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN: \['numeric__age'\]"):
        est.predict(nan)
    with pytest.raises(ValueError, match=r"NaN: \['a'\]"):  # the same on fit
        TorchClassifier(max_epochs=1).fit(pd.DataFrame({"a": [1.0, np.nan], "b": [1, 2]}), [0, 1])


def test_nan_where_nothing_imputes_is_named():
    """USPS's scaler passes NaN through (it cannot impute): the estimator names the pixel."""
    X = pd.DataFrame(np.random.RandomState(0).rand(20, 3), columns=["p0", "p1", "p2"])
    prep = build_preprocessor("standard").fit(X)
    est = TorchClassifier(max_epochs=1, random_state=0).fit(prep.transform(X), [0, 1] * 10)
    X.loc[4, "p2"] = np.nan
    with pytest.raises(ValueError, match=r"NaN: \['p2'\]"):
        est.predict(prep.transform(X))


def test_estimator_names_the_wrong_shape(fitted):
    X, _, prep, est = fitted
    features = prep.transform(X)
    with pytest.raises(ValueError, match="features"):
        est.predict(features.to_numpy()[:, :-1])
    with pytest.raises(ValueError, match="feature names"):
        est.predict(features.rename(columns={"numeric__age": "numeric__AGE"}))


def test_corrupt_parquet_and_skops_files_are_named(tmp_path, fitted):
    path = tmp_path / "features.parquet"
    io.write_parquet(path, fitted[0])
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(ValueError, match="features.parquet"):
        io.read_parquet(path)
    skops = tmp_path / "preprocessor.skops"
    skops.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="preprocessor.skops"):
        load_transformer(skops)


def test_corrupt_openml_cache_file_is_named(openml_cache, monkeypatch):
    """scikit-learn deletes a cache file it cannot parse and downloads it again; offline, that
    ends in an error naming the data id and the cache to fix, not in a parser traceback."""
    import sklearn.datasets._openml as openml

    def no_network(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(openml, "urlopen", no_network)
    arff = next(openml_cache.rglob("iris.arff.gz"))
    arff.write_bytes(gzip.compress(b"@relation broken\n@data\n1,2,3\n"))
    with pytest.raises(DataError) as err:
        fetch_openml_frame(61, target="class", data_home=openml_cache)
    assert "61" in str(err.value) and str(openml_cache) in str(err.value)
