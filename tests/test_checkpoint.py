"""Resumable training: a checkpoint after every epoch; an interrupted fit goes on from it and ends
with exactly the weights of an uninterrupted one (CPU); other params or data start afresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from tandem import TorchClassifier, TorchRegressor


class Interrupt(Exception):
    pass


class StopAt:
    """A callback that dies at the end of one epoch, the way a killed process would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, estimator, record):
        if record["epoch"] == self.epoch:
            raise Interrupt


class Seen:
    def __init__(self):
        self.epochs: list[int] = []

    def on_epoch_end(self, estimator, record):
        self.epochs.append(record["epoch"])


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=240, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)  # fmt: skip
    return X.astype(np.float32), y


def make(path, **kw):
    params = dict(module="mlp", module__hidden_sizes=(16,), module__dropout=0.2, optimizer="adamw",
                  lr=0.01, batch_size=32, max_epochs=6, validation_fraction=0.2,
                  lr_schedule="onecycle", random_state=3, checkpoint=str(path))  # fmt: skip
    return TorchClassifier(**{**params, **kw})


def weights(est):
    return {k: v.clone() for k, v in est.module_.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("stop_at", [2, 5])
def test_interrupted_fit_resumes_to_identical_weights(tmp_path, data, stop_at):
    X, y = data
    whole = make(tmp_path / "whole.pt").fit(X, y)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        make(path, callbacks=[StopAt(stop_at)]).fit(X, y)
    state = torch.load(path, weights_only=True)
    # the checkpoint holds the epochs before the one that died (callbacks run before saving)
    assert len(state["loop"]["history"]) == stop_at - 1 and not state["complete"]
    seen = Seen()
    resumed = make(path, callbacks=[seen]).fit(X, y)
    assert_same(weights(whole), weights(resumed))
    assert seen.epochs == [1, 2, 3, 4, 5, 6]  # restored epochs replayed to callbacks, then the rest
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in whole.history_]
    np.testing.assert_array_equal(resumed.predict_proba(X), whole.predict_proba(X))
    assert torch.load(path, weights_only=True)["complete"]


def test_early_stopping_state_survives_the_interruption(tmp_path, data):
    X, y = data
    kw = dict(patience=2, max_epochs=12, lr=0.05)
    whole = make(tmp_path / "whole.pt", **kw).fit(X, y)
    with pytest.raises(Interrupt):
        make(tmp_path / "c.pt", callbacks=[StopAt(5)], **kw).fit(X, y)
    resumed = make(tmp_path / "c.pt", **kw).fit(X, y)
    assert resumed.best_epoch_ == whole.best_epoch_ and resumed.n_iter_ == whole.n_iter_
    assert_same(weights(whole), weights(resumed))


def test_regressor_resumes_too(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=200)
    kw = dict(module__hidden_sizes=(16,), lr=0.01, max_epochs=5, random_state=0)
    whole = TorchRegressor(checkpoint=str(tmp_path / "w.pt"), **kw).fit(X, y)
    with pytest.raises(Interrupt):
        TorchRegressor(checkpoint=str(tmp_path / "c.pt"), callbacks=[StopAt(3)], **kw).fit(X, y)
    resumed = TorchRegressor(checkpoint=str(tmp_path / "c.pt"), **kw).fit(X, y)
    assert_same(weights(whole), weights(resumed))


@pytest.mark.parametrize(
    "change", [{"lr": 0.02}, {"module__hidden_sizes": (8,)}, {"random_state": 4}, "data"]
)
def test_checkpoint_from_other_params_or_data_is_not_reused(tmp_path, data, change):
    X, y = data
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        make(path, callbacks=[StopAt(3)]).fit(X, y)
    if change == "data":
        X, kw = X.copy(), {}
        X[0, 0] += 1.0
    else:
        kw = change
    fresh = make(tmp_path / "fresh.pt", **kw).fit(X, y)
    seen = Seen()
    with pytest.warns(UserWarning, match="other params or data; starting afresh"):
        other = make(path, callbacks=[seen], **kw).fit(X, y)
    assert seen.epochs == [1, 2, 3, 4, 5, 6]
    assert_same(weights(fresh), weights(other))


def test_complete_or_corrupt_checkpoint_starts_afresh(tmp_path, data):
    X, y = data
    path = tmp_path / "ckpt.pt"
    first = make(path).fit(X, y)
    with pytest.warns(UserWarning, match="is complete; starting afresh"):
        again = make(path).fit(X, y)  # e.g. `dvc repro -f`: a finished fit is never skipped
    assert_same(weights(first), weights(again))
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot be read"):
        make(path).fit(X, y)


def test_checkpoint_is_loaded_without_unpickling_code(tmp_path, data):
    """A checkpoint replaced by a pickle whose payload would write a file is refused unread."""
    import pickle

    X, y = data
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "ckpt.pt"
    torch.save({"fingerprint": Payload()}, path, pickle_module=pickle)
    with pytest.warns(UserWarning, match="holds objects other than tensors") as caught:
        make(path).fit(X, y)
    assert not marker.exists()
    said = " ".join(str(w.message) for w in caught)
    assert "weights_only" not in said and "trust the source" not in said  # no advice to unpickle
