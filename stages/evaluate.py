"""evaluate: sklearn metrics on the test split, plot data for `dvc plots`, PNG figures (USPS)."""

from stages.layout import layout
from tandem import TorchClassifier, TorchRegressor, data, evaluation, io

PARAMS = ("evaluate", "fetch.target")
TABULAR_PARAMS = ("tabular.datasets.{name}.target", "tabular.datasets.{name}.task")
CONFUSION = "metrics/confusion.json"
ROC_DIR = "metrics/roc"  # one JSON file of ROC points per class
FIGURES = {
    "confusion": "reports/confusion.png",
    "worst": "reports/worst_digits.png",
    "curves": "reports/learning_curves.png",
}


def run(params, dataset: str | None = None) -> None:
    paths = layout(dataset)
    if dataset is not None:
        spec = params.tabular.datasets[dataset]
        X, y = data.xy(io.read_parquet(paths.test_features), spec.target)
        io.write_json(paths.eval_metrics, score(paths, spec.task, X, y.to_numpy()))
        return
    target = params.fetch.target
    model = TorchClassifier.load(paths.model)
    X, y = data.xy(io.read_parquet(paths.test_features), target)
    images, _ = data.xy(io.read_parquet(paths.test), target)  # raw pixels, same rows as X
    y = y.to_numpy()
    proba = model.predict_proba_tta(X) if params.evaluate.tta else model.predict_proba(X)
    pred = model.classes_[proba.argmax(axis=1)]
    io.write_json(
        paths.eval_metrics, evaluation.classification_metrics(y, pred, proba, model.classes_)
    )
    names = params.evaluate.label_names or {}
    shown = [names.get(str(v), str(v)) for v in y], [names.get(str(v), str(v)) for v in pred]
    io.write_json(CONFUSION, evaluation.confusion_rows(*shown))
    roc = evaluation.roc_rows(y, proba, model.classes_)
    for label in model.classes_:
        io.write_json(f"{ROC_DIR}/class_{label}.json", [r for r in roc if r["class"] == str(label)])
    order = sorted(model.classes_, key=lambda label: names.get(str(label), str(label)))
    evaluation.plot_confusion(y, pred, order, FIGURES["confusion"], label_names=names)
    evaluation.plot_worst_digits(
        images.to_numpy(), y, pred, proba, model.classes_, FIGURES["worst"],
        n=params.evaluate.n_worst,
        label_names=names,
    )  # fmt: skip
    evaluation.plot_learning_curves(model.history_, FIGURES["curves"])


def score(paths, task: str, X, y) -> dict:
    """Test metrics of a tabular model: classification as for USPS; regression MSE/RMSE/MAE/R²."""
    if task == "classification":
        model = TorchClassifier.load(paths.model)
        proba = model.predict_proba(X)
        pred = model.classes_[proba.argmax(axis=1)]
        return evaluation.classification_metrics(y, pred, proba, model.classes_)
    model = TorchRegressor.load(paths.model)
    pred = model.predict(X)
    scaler = TorchRegressor.load_target_scaler(paths.model)
    if scaler is not None:  # the model learnt a standardised target
        pred = scaler.inverse_transform(pred.reshape(-1, 1)).ravel()
    return evaluation.regression_metrics(y, pred)
