"""A loss that turns NaN or infinite stops training with an error naming the epoch; nothing is
saved: no model with NaN weights and null metrics."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import tool_env, usps_like

from tandem import TorchClassifier, TorchRegressor
from tandem.training import TrainingDiverged


def _data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 4)).astype("float32")
    return X, (X[:, 0] > 0).astype(int)


@pytest.mark.parametrize("cls", [TorchClassifier, TorchRegressor])
def test_diverging_fit_names_the_epoch_and_suggests_a_lower_lr(cls):
    X, y = _data()
    est = cls(module__hidden_sizes=(8,), optimizer="sgd", lr=1e10, max_epochs=5, random_state=0)
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d: \w+_loss is (nan|inf)") as e:
        est.fit(X, y * 1000.0 if cls is TorchRegressor else y)
    assert "lower lr" in str(e.value) and "1e+09" in str(e.value)
    assert isinstance(e.value, ValueError)  # the CLI reports ValueErrors without a traceback


def test_a_sane_lr_is_not_refused():
    X, y = _data()
    est = TorchClassifier(module__hidden_sizes=(8,), max_epochs=3, random_state=0).fit(X, y)
    assert all(np.isfinite(r["train_loss"]) for r in est.history_)


def test_train_stage_writes_nothing_when_training_diverges(project):
    usps_like(120, at=(project / "data/usps/features_train.parquet",))

    def train(*sets):
        sets = ("train.module=mlp", "datasets.usps.train.max_epochs=3", "train.min_steps=0",
                "train.lr_schedule=null", *sets)  # fmt: skip
        args = [
            "tandem",
            "train",
            "--dataset",
            "usps",
            *[word for s in sets for word in ("--set", s)],
        ]
        return subprocess.run(args, cwd=project, env=tool_env(), capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    good = train()
    assert good.returncode == 0, good.stderr
    model = {p.name: p.read_bytes() for p in (project / "models/usps/model").iterdir()}
    metrics = (project / "metrics/usps/train.json").read_bytes()
    curves = {p: p.read_bytes() for p in (project / "dvclive").rglob("*") if p.is_file()}
    assert json.loads(metrics)["best_valid_loss"] is not None

    bad = train("train.optimizer=sgd", "datasets.usps.train.lr=1e10")  # USPS sets its own lr
    assert bad.returncode == 1
    assert "diverged at epoch" in bad.stderr and "lower lr" in bad.stderr
    assert "Traceback" not in bad.stderr
    # the previous run's model and metrics are left exactly as they were
    assert {p.name: p.read_bytes() for p in (project / "models/usps/model").iterdir()} == model
    assert (project / "metrics/usps/train.json").read_bytes() == metrics
    # and the DVCLive curves of the last good run too (the failed run logged to a temp folder)
    assert {p: p.read_bytes() for p in (project / "dvclive").rglob("*") if p.is_file()} == curves
    assert not [p for p in project.rglob(".*.tmp")]
