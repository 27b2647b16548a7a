"""Preprocessors from params; persisted with skops and loaded without running code."""

from __future__ import annotations

import pickle

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
