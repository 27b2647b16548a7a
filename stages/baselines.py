"""baselines: classical sklearn models on the same features ("classical vs deep", in numbers).

Every entry: a linear model (LogisticRegression or Ridge), a random forest and gradient boosting;
image entries add an RBF SVM on the pixels. The metric is each model's headline score (accuracy,
or R²): the number the torch model's eval.json is compared on, one column per baseline in
`dvc exp show`.
"""

import time

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.svm import SVC

from stages.layout import layout, timings
from tandem import config, console, data, evaluation, io

PARAMS = ("baselines", "datasets.{name}.data", "datasets.{name}.baselines")


def build_models(p, task: str, modality: str) -> dict:
    """The baselines of one entry, each from its params.yaml section."""
    classify = task == "classification"
    forest = RandomForestClassifier if classify else RandomForestRegressor
    boosting = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
    linear = (
        LogisticRegression(C=p.linear.C, max_iter=p.linear.max_iter)
        if classify
        else Ridge(alpha=p.linear.alpha)
    )
    models = {
        "logistic_regression" if classify else "ridge": linear,
        "random_forest": forest(
            n_estimators=p.random_forest.n_estimators,
            max_depth=p.random_forest.max_depth,
            n_jobs=-1,
            random_state=p.seed,
        ),
        "hist_gradient_boosting": boosting(
            max_iter=p.hist_gradient_boosting.max_iter,
            learning_rate=p.hist_gradient_boosting.learning_rate,
            early_stopping=p.hist_gradient_boosting.early_stopping,
            random_state=p.seed,
        ),
    }
    if modality == "image" and classify:
        # probabilities (for log loss and ROC AUC) by Platt scaling on cross-validated scores
        models["svc"] = CalibratedClassifierCV(
            SVC(C=p.svc.C, gamma=p.svc.gamma), ensemble=False, cv=3
        )
    return models


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    spec = entry.data
    models = build_models(
        config.recipe(params, name, "baselines"), spec.task, spec.modality
    )
    X_train, y_train = data.xy(io.read_parquet(paths.train_features), spec.target)
    X_test, y_test = data.xy(io.read_parquet(paths.test_features), spec.target)
    results, seconds = {}, {}
    for model_name, model in models.items():
        with console.status(f"fitting {model_name}"):
            start = time.perf_counter()
            model.fit(X_train, y_train)
            seconds[model_name] = round(time.perf_counter() - start, 3)
        if "n_jobs" in model.get_params(deep=False):
            # a forest's parallel predict adds up its trees in the order the threads finish, so
            # the rounding (and tied probabilities in ROC AUC) changes run to run: one thread
            # adds them in tree order, and identical runs give identical metrics
            model.set_params(n_jobs=1)
        if spec.task == "classification":
            proba = model.predict_proba(X_test)
            pred = model.classes_[proba.argmax(axis=1)]
            scores = evaluation.classification_metrics(
                y_test.to_numpy(), pred, proba, model.classes_
            )
        else:
            scores = evaluation.regression_metrics(y_test.to_numpy(), model.predict(X_test))
        key = evaluation.headline(scores)
        results[model_name] = {key: scores[key]}
    io.write_json(paths.metrics("baselines"), results)
    io.write_json(timings("baselines", name), {"fit_seconds": seconds})
