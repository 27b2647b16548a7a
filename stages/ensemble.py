"""ensemble: a seed ensemble of one entry (``ensemble.datasets``), class probabilities averaged.

Member 0 is the train stage's model; members 1..K-1 are trained with the same recipe (the entry's
train section) and seeds ``train.seed + i``, and saved in models/<name>/ensemble/member-<i>. The
test scores go to metrics/<name>/ensemble.json, with eval.json's keys (test-time augmentation
as evaluate.tta says).
"""

import numpy as np

from stages.layout import layout, timings
from stages.train import build_estimator
from tandem import TorchClassifier, config, console, data, evaluation, io

# evaluate.tta alone: the figures' setting (n_worst) does not retrain the members
PARAMS = (
    "ensemble.members", "train", "evaluate.tta", "datasets.{name}.data", "datasets.{name}.train",
    "datasets.{name}.evaluate",
)  # fmt: skip


def run(params, name: str) -> None:
    entry, paths, members = params.datasets[name], layout(name), params.ensemble.members
    p, spec = config.recipe(params, name, "train"), entry.data
    if spec.task != "classification":
        raise ValueError(f"ensemble: {name!r} is a {spec.task} entry; ensembles average classes")
    X, y = data.xy(io.read_parquet(paths.train_features), spec.target)
    models, seconds = [TorchClassifier.load(paths.model)], []
    with io.atomic_dir(paths.ensemble) as folder:  # every member lands, or none
        for i in range(1, members):
            with console.status(f"ensemble {name}: training member {i + 1} of {members}"):
                est = build_estimator(p.model_copy(update={"seed": p.seed + i}), spec, len(X))
                est.fit(X, y)
            est.save(folder / f"member-{i}")
            models.append(est)
            seconds.append(round(est.fit_seconds_, 3))
    X_test, y_test = data.xy(io.read_parquet(paths.test_features), spec.target)
    tta = bool(config.recipe(params, name, "evaluate").tta)  # null: not an image classifier
    plain = np.mean([m.predict_proba(X_test) for m in models], axis=0)
    proba = np.mean([m.predict_proba_tta(X_test) for m in models], axis=0) if tta else plain
    classes = models[0].classes_
    scores = evaluation.classification_metrics(y_test, classes[proba.argmax(1)], proba, classes)
    if tta:  # as eval.json: the plain networks' averaged accuracy beside the augmented one
        scores["accuracy_plain"] = float(np.mean(classes[plain.argmax(1)] == y_test.to_numpy()))
    io.write_json(paths.metrics("ensemble"), scores)
    io.write_json(timings("ensemble", name), {"fit_seconds": seconds, "members": members})
