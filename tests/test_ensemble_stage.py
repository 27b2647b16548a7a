"""The ensemble stage: the train stage's model plus members trained with other seeds, their
class probabilities averaged and scored with eval.json's keys; bad ensemble params are refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

ENTRY = {"source": "openml", "data_id": 1, "target": "label", "task": "classification"}
SECTIONS = ("split", "preprocess", "train", "evaluate", "baselines")


def toy_params(**ensemble) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"] = {
        "toy": {"data": ENTRY, **{s: {} for s in SECTIONS}},
        "reg": {"data": {**ENTRY, "task": "regression"}, **{s: {} for s in SECTIONS}},
    }
    raw["cv"]["dataset"] = raw["tune"]["dataset"] = "toy"
    raw["train"] |= {"max_epochs": 3, "min_steps": 0, "batch_size": 16, "device": "cpu",
                     "module_kwargs": {"mlp": {"hidden_sizes": [8], "dropout": 0.0}}}  # fmt: skip
    raw["ensemble"] = {"datasets": ["toy"], "members": 3} | ensemble
    return raw


def test_members_differ_by_seed_and_their_mean_probabilities_are_scored(tmp_path, monkeypatch):
    from tandem import TorchClassifier, evaluation
    from tandem.cli import restrict
    from tandem.config import validate

    rng = np.random.RandomState(0)
    X = rng.normal(size=(160, 4)).astype("float32")
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0.3).astype(int) + (X[:, 1] > 0.3).astype(int)]
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    frame = pd.DataFrame(X, columns=list("pqrs")).assign(label=y)
    frame.iloc[:120].to_parquet(folder / "features_train.parquet", index=False)
    frame.iloc[120:].to_parquet(folder / "features_test.parquet", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    from stages import ensemble as stage
    from stages import train

    params = validate(toy_params())
    first = train.build_estimator(params.train, params.datasets["toy"].data, 120)
    first.fit(frame.iloc[:120, :4], y[:120]).save(tmp_path / "models/toy/model")
    keys = tuple(k.replace("{name}", "toy") for k in stage.PARAMS)
    stage.run(restrict(params, keys), "toy")

    members = [TorchClassifier.load(tmp_path / "models/toy/model")] + [
        TorchClassifier.load(tmp_path / f"models/toy/ensemble/member-{i}") for i in (1, 2)
    ]
    assert sorted(p.name for p in (tmp_path / "models/toy/ensemble").iterdir()) == [
        "member-1", "member-2"
    ]  # fmt: skip
    assert [m.random_state for m in members] == [0, 1, 2]
    X_test = frame.iloc[120:, :4]
    probas = [m.predict_proba(X_test) for m in members]
    assert not np.allclose(probas[0], probas[1])  # another seed, another model
    proba = np.mean(probas, axis=0)
    expected = evaluation.classification_metrics(
        y[120:], members[0].classes_[proba.argmax(1)], proba, members[0].classes_
    )
    scores = json.loads((tmp_path / "metrics/toy/ensemble.json").read_text())
    assert scores == pytest.approx(expected)
    assert set(scores) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "log_loss"}
    timings = json.loads((tmp_path / "logs/timings/ensemble@toy.json").read_text())
    assert timings["members"] == 3 and len(timings["fit_seconds"]) == 2


@pytest.mark.parametrize(
    ("ensemble", "message"),
    [
        ({"datasets": ["nope"]}, "ensemble.datasets: 'nope' is not in datasets"),
        ({"datasets": ["reg"]}, "ensemble.datasets: 'reg' is not a classification entry"),
        ({"datasets": ["toy", "toy"]}, "ensemble.datasets: 'toy' is listed twice"),
        ({"members": 1}, "ensemble.members"),
    ],
)
def test_bad_ensemble_params_are_refused_with_their_key(ensemble, message):
    from tandem.config import validate

    with pytest.raises(ValueError, match=message):
        validate(toy_params(**ensemble))


def test_an_image_entry_with_tta_averages_every_members_shifted_views(tmp_path, monkeypatch):
    """evaluate.tta (the entry's override): each member's TTA probabilities, averaged."""
    from sklearn.datasets import load_digits

    from tandem import TorchClassifier, evaluation
    from tandem.cli import restrict
    from tandem.config import validate

    X, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(X[:300] / 16, columns=[f"p{i}" for i in range(64)]).assign(label=y[:300])
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    frame.iloc[:240].to_parquet(folder / "features_train.parquet", index=False)
    frame.iloc[240:].to_parquet(folder / "features_test.parquet", index=False)
    raw = toy_params(members=2)
    image = {"modality": "image", "image_shape": [8, 8], "channels": 1}
    raw["datasets"]["toy"]["data"] |= image
    raw["datasets"]["toy"]["evaluate"] = {"tta": True}
    raw["datasets"]["toy"]["preprocess"] = {"scaler": "none"}  # TTA shifts raw pixels
    raw["datasets"]["toy"]["train"] = {"module": "auto", "max_epochs": 2}
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    from stages import ensemble as stage
    from stages import train

    params = validate(raw)
    p = params.train.model_copy(update={"module": "auto", "max_epochs": 2})
    first = train.build_estimator(p, params.datasets["toy"].data, 240)
    first.fit(frame.iloc[:240, :64], y[:240]).save(tmp_path / "models/toy/model")
    stage.run(restrict(params, tuple(k.replace("{name}", "toy") for k in stage.PARAMS)), "toy")

    folders = ("models/toy/model", "models/toy/ensemble/member-1")
    members = [TorchClassifier.load(tmp_path / folder) for folder in folders]
    X_test = frame.iloc[240:, :64]
    proba = np.mean([m.predict_proba_tta(X_test) for m in members], axis=0)
    plain = np.mean([m.predict_proba(X_test) for m in members], axis=0)
    scores = json.loads((tmp_path / "metrics/toy/ensemble.json").read_text())
    classes = members[0].classes_

    y_test = y[240:300]
    expected = evaluation.classification_metrics(y_test, classes[proba.argmax(1)], proba, classes)
    expected["accuracy_plain"] = float(np.mean(classes[plain.argmax(1)] == y_test))  # as eval.json
    assert scores == pytest.approx(expected)
    assert not np.allclose(proba, plain)  # TTA was on
