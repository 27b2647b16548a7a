"""cv: k-fold cross-validation of one entry's pipeline (``cv.dataset``) on its training split.

The preprocessor (the entry's preprocess section) and the torch estimator (its train section,
with cv.max_epochs) are fitted together inside every StratifiedKFold fold, on a stratified
subset of cv.max_rows rows; each scorer's mean and std over the folds go to search/cv.json.
"""

from stages.layout import layout, timings
from stages.preprocess import build_preprocessor
from stages.train import build_estimator
from tandem import config, console, data, io, search

PARAMS = (
    "cv", "train", "preprocess", "datasets.{name}.data", "datasets.{name}.train",
    "datasets.{name}.preprocess",
)  # fmt: skip
METRICS = "search/cv.json"


def run(params, name: str) -> None:
    machine = search.parallel_settings()  # environment variables: they change no score
    p, entry = params.cv, params.datasets[name]
    spec = entry.data
    search.check_scoring(p.scoring, where="cv.scoring")
    frame = io.read_parquet(layout(name).train)
    X, y = data.tabular_xy(frame, target=spec.target, drop=spec.drop, task=spec.task)
    X, y = search.subsample(X, y, p.max_rows, p.seed)
    estimator = build_estimator(config.recipe(params, name, "train"), spec, len(y))
    if p.max_epochs is not None:
        estimator.set_params(max_epochs=p.max_epochs)
    prep = build_preprocessor(config.recipe(params, name, "preprocess"), spec, X)
    pipeline = search.make_pipeline(prep, estimator)
    with (
        console.status(f"cross-validating {name}: {p.folds} folds on {len(y)} rows"),
        search.parallel(machine["backend"], scheduler=machine["scheduler"],
                        n_workers=machine["n_workers"]),
    ):  # fmt: skip
        scores = search.cross_validate_scores(
            pipeline, X, y, cv=search.folds(p.folds, p.seed), scoring=p.scoring,
            n_jobs=machine["n_jobs"],
        )  # fmt: skip
    # wall-clock times differ on every run: kept out of the DVC metric (see stages/layout.py), with
    # the counts, a record of the run rather than a score
    times = {k: scores.pop(k) for k in ("fit_seconds", "wall_seconds")}
    io.write_json(timings("cv", name), {**times, "folds": p.folds, "rows": int(len(y))})
    io.write_json(METRICS, scores)
