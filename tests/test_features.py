"""Preprocessors from params; persisted with skops and loaded without running code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from tandem.features import build_preprocessor, load_transformer, save_transformer


@pytest.fixture
def frames():
    rng = np.random.RandomState(0)
    cols = [f"p{i}" for i in range(6)]
    train = pd.DataFrame(rng.normal(3, 2, (50, 6)), columns=cols)
    test = pd.DataFrame(rng.normal(-5, 1, (20, 6)), columns=cols)
    return train, test


@pytest.mark.parametrize("scaler", ["standard", "minmax", "robust", "none"])
def test_fit_on_train_only_and_round_trip(frames, tmp_path, scaler):
    train, test = frames
    prep = build_preprocessor(scaler, pca=None).fit(train)
    out = prep.transform(test)
    assert list(out.columns) == list(train.columns)
    if scaler == "standard":  # statistics come from train, not test
        assert np.allclose(prep.transform(train).mean(), 0, atol=1e-9)
        assert not np.allclose(out.mean(), 0, atol=0.5)
    if scaler == "none":
        pd.testing.assert_frame_equal(out, test)
    path = save_transformer(prep, tmp_path / "prep.skops")
    pd.testing.assert_frame_equal(load_transformer(path).transform(test), out)


def test_pca(frames):
    train, _ = frames
    out = build_preprocessor("standard", pca=3).fit_transform(train)
    assert out.shape == (50, 3)


def test_unknown_scaler_is_named():
    with pytest.raises(ValueError, match="'maxabs'"):
        build_preprocessor("maxabs")


class Payload:
    def __reduce__(self):
        return (open, ("/tmp/should-not-exist", "w"))


def test_pickle_and_corrupt_files_are_refused(tmp_path, frames):
    bad = tmp_path / "prep.skops"
    bad.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="prep.skops"):
        load_transformer(bad)
    with pytest.raises(FileNotFoundError, match="missing.skops"):
        load_transformer(tmp_path / "missing.skops")


def test_untrusted_type_is_refused(tmp_path, frames):
    import skops.io as sio

    class Custom(StandardScaler):
        pass

    train, _ = frames
    path = tmp_path / "custom.skops"
    sio.dump(Custom().fit(train), path)
    with pytest.raises(ValueError, match="not trusted"):
        load_transformer(path)


def _mixed(n=60, seed=0):
    rng = np.random.RandomState(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "fare": rng.exponential(30, n),
            "sex": pd.Categorical(rng.choice(["f", "m"], n)),
            "port": rng.choice(["C", "Q", "S", "X"], n, p=[0.3, 0.3, 0.37, 0.03]).astype(object),
        }
    )
    frame.loc[::7, "age"] = np.nan
    frame.loc[::5, "port"] = None
    return frame


@pytest.mark.parametrize("imputer", ["median", "mean", "knn"])
@pytest.mark.parametrize("scaler", ["standard", "minmax", "robust", "none"])
def test_tabular_preprocessor_by_column_type(tmp_path, imputer, scaler):
    from tandem.features import build_tabular_preprocessor, column_kinds

    train, test = _mixed(), _mixed(seed=1)
    assert column_kinds(train) == (["age", "fare"], ["sex", "port"])
    ct = build_tabular_preprocessor(train, numeric_imputer=imputer, scaler=scaler)
    out = ct.fit_transform(train)
    assert out.dtype == np.float64 and not np.isnan(out).any()
    names = list(ct.get_feature_names_out())
    assert names[:2] == ["numeric__age", "numeric__fare"]
    assert {"categorical__sex_f", "categorical__port_X"} <= set(names)
    unseen = test.assign(port="Z")  # a category never seen in training: all-zero one-hot
    row = ct.transform(unseen)[
        :, [i for i, n in enumerate(names) if n.startswith("categorical__port")]
    ]
    assert (row == 0).all()
    path = save_transformer(ct, tmp_path / "ct.skops")
    np.testing.assert_array_equal(load_transformer(path).transform(test), ct.transform(test))


def test_tabular_min_frequency_groups_rare_categories():
    from tandem.features import build_tabular_preprocessor

    names = (
        build_tabular_preprocessor(_mixed(), min_frequency=5).fit(_mixed()).get_feature_names_out()
    )
    assert "categorical__port_infrequent_sklearn" in names and "categorical__port_X" not in names


def test_tabular_bad_options_are_named():
    from tandem.features import build_tabular_preprocessor

    with pytest.raises(ValueError, match="'mode'"):
        build_tabular_preprocessor(_mixed(), numeric_imputer="mode")
    with pytest.raises(ValueError, match="'zscore'"):
        build_tabular_preprocessor(_mixed(), scaler="zscore")
    with pytest.raises(ValueError, match="'splines'"):
        build_tabular_preprocessor(_mixed(), numeric_encoding="splines")


def test_piecewise_linear_encoding_by_hand():
    from tandem.features import PiecewiseLinearEncoder

    X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    enc = PiecewiseLinearEncoder(n_bins=4).fit(X)  # no y: quantile edges 0, 1, 2, 3, 4
    np.testing.assert_array_equal(enc.edges_[0], [0, 1, 2, 3, 4])
    out = enc.transform(np.array([[-1.0], [1.5], [9.0]]))
    # below every bin: all 0; inside bin 2: 1, 0.5, 0, 0; beyond the last: all 1
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [1, 0.5, 0, 0], [1, 1, 1, 1]])
    assert list(enc.get_feature_names_out(["x"])) == ["x_bin0", "x_bin1", "x_bin2", "x_bin3"]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_piecewise_linear_bins_follow_the_target(task):
    """With y, the bin edges are where the target changes, not where the quantiles fall."""
    from tandem.features import PiecewiseLinearEncoder

    rng = np.random.RandomState(0)
    x = rng.uniform(0, 100, (2000, 1))
    step = (x[:, 0] > 73.0).astype(int)
    y = np.where(step, "yes", "no") if task == "classification" else step * 10.0
    edges = PiecewiseLinearEncoder(n_bins=2, min_samples_leaf=20, task=task).fit(x, y).edges_[0]
    assert len(edges) == 3 and abs(edges[1] - 73.0) < 1.0


def test_tabular_piecewise_linear_preprocessor_round_trip(tmp_path):
    from tandem.features import build_tabular_preprocessor

    train, test = _mixed(200), _mixed(50, seed=1)
    y = np.where(train["age"].fillna(40) > 40, "old", "young")
    ct = build_tabular_preprocessor(train, numeric_encoding="piecewise_linear", n_bins=4)
    out = ct.set_output(transform="pandas").fit_transform(train, y)
    names = list(out.columns)
    assert names[:2] == ["numeric__age", "numeric__fare"]
    assert "numeric_bins__age_bin0" in names and not out.isna().any().any()
    bins = out.filter(like="numeric_bins__")
    assert bins.shape[1] >= 4 and ((bins >= 0) & (bins <= 1)).all().all()
    # tandem's own encoder is on the trusted list: the skops round trip loads it, same output
    path = save_transformer(ct, tmp_path / "ct.skops")
    pd.testing.assert_frame_equal(load_transformer(path).transform(test), ct.transform(test))


def test_saved_transformer_bytes_do_not_depend_on_process_or_time(tmp_path):
    """skops names entries by id() and zip stamps the time: tandem canonicalises both, so the same
    fitted object gives the same file (and DVC sees no change) in another process."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np
        from test_features import _mixed
        from tandem.features import build_tabular_preprocessor, save_transformer
        train = _mixed(200)
        y = np.where(train["age"].fillna(40) > 40, "old", "young")
        ct = build_tabular_preprocessor(train, numeric_encoding="piecewise_linear", n_bins=4)
        save_transformer(ct.fit(train, y), sys.argv[1])
    """)
    for name in ("a.skops", "b.skops"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True)
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()
    assert load_transformer(tmp_path / "a.skops").transform(_mixed(20)).shape[0] == 20
