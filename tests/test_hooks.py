"""The estimator's overridable steps: a subclass that overrides ``get_loss`` changes the loss of
training and validation, and its checkpoints resume to the same weights (DDP: test_ddp.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from test_checkpoint import Interrupt, StopAt, assert_same, weights

from tandem import TorchClassifier
from tandem.estimators import LoopState, TorchEstimatorBase


class FocalClassifier(TorchClassifier):
    """A focal loss (gamma 2) by overriding one method."""

    def get_loss(self, y_pred, y_true, sample_weight):
        return (sample_weight * focal(y_pred, y_true)).sum()


def focal(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return -((1 - log_p.exp()) ** 2) * log_p


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=240, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)  # fmt: skip
    return X.astype(np.float32), y


def make(cls=FocalClassifier, **kw):
    params = dict(module__hidden_sizes=(16,), module__dropout=0.0, lr=0.01, batch_size=32,
                  max_epochs=4, validation_fraction=0.25, random_state=3)  # fmt: skip
    return cls(**{**params, **kw})


def test_get_loss_is_the_loss_of_training_and_validation(data):
    X, y = data
    est = make().fit(X, y)
    plain = make(TorchClassifier).fit(X, y)
    assert not np.allclose(est.predict_proba(X), plain.predict_proba(X))  # another loss trained
    # the last epoch's valid_loss is the focal loss of the final weights on the validation rows
    _, valid = est._split(np.searchsorted(est.classes_, y), est._seed)
    logits = torch.as_tensor(est.predict_log_proba(X[valid]), dtype=torch.float32)
    expected = focal(logits, torch.as_tensor(np.searchsorted(est.classes_, y[valid]))).mean()
    assert est.history_[-1]["valid_loss"] == pytest.approx(float(expected), abs=1e-5)
    assert est.history_[-1]["valid_loss"] != pytest.approx(plain.history_[-1]["valid_loss"])


def test_a_focal_fit_resumes_from_its_checkpoint_to_identical_weights(tmp_path, data):
    X, y = data
    whole = make(checkpoint=str(tmp_path / "whole.pt")).fit(X, y)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        make(checkpoint=str(path), callbacks=[StopAt(3)]).fit(X, y)
    resumed = make(checkpoint=str(path)).fit(X, y)
    assert_same(weights(whole), weights(resumed))
    assert [r["valid_loss"] for r in resumed.history_] == [r["valid_loss"] for r in whole.history_]


def test_a_checkpoint_of_another_loss_is_not_resumed(tmp_path, data):
    """The subclass's code is part of the checkpoint's fingerprint: the plain classifier's
    interrupted fit is not taken up by the focal one (nor the other way round)."""
    X, y = data
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        make(TorchClassifier, checkpoint=str(path), callbacks=[StopAt(3)]).fit(X, y)
    with pytest.warns(UserWarning, match="other params or data"):
        resumed = make(checkpoint=str(path)).fit(X, y)
    assert_same(weights(make().fit(X, y)), weights(resumed))


class Scaled(TorchClassifier):
    """Overrides ``train_step`` to see every batch, and ``early_stopping`` to stop at once."""

    def train_step(self, run, batch):
        self.rows_seen = getattr(self, "rows_seen", 0) + len(batch.X)
        return super().train_step(run, batch)

    def early_stopping(self, run, state: LoopState, record, weights) -> bool:
        return record["epoch"] >= 2


def test_train_step_and_early_stopping_are_overridable(data):
    X, y = data
    est = make(Scaled, max_epochs=5).fit(X, y)
    assert isinstance(est, TorchEstimatorBase) and len(est.history_) == 2
    assert est.rows_seen == 2 * 180  # two epochs over the 180 training rows
