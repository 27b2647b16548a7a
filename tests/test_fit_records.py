"""What a fit records: losses and scores over the rows they describe, weighted as the loss is;
callbacks ended on every exit; a loaded model that trains on as the unsaved one would."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score

from tandem import TorchClassifier

FAST = dict(module="mlp", module__hidden_sizes=(16,), module__dropout=0.0, batch_size=16,
            max_epochs=3, lr=0.02, random_state=0)  # fmt: skip


@pytest.fixture(scope="module")
def noisy():
    X, y = make_classification(n_samples=160, n_features=6, n_informative=3, flip_y=0.2,
                               random_state=0)  # fmt: skip
    return X.astype(np.float32), y


class Ends:
    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.calls = fail_at, []

    def on_train_begin(self, est):
        self.calls.append("begin")

    def on_epoch_end(self, est, record):
        self.calls.append("epoch")
        if record["epoch"] == self.fail_at:
            raise RuntimeError("a callback failed")

    def on_train_end(self, est):
        self.calls.append("end")


def test_on_train_end_runs_when_the_fit_raises(noisy):
    X, y = noisy
    ends = Ends(fail_at=2)
    with pytest.raises(RuntimeError, match="a callback failed"):
        TorchClassifier(**FAST, callbacks=[ends]).fit(X, y)
    assert ends.calls == ["begin", "epoch", "epoch", "end"]


def test_train_loss_is_the_mean_over_the_rows_trained_on(noisy):
    """33 rows in batches of 16: the trailing row is skipped (BatchNorm cannot train on one),
    so the epoch's loss is the mean over the 32 rows that trained, not their sum over 33."""
    X, y = noisy[0][:33], noisy[1][:33]
    est = TorchClassifier(**{**FAST, "optimizer": "sgd", "lr": 1e-12, "max_epochs": 1,
                             "validation_fraction": 0.0, "lr_schedule": None})  # fmt: skip
    est.fit(X, y)
    with torch.no_grad():  # the weights did not move (lr 1e-12): the per-row losses of the fit
        out = est.module_(torch.from_numpy(X))
        losses = torch.nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="none")
    means_without_one = (losses.sum() - losses) / 32
    assert np.isclose(means_without_one.numpy(), est.history_[0]["train_loss"], atol=1e-6).any()


def test_valid_accuracy_is_weighted_as_valid_loss_is(noisy):
    X, y = noisy
    w = np.random.default_rng(0).uniform(0, 5, size=len(y)).astype(np.float32)
    est = TorchClassifier(**{**FAST, "max_epochs": 1, "validation_fraction": 0.3,
                             "lr_schedule": None}).fit(X, y, sample_weight=w)  # fmt: skip
    _, valid = est._split(np.searchsorted(est.classes_, y), est._seed)
    pred = est.predict(X[valid])
    weighted = accuracy_score(y[valid], pred, sample_weight=w[valid])
    assert weighted != pytest.approx(accuracy_score(y[valid], pred))  # the test can tell them apart
    assert est.history_[0]["valid_accuracy"] == pytest.approx(weighted, abs=1e-6)


def test_partial_fit_after_load_trains_as_the_unsaved_model_would(noisy, tmp_path):
    """The fit's seed is saved: one more epoch of a loaded model draws the same batches as the
    model that never left memory (plain SGD: no optimizer state that the file does not hold)."""
    X, y = noisy
    est = TorchClassifier(**{**FAST, "optimizer": "sgd", "lr_schedule": None}).fit(X, y)
    est.save(tmp_path / "m")
    loaded = [TorchClassifier.load(tmp_path / "m", device="cpu") for _ in range(2)]
    for model in (est, *loaded):
        model.partial_fit(X, y)
    states = [m.module_.state_dict() for m in (est, *loaded)]
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


def test_train_record_and_learning_curve_name_the_saved_epoch(project, monkeypatch):
    """Without early stopping the model is the last epoch's (USPS's recipe, on noise):
    train.json's best_epoch and best_valid_loss, and the learning curve's mark, are that epoch's,
    not the epoch of the run's lowest validation loss."""
    import json

    import matplotlib.axes
    import pandas as pd
    from conftest import usps_like
    from typer.testing import CliRunner

    from tandem import cli, evaluation

    frame = usps_like(160, at=())
    noise = np.random.default_rng(1).permutation(frame["class"].to_numpy())  # nothing to learn
    frame.assign(**{"class": noise}).to_parquet(
        (project / "data/usps").mkdir(parents=True) or project / "data/usps/features_train.parquet"
    )
    monkeypatch.chdir(project)
    sets = ["datasets.usps.train.max_epochs=6", "train.min_steps=0", "datasets.usps.train.ema=null",
            "datasets.usps.train.batch_size=16", "datasets.usps.train.lr=0.01"]  # fmt: skip
    result = CliRunner().invoke(cli.app, ["train", "--dataset", "usps",
                                          *[w for s in sets for w in ("--set", s)]])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((project / "metrics/usps/train.json").read_text())
    model = TorchClassifier.load(project / "models/usps/model")
    losses = [r["valid_loss"] for r in model.history_]
    assert int(np.argmin(losses)) + 1 != 6  # the run's lowest validation loss is not the model's
    assert record["best_epoch"] == model.best_epoch_ == 6
    assert record["best_valid_loss"] == losses[-1]

    marks = []
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline",
                        lambda self, x, **kw: marks.append((x, kw.get("label"))))  # fmt: skip
    evaluation.plot_learning_curves(model.history_, project / "curves.png",
                                    best_epoch=model.best_epoch_)  # fmt: skip
    assert marks == [(6, "saved epoch 6")]
    assert pd.read_parquet(project / "data/usps/features_train.parquet").shape[0] == 160
