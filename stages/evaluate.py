"""evaluate: sklearn metrics on the test split, plot data for `dvc plots`, PNG figures.

Every entry: metrics/<name>/eval.json, the scores of the model the export stage serves (with
``evaluate.tta`` on, an image classifier's test-time augmented network; the plain network's
accuracy sits beside that headline as ``accuracy_plain``); for `dvc plots`,
plots/<chart>/<name>.json: predictions (actual and predicted per test row: a confusion matrix, or
a scatter for regression), curves (ROC and precision-recall per class, or residuals), learning
and validation (the model's training history); PNG figures in reports/<name>/ (learning curves,
confusion, the most confidently wrong test images). Labels are shown by the entry's
``label_names`` in natural order ("1", "2", ..., "10"), as predict and serve show them.
"""

import numpy as np

from stages.layout import layout
from tandem import TorchClassifier, TorchRegressor, config, data, evaluation, io

PARAMS = ("evaluate", "datasets.{name}.data", "datasets.{name}.evaluate",
          "datasets.{name}.label_names")  # fmt: skip


def learning(model, paths) -> None:
    """The model's training history: charts for `dvc plots` and a PNG."""
    losses, scores = evaluation.learning_rows(model.history_)
    io.write_json(paths.plot("learning"), losses)
    io.write_json(paths.plot("validation"), scores)
    evaluation.plot_learning_curves(  # the saved weights' epoch, as train.json's best_epoch
        model.history_, paths.report("learning_curves"), best_epoch=model.best_epoch_
    )


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    p, spec = config.recipe(params, name, "evaluate"), entry.data
    X, y = data.xy(io.read_parquet(paths.test_features), spec.target)
    y = y.to_numpy()
    if spec.task == "regression":
        model = TorchRegressor.load(paths.model)
        pred = model.predict(X)
        scaler = TorchRegressor.load_target_scaler(paths.model)
        if scaler is not None:  # the model learnt a standardised target
            pred = scaler.inverse_transform(pred.reshape(-1, 1)).ravel()
        io.write_json(paths.metrics("eval"), evaluation.regression_metrics(y, pred))
        points, residuals = evaluation.regression_rows(y, pred)
        io.write_json(paths.plot("predictions"), points)
        io.write_json(paths.plot("curves"), residuals)
        learning(model, paths)
        return
    model = TorchClassifier.load(paths.model)
    tta = p.tta and spec.modality == "image"  # what the export stage serves, from the same keys
    plain = model.predict_proba(X)
    proba = model.predict_proba_tta(X) if tta else plain
    pred = model.classes_[proba.argmax(axis=1)]
    scores = evaluation.classification_metrics(y, pred, proba, model.classes_)
    if tta:  # the headline is the served (augmented) model's; the network alone beside it
        scores["accuracy_plain"] = float(np.mean(model.classes_[plain.argmax(axis=1)] == y))
    io.write_json(paths.metrics("eval"), scores)
    names = entry.label_names or {}
    order = evaluation.natural_order(model.classes_)  # as predict and serve list the classes
    shown = [names.get(str(v), str(v)) for v in y], [names.get(str(v), str(v)) for v in pred]
    io.write_json(paths.plot("predictions"), evaluation.confusion_rows(*shown))
    shown_classes = [str(c) for c in evaluation.display_labels(model.classes_[order], names)]
    io.write_json(
        paths.plot("curves"), evaluation.curve_rows(shown[0], proba[:, order], shown_classes)
    )
    evaluation.plot_confusion(
        y, pred, model.classes_[order], paths.report("confusion"), label_names=names
    )
    learning(model, paths)
    if spec.modality == "image":
        images = io.read_parquet(paths.test).drop(columns=[spec.target, *spec.drop])
        evaluation.plot_worst_digits(
            images.to_numpy(), y, pred, proba, model.classes_, paths.report("worst"),
            n=p.n_worst, shape=(spec.channels, *spec.image_shape), label_names=names,
        )  # fmt: skip
