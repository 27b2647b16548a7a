"""cv: k-fold cross-validation of the configured USPS pipeline on the training split.

The preprocessor (preprocess section) and the TorchClassifier (train section, with cv.max_epochs)
are fitted together inside every StratifiedKFold fold, on a stratified subset of cv.max_rows rows
of the training split; each scorer's mean and std over the folds go to metrics/cv.json.
"""

from stages.layout import layout, timings
from stages.train import build_estimator
from tandem import console, data, features, io, search

PARAMS = ("cv", "train", "preprocess", "fetch.target")
METRICS = "metrics/cv.json"


def run(params, dataset: str | None = None) -> None:
    p = params.cv
    search.check_scoring(p.scoring, where="cv.scoring")
    estimator = build_estimator(params.train)
    if p.max_epochs is not None:
        estimator.set_params(max_epochs=p.max_epochs)
    prep = features.build_preprocessor(params.preprocess.scaler, params.preprocess.pca)
    pipeline = search.make_pipeline(prep, estimator)
    X, y = data.xy(io.read_parquet(layout(None).train), params.fetch.target)
    X, y = search.subsample(X, y, p.max_rows, p.seed)
    backend = p.parallel
    with (
        console.status(f"cross-validating: {p.folds} folds on {len(y)} rows"),
        search.parallel(backend.backend, scheduler=backend.scheduler, n_workers=backend.n_workers),
    ):
        scores = search.cross_validate_scores(
            pipeline, X, y, cv=search.folds(p.folds, p.seed), scoring=p.scoring,
            n_jobs=backend.n_jobs,
        )  # fmt: skip
    # wall-clock times differ on every run: kept out of the DVC metric (see stages/layout.py)
    io.write_json(timings("cv", None), {k: scores.pop(k) for k in ("fit_seconds", "wall_seconds")})
    io.write_json(METRICS, scores)
