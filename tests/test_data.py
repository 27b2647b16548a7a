"""fetch via the real fetch_openml path (offline cache from scikit-learn's test data); splits."""

from __future__ import annotations

from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest

from tandem.data import DataError, fetch_openml_frame, split_frame, xy


def test_fetch_from_cache_gives_frame_and_provenance(openml_cache):
    frame, info = fetch_openml_frame(61, target="class", data_home=openml_cache)
    assert frame.shape == (150, 5)
    assert pd.api.types.is_string_dtype(frame["class"])  # nominal target stored as strings
    assert info["data_id"] == 61 and info["rows"] == 150 and info["columns"] == 5
    assert info["name"] == "iris" and len(info["sha256"]) == 64 and info["openml_md5"]
    again, info2 = fetch_openml_frame(61, target="class", data_home=openml_cache)
    assert info2["sha256"] == info["sha256"]  # same data, same checksum


def test_fetch_names_a_missing_target(openml_cache):
    with pytest.raises(DataError, match="'species'"):
        fetch_openml_frame(61, target="species", data_home=openml_cache)


def test_fetch_offline_without_cache_says_how_to_fix(tmp_path, monkeypatch):
    import sklearn.datasets._openml as openml

    def no_network(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(openml, "urlopen", no_network)
    with pytest.raises(DataError, match="SCIKIT_LEARN_DATA") as err:
        fetch_openml_frame(41070, target="class", data_home=tmp_path / "empty")
    assert "41070" in str(err.value) and str(tmp_path / "empty") in str(err.value)


def _frame(n=200, seed=0):
    rng = np.random.RandomState(seed)
    return pd.DataFrame(
        {"a": rng.rand(n), "b": rng.rand(n), "y": rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1])}
    )


def test_random_split_is_stratified_and_seeded():
    frame = _frame()
    train, test = split_frame(frame, target="y", method="random", test_size=0.3, seed=1, n_train=0)
    assert len(test) == 60 and len(train) == 140
    full = frame["y"].value_counts(normalize=True)
    assert np.allclose(test["y"].value_counts(normalize=True)[full.index], full, atol=0.02)
    train2, test2 = split_frame(
        frame, target="y", method="random", test_size=0.3, seed=1, n_train=0
    )
    pd.testing.assert_frame_equal(test, test2)
    _, test3 = split_frame(frame, target="y", method="random", test_size=0.3, seed=2, n_train=0)
    assert not test.equals(test3)


def test_ordered_split_keeps_row_order():
    frame = _frame()
    train, test = split_frame(
        frame, target="y", method="ordered", test_size=0.3, seed=0, n_train=150
    )
    pd.testing.assert_frame_equal(train, frame.iloc[:150].reset_index(drop=True))
    pd.testing.assert_frame_equal(test, frame.iloc[150:].reset_index(drop=True))
    with pytest.raises(DataError, match="n_train"):
        split_frame(frame, target="y", method="ordered", test_size=0.3, seed=0, n_train=200)


def test_missing_target_is_named():
    with pytest.raises(DataError, match="'label'"):
        split_frame(_frame(), target="label", method="random", test_size=0.3, seed=0, n_train=0)
    with pytest.raises(DataError, match="'label'"):
        xy(_frame(), "label")


def test_tabular_xy_checks_before_work(openml_cache):
    from tandem.data import tabular_xy

    frame, _ = fetch_openml_frame(561, target="class", data_home=openml_cache)
    X, y = tabular_xy(frame, target="class", drop=["MMIN"], task="regression")
    assert "MMIN" not in X and "class" not in X and len(y) == 209
    with pytest.raises(DataError, match="'price'"):
        tabular_xy(frame, target="price", task="regression")
    with pytest.raises(DataError, match=r"\['nope'\]"):
        tabular_xy(frame, target="class", drop=["MMIN", "nope"], task="regression")
    iris, _ = fetch_openml_frame(61, target="class", data_home=openml_cache)
    with pytest.raises(DataError, match="not numeric"):
        tabular_xy(iris, target="class", task="regression")
    with pytest.raises(DataError, match="'ranking'"):
        tabular_xy(iris, target="class", task="ranking")


def test_all_missing_column_is_dropped_with_a_warning():
    from tandem.data import tabular_xy

    frame = _frame().assign(empty=np.nan)
    with pytest.warns(UserWarning, match="empty"):
        X, _ = tabular_xy(frame, target="y", task="classification")
    assert list(X.columns) == ["a", "b"]
