"""baselines: classical sklearn models on the same features ("classical vs deep", in numbers)."""

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
from tandem import console, data, evaluation, io

PARAMS = ("baselines", "fetch.target")
TABULAR_PARAMS = (
    "tabular.baselines",
    "tabular.datasets.{name}.target",
    "tabular.datasets.{name}.task",
)


def build_models(p) -> dict:
    """Each USPS baseline from its params.yaml entry."""
    return {
        "logistic_regression": LogisticRegression(
            C=p.logistic_regression.C, max_iter=p.logistic_regression.max_iter
        ),
        "random_forest": RandomForestClassifier(
            n_estimators=p.random_forest.n_estimators,
            max_depth=p.random_forest.max_depth,
            n_jobs=-1,
            random_state=p.seed,
        ),
        # probabilities (for log loss and ROC AUC) by Platt scaling on cross-validated scores
        "svc": CalibratedClassifierCV(SVC(C=p.svc.C, gamma=p.svc.gamma), ensemble=False, cv=3),
        "hist_gradient_boosting": HistGradientBoostingClassifier(
            max_iter=p.hist_gradient_boosting.max_iter,
            learning_rate=p.hist_gradient_boosting.learning_rate,
            early_stopping=p.hist_gradient_boosting.early_stopping,
            random_state=p.seed,
        ),
    }


def build_tabular_models(p, task: str) -> dict:
    """Linear model, random forest and gradient boosting for a tabular task."""
    classify = task == "classification"
    forest = RandomForestClassifier if classify else RandomForestRegressor
    boosting = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
    linear = (
        LogisticRegression(C=p.linear.C, max_iter=p.linear.max_iter)
        if classify
        else Ridge(alpha=p.linear.alpha)
    )
    return {
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


def run(params, dataset: str | None = None) -> None:
    paths = layout(dataset)
    if dataset is None:
        target, task = params.fetch.target, "classification"
        models = build_models(params.baselines)
    else:
        spec = params.tabular.datasets[dataset]
        target, task = spec.target, spec.task
        models = build_tabular_models(params.tabular.baselines, task)
    X_train, y_train = data.xy(io.read_parquet(paths.train_features), target)
    X_test, y_test = data.xy(io.read_parquet(paths.test_features), target)
    results, seconds = {}, {}
    for name, model in models.items():
        with console.status(f"fitting {name}"):
            start = time.perf_counter()
            model.fit(X_train, y_train)
            seconds[name] = round(time.perf_counter() - start, 3)
        if "n_jobs" in model.get_params(deep=False):
            # a forest's parallel predict adds up its trees in the order the threads finish, so
            # the rounding (and tied probabilities in ROC AUC) changes run to run: one thread
            # adds them in tree order, and identical runs give identical metrics
            model.set_params(n_jobs=1)
        if task == "classification":
            proba = model.predict_proba(X_test)
            pred = model.classes_[proba.argmax(axis=1)]
            scores = evaluation.classification_metrics(
                y_test.to_numpy(), pred, proba, model.classes_
            )
        else:
            scores = evaluation.regression_metrics(y_test.to_numpy(), model.predict(X_test))
        results[name] = scores
    io.write_json(paths.baselines_metrics, results)
    io.write_json(timings("baselines", dataset), {"fit_seconds": seconds})
