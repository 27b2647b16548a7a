"""Run by tests/test_ddp.py under torchrun (and alone): fit a small MLP on fixed data; rank 0
writes the history and probabilities as JSON, and the model. Options come as JSON in argv[2]:
max_epochs, batch_size, dropout, weighted (random sample weights), patience, checkpoint,
kill_after_epoch (rank 0 SIGKILLs itself in on_epoch_end, before that epoch's checkpoint),
die_after_steps (rank 1 exits with code 3 after so many batches), focal (FocalClassifier: the
estimator's get_loss overridden)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tandem import TorchClassifier
from tandem.models import build_module


class KillAt:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, estimator, record):
        if record["epoch"] == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class DiesOnRank1(nn.Module):
    """The mlp, except that rank 1's process exits after ``steps`` training forwards."""

    def __init__(self, n_features: int, n_outputs: int, steps: int = 10**9):
        super().__init__()
        self.inner = build_module("mlp", n_features, n_outputs, hidden_sizes=(16,))
        self.steps, self.calls = steps, 0

    def forward(self, x):
        if self.training and os.environ.get("RANK") == "1":
            self.calls += 1
            if self.calls > self.steps:
                os._exit(3)
        return self.inner(x)


class FocalClassifier(TorchClassifier):
    """The classifier with a focal loss (gamma 2): ``get_loss`` is the one override."""

    def get_loss(self, y_pred, y_true, sample_weight):
        log_p = torch.log_softmax(y_pred, dim=1).gather(1, y_true[:, None]).squeeze(1)
        return (sample_weight * -((1 - log_p.exp()) ** 2) * log_p).sum()


def data(options: dict):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 6)).astype("float32")
    weights = rng.uniform(0.2, 3.0, size=300) if options.get("weighted") else None
    return X, (X[:, 0] + X[:, 1] > 0).astype(int), weights


def estimator(options: dict) -> TorchClassifier:
    kwargs = {}
    if "die_after_steps" in options:
        kwargs = {"module": DiesOnRank1, "module__steps": options["die_after_steps"]}
    else:
        kwargs = {"module": "mlp", "module__hidden_sizes": (16,),
                  "module__dropout": options.get("dropout", 0.0)}  # fmt: skip
    callbacks = [KillAt(options["kill_after_epoch"])] if "kill_after_epoch" in options else []
    cls = FocalClassifier if options.get("focal") else TorchClassifier
    return cls(
        batch_size=options.get("batch_size", 32), max_epochs=options.get("max_epochs", 5),
        lr=0.01, random_state=0, validation_fraction=0.2, device=options.get("device", "cpu"),
        patience=options.get("patience"), checkpoint=options.get("checkpoint"),
        callbacks=callbacks, **kwargs,
    )  # fmt: skip


def result(est: TorchClassifier, X) -> dict:
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in est.history_]
    return {"history": history, "proba": est.predict_proba(X).tolist(),
            "best_epoch": est.best_epoch_}  # fmt: skip


def main(out: str, options: dict) -> None:
    X, y, weights = data(options)
    est = estimator(options).fit(X, y, sample_weight=weights)
    est.set_params(callbacks=None, checkpoint=None).save(Path(out).with_suffix(".model"))
    if os.environ.get("RANK", "0") == "0":
        Path(out).write_text(json.dumps(result(est, X)))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
