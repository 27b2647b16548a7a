"""tune: hyperparameter search over one entry's (``tune.dataset``) preprocessor + TorchClassifier
on its training split.

The method (grid | random | halving_grid | halving_random), the fixed estimator params, the search
space (the estimator's own param names), the scorers and the refit metric all come from the tune
section. The space is checked against the estimator before anything is fitted. Outputs:
``cv_results_`` as CSV, the best candidate's scores as the metric (search/tune/best.json), one
plot per searched hyperparameter, and under models/tune the search's summary with the best
candidate's params and full estimator params (plus, with save_model, the refit preprocessor and
model). Candidates whose fits raise an error are counted in the summary (``n_failed``); when no
candidate succeeds the stage fails and writes nothing.
"""

import shutil
import time
from pathlib import Path

from stages.layout import layout, timings
from stages.preprocess import build_preprocessor
from tandem import TorchClassifier, config, console, data, features, io, search
from tandem.estimators import ROUTED_PREFIXES

PARAMS = ("tune", "preprocess", "datasets.{name}.data", "datasets.{name}.preprocess")
RESULTS = "search/tune/cv_results.csv"
BEST = "search/tune/best.json"
PLOTS = "reports/tune"
MODELS = "models/tune"


def build_estimator(p) -> TorchClassifier:
    """TorchClassifier with tune.estimator's fixed params (names checked first), seeded."""
    estimator = TorchClassifier(random_state=p.seed)
    fixed = dict(p.estimator)
    candidates = {k: [fixed[k]] for k in ROUTED_PREFIXES if k in fixed}
    search.check_names(list(fixed), estimator, where="tune.estimator", candidates=candidates)
    return estimator.set_params(**fixed)


def run(params, name: str) -> None:
    machine = search.parallel_settings()  # environment variables: they change no score
    p, entry = params.tune, params.datasets[name]
    spec = entry.data
    estimator = build_estimator(p)
    # the estimator's names are checked before any data is read (preprocess__* below, with it)
    search.build_space(
        {k: v for k, v in p.space.items() if not k.startswith("preprocess__")} or p.space,
        estimator, method=p.method, resource=p.halving_settings.get("resource"),
        pipeline=search.make_pipeline(features.build_preprocessor("none"), estimator),
    )  # fmt: skip
    frame = io.read_parquet(layout(name).train)
    X, y = data.tabular_xy(frame, target=spec.target, drop=spec.drop, task=spec.task)
    X, y = search.subsample(X, y, p.max_rows, p.seed)
    prep = build_preprocessor(config.recipe(params, name, "preprocess"), spec, X)
    pipeline = search.make_pipeline(prep, estimator)
    halving = p.halving_settings  # {} unless the method is a halving one
    space = search.build_space(
        p.space, estimator, method=p.method, pipeline=pipeline, resource=halving.get("resource"),
    )  # fmt: skip
    searcher = search.build_search(
        pipeline, space, method=p.method, cv=search.folds(p.folds, p.seed), scoring=p.scoring,
        refit_metric=p.refit, refit=False, n_jobs=machine["n_jobs"], n_iter=p.n_iter,
        seed=p.seed, **halving,
    )  # fmt: skip
    start = time.perf_counter()
    with (
        console.status(f"searching ({p.method}) on {len(y)} rows"),
        search.parallel(machine["backend"], scheduler=machine["scheduler"],
                        n_workers=machine["n_workers"]),
    ):  # fmt: skip
        failed = search.fit_search(searcher, X, y, refit_metric=p.refit)  # all failed: an error
        best_pipeline = search.refit_best(searcher, X, y, p.refit) if p.save_model else None
    seconds = time.perf_counter() - start
    if failed["n_failed"]:
        console.console.print(
            f"[yellow]note:[/yellow] {failed['n_failed']} of {failed['n_candidates']} candidates "
            f"failed ({failed['n_failed_fits']} of {failed['n_fits']} fits raised an error); "
            f"{BEST} counts them (failed_candidates)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip

    frame = search.results_frame(searcher)
    # wall-clock times differ on every run: kept out of DVC's outputs (see stages/layout.py)
    clock = [c for c in frame.columns if c.endswith(("_fit_time", "_score_time"))]
    io.write_json(
        timings("tune", name),
        {"search_seconds": round(seconds, 3), **{c: frame[c].tolist() for c in clock}},
    )
    io.write_text(RESULTS, frame.drop(columns=clock).to_csv(index=False))
    best = search.summary(searcher, method=p.method, refit_metric=p.refit)
    # the metric: the best candidate's scores, and how many candidates failed (a failed one has
    # no score: a search that lost candidates is not the search its space describes)
    io.write_json(BEST, {**best["scores"], "failed_candidates": best["n_failed"]})
    for old in Path(PLOTS).glob("*.png"):  # plots of parameters no longer searched
        old.unlink()
    search.plot_param_scores(frame, p.refit, PLOTS)
    fixed = {k: v for k, v in estimator.get_params(deep=False).items() if k != "callbacks"}
    tuned = {k: v for k, v in best["best_params"].items() if not k.startswith("preprocess__")}
    io.write_json(f"{MODELS}/search.json", {**best, "estimator": {**fixed, **tuned}})
    shutil.rmtree(f"{MODELS}/model", ignore_errors=True)  # a model of an earlier run
    Path(f"{MODELS}/preprocessor.skops").unlink(missing_ok=True)
    if best_pipeline is not None:
        features.save_transformer(best_pipeline[0], f"{MODELS}/preprocessor.skops")
        best_pipeline[-1].set_params(callbacks=None).save(f"{MODELS}/model")
