"""baselines: classical sklearn models on the same features ("classical vs deep", in numbers)."""

import time

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from stages.preprocess import TEST_FEATURES, TRAIN_FEATURES
from tandem import console, data, evaluation, io

PARAMS = ("baselines", "fetch.target")
METRICS = "metrics/baselines.json"


def build_models(p) -> dict:
    """Each baseline from its params.yaml entry."""
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


def run(params) -> None:
    target = params.fetch.target
    X_train, y_train = data.xy(io.read_parquet(TRAIN_FEATURES), target)
    X_test, y_test = data.xy(io.read_parquet(TEST_FEATURES), target)
    results = {}
    for name, model in build_models(params.baselines).items():
        with console.status(f"fitting {name}"):
            start = time.perf_counter()
            model.fit(X_train, y_train)
            fit_seconds = time.perf_counter() - start
            proba = model.predict_proba(X_test)
        pred = model.classes_[proba.argmax(axis=1)]
        scores = evaluation.classification_metrics(y_test.to_numpy(), pred, proba, model.classes_)
        results[name] = {**scores, "fit_seconds": round(fit_seconds, 3)}
    io.write_json(METRICS, results)
