"""evaluate: sklearn metrics on the test split, plot data for `dvc plots`, PNG figures."""

from stages.preprocess import TEST_FEATURES
from stages.split import TEST
from stages.train import MODEL
from tandem import TorchClassifier, data, evaluation, io

PARAMS = ("evaluate", "fetch.target")
METRICS = "metrics/eval.json"
CONFUSION = "metrics/confusion.json"
ROC_DIR = "metrics/roc"  # one JSON file of ROC points per class
FIGURES = {
    "confusion": "reports/confusion.png",
    "worst": "reports/worst_digits.png",
    "curves": "reports/learning_curves.png",
}


def run(params) -> None:
    target = params.fetch.target
    model = TorchClassifier.load(MODEL)
    X, y = data.xy(io.read_parquet(TEST_FEATURES), target)
    images, _ = data.xy(io.read_parquet(TEST), target)  # raw pixels, same rows as X
    y = y.to_numpy()
    proba = model.predict_proba(X)
    pred = model.classes_[proba.argmax(axis=1)]
    io.write_json(METRICS, evaluation.classification_metrics(y, pred, proba, model.classes_))
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
