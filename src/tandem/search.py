"""Cross-validation and hyperparameter search of torch estimators inside sklearn pipelines.

Why a layer of its own: the ``cv`` and ``tune`` stages, the benchmark and library users all need the
same three things around scikit-learn's own ``cross_validate`` / ``*SearchCV``:

- a search space written with the torch estimator's parameter names (``module__activation``,
  ``optimizer``, ``batch_size``) and checked against what the estimator and its module accept
  *before any fit starts*, so a typo costs a second, not an hour of fits;
- parallelism through joblib, on local processes or on a dask.distributed cluster (``backend:
  dask``: a scheduler address, or a LocalCluster of N worker processes), with no change to the
  search itself;
- results as files: ``cv_results_`` as CSV, the best candidate as JSON, one plot per searched
  hyperparameter showing how the score spreads over its values.

The torch estimator sits in a ``Pipeline`` as the step named ``model`` after the preprocessor
(step ``preprocess``), so the preprocessor is fitted inside each fold (no leakage); space keys are
the estimator's own names and are prefixed here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_validate,
    train_test_split,
)
from sklearn.pipeline import Pipeline

from tandem import models, training
from tandem.estimators import AUGMENTS, ROUTED_PREFIXES, TorchEstimatorBase
from tandem.estimators.tables import SUPPLIED, TABLES
from tandem.evaluation import save_figure
from tandem.models import nearest_hint

METHODS = ("grid", "random", "halving_grid", "halving_random")
BACKENDS = ("loky", "dask")
SCHEDULER_ENV = "TANDEM_DASK_SCHEDULER"
STEP = "model"  # the torch estimator's step in a search pipeline
PREPROCESS_STEP = "preprocess"
DISTRIBUTIONS = ("uniform", "loguniform", "randint")


class SearchSpaceError(ValueError):
    """The search space (or the fixed estimator params) names or gives something invalid."""


class SearchFailedError(ValueError):
    """No candidate of a search succeeded, so there is no best one to report."""


# --------------------------------------------------------------------------- names
def _augment_arguments(spec: Any) -> list[str]:
    """``augment__*`` names: with no augmentation only the image shape (it also serves TTA)."""
    if spec is None:
        return ["shape"]
    if spec not in AUGMENTS:
        raise SearchSpaceError(
            f"unknown augment {spec!r}; choose null or one of {list(AUGMENTS)}."
            + nearest_hint(str(spec), list(AUGMENTS))
        )
    return list(training.Augment.__dataclass_fields__)


def _routed_arguments(prefix: str, spec: Any) -> list[str] | None:
    if prefix == "augment":
        return _augment_arguments(spec)
    if prefix == "module":
        if isinstance(spec, str):
            return models.module_arguments(spec)
        if isinstance(spec, torch.nn.Module):
            return []  # a ready-made module takes no module__* arguments
        return models.keyword_arguments(spec, SUPPLIED["module"])
    table = TABLES[prefix]
    if spec is None:
        return []  # no schedule: lr_schedule__* has nothing to go to
    if isinstance(spec, str):
        if spec not in table:
            raise SearchSpaceError(
                f"unknown {prefix} {spec!r}; choose one of {sorted(table)}."
                + nearest_hint(spec, list(table))
            )
        spec = table[spec]
    return models.keyword_arguments(spec, SUPPLIED[prefix])


def estimator_param_names(
    estimator: BaseEstimator, candidates: Mapping[str, Sequence[Any]] | None = None
) -> list[str]:
    """Every parameter name ``estimator`` accepts, routed ``module__*`` etc. included.

    ``candidates`` maps routed prefixes (``ROUTED_PREFIXES``: ``module``, ``optimizer``, ...) to
    the values a search will try; a routed name is valid only if every candidate accepts it. A
    candidate that takes ``**kwargs`` accepts anything, shown as ``module__*``.
    """
    if not isinstance(estimator, TorchEstimatorBase):
        return sorted(estimator.get_params(deep=True))
    params = estimator.get_params(deep=False)
    names = sorted(k for k in params if "__" not in k)
    candidates = dict(candidates or {})
    for prefix in ROUTED_PREFIXES:
        default = params[prefix]
        if prefix == "criterion" and default is None:
            default = estimator._default_criterion
        specs = candidates.get(prefix, [default])
        accepted: set[str] | None = None
        for spec in specs:
            if prefix == "criterion" and spec is None:
                spec = estimator._default_criterion
            args = _routed_arguments(prefix, spec)
            if args is None:
                continue
            accepted = set(args) if accepted is None else accepted & set(args)
        if accepted is None:
            names.append(f"{prefix}__*")
        else:
            names.extend(f"{prefix}__{arg}" for arg in sorted(accepted))
    return names


def _is_valid(name: str, valid: list[str]) -> bool:
    if name in valid:
        return True
    prefix, sep, rest = name.partition("__")
    return bool(sep and rest) and f"{prefix}__*" in valid


def check_names(
    names: Sequence[str],
    estimator: BaseEstimator,
    *,
    where: str,
    candidates: Mapping[str, Sequence[Any]] | None = None,
    pipeline: Pipeline | None = None,
) -> None:
    """Refuse any name ``estimator`` (or, for ``preprocess__*``, ``pipeline``) does not accept.

    The message lists every offending name with the nearest valid one, and all valid names.
    """
    valid = estimator_param_names(estimator, candidates)
    pipeline_names = sorted(pipeline.get_params(deep=True)) if pipeline is not None else []
    pre = [n for n in pipeline_names if n.startswith(f"{PREPROCESS_STEP}__")]
    bad = [n for n in names if not (_is_valid(n, valid) or n in pre)]
    if bad:
        described = "; ".join(f"{n!r}{nearest_hint(n, valid + pre)}" for n in bad)
        extra = f" (and preprocessor names: {', '.join(pre)})" if pre else ""
        ranges = set(training.Augment.__dataclass_fields__) - {"shape"}
        if any(n.startswith("augment__") and n.partition("__")[2] in ranges for n in bad):
            described += " (augment__* ranges need augment: affine, fixed or in the space)"
        raise SearchSpaceError(
            f"{where}: unknown parameter name(s) {described}\n"
            f"Valid names for {type(estimator).__name__}: {', '.join(valid)}{extra}"
        )


# --------------------------------------------------------------------------- the space
def _distribution(key: str, spec: Mapping[str, Any], where: str):
    from scipy import stats

    kind = spec.get("distribution")
    if kind not in DISTRIBUTIONS or set(spec) != {"distribution", "low", "high"}:
        raise SearchSpaceError(
            f"{where}.{key}: a distribution is {{distribution: {'|'.join(DISTRIBUTIONS)}, "
            f"low: ..., high: ...}}; got {dict(spec)!r}"
        )
    low, high = spec["low"], spec["high"]
    if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
        raise SearchSpaceError(f"{where}.{key}: needs numbers low < high; got {low!r}, {high!r}")
    if kind == "loguniform":
        if low <= 0:
            raise SearchSpaceError(f"{where}.{key}: loguniform needs low > 0; got {low!r}")
        return stats.loguniform(low, high)
    if kind == "randint":
        return stats.randint(int(low), int(high) + 1)
    return stats.uniform(low, high - low)


def build_space(
    space: Mapping[str, Any],
    estimator: BaseEstimator,
    *,
    method: str,
    where: str = "tune.space",
    pipeline: Pipeline | None = None,
    resource: str | None = None,
) -> dict[str, Any]:
    """Check ``space`` and turn it into a param grid / distributions for the pipeline.

    Keys are ``estimator``'s names (``module__activation``) or the pipeline's ``preprocess__*``
    names; values are non-empty lists (every method) or ``{distribution, low, high}`` (random
    methods). Nothing is fitted: a bad space fails here, before the first fit.
    """
    if method not in METHODS:
        raise SearchSpaceError(
            f"unknown search method {method!r}; choose one of {list(METHODS)}."
            + nearest_hint(method, METHODS)
        )
    if not isinstance(space, Mapping) or not space:
        raise SearchSpaceError(
            f"{where} is empty: give at least one parameter with a list of values, "
            f"e.g. {{module__activation: [relu, tanh]}}"
        )
    candidates = {k: v for k, v in space.items() if k in ROUTED_PREFIXES and isinstance(v, list)}
    check_names(list(space), estimator, where=where, candidates=candidates, pipeline=pipeline)
    if resource is not None and resource != "n_samples" and resource in space:
        raise SearchSpaceError(
            f"{where}.{resource}: successive halving uses {resource!r} as its resource, so it "
            "cannot also be searched; remove it from the space or use resource n_samples"
        )
    random = method in ("random", "halving_random")
    out: dict[str, Any] = {}
    for key, values in space.items():
        name = key if key.startswith(f"{PREPROCESS_STEP}__") else f"{STEP}__{key}"
        if isinstance(values, Mapping):
            if not random:
                raise SearchSpaceError(
                    f"{where}.{key}: method {method!r} needs a list of values; distributions "
                    "are for random and halving_random"
                )
            out[name] = _distribution(key, values, where)
        elif isinstance(values, list | tuple):
            if not values:
                raise SearchSpaceError(f"{where}.{key}: the list of values is empty")
            out[name] = list(values)
        else:
            raise SearchSpaceError(
                f"{where}.{key}: expected a list of values (e.g. [{values!r}]); got {values!r}"
            )
    return out


def n_candidates(space: Mapping[str, Any]) -> int:
    """Candidates of an exhaustive grid over ``space`` (lists only)."""
    return int(np.prod([len(v) for v in space.values()], dtype=np.int64))


def check_scoring(scoring: Sequence[str], refit: str | None = None, where: str = "scoring") -> None:
    if not scoring:
        raise SearchSpaceError(f"{where}: give at least one scorer, e.g. [accuracy]")
    known = get_scorer_names()
    bad = [s for s in scoring if s not in known]
    if bad:
        hints = "; ".join(f"{s!r}{nearest_hint(s, known)}" for s in bad)
        raise SearchSpaceError(f"{where}: unknown scorer(s) {hints} (see sklearn.metrics)")
    if refit is not None and refit not in scoring:
        raise SearchSpaceError(f"refit metric {refit!r} must be one of {where} {list(scoring)}")


# --------------------------------------------------------------------------- building blocks
def make_pipeline(preprocessor: Any, estimator: BaseEstimator) -> Pipeline:
    """preprocessor + torch estimator, fitted together in every fold."""
    return Pipeline([(PREPROCESS_STEP, preprocessor), (STEP, estimator)])


def subsample(X, y, max_rows: int | None, seed: int):
    """A stratified subset of at most ``max_rows`` rows (all rows when None or enough)."""
    if max_rows is None or max_rows >= len(y):
        return X, y
    X_sub, _, y_sub, _ = train_test_split(X, y, train_size=max_rows, stratify=y, random_state=seed)
    return X_sub, y_sub


def folds(n_splits: int, seed: int) -> StratifiedKFold:
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def build_search(
    pipeline: Pipeline,
    space: dict[str, Any],
    *,
    method: str,
    cv: Any,
    scoring: Sequence[str],
    refit_metric: str,
    refit: bool = True,
    n_jobs: int | None = None,
    n_iter: int = 10,
    seed: int = 0,
    resource: str = "n_samples",
    factor: int = 3,
    min_resources: int | str | None = None,
    max_resources: int | str | None = None,
    verbose: int = 0,
):
    """The sklearn search object for ``method`` over a space from ``build_space``.

    Successive halving scores one metric (``refit_metric``); with a resource other than
    ``n_samples`` (e.g. ``max_epochs``) the largest budget defaults to the estimator's value.
    """
    check_scoring(scoring, refit_metric)
    common = dict(cv=cv, n_jobs=n_jobs, verbose=verbose, error_score=np.nan)
    if method == "grid":
        return GridSearchCV(
            pipeline, space, scoring=list(scoring), refit=refit_metric if refit else False,
            **common,
        )  # fmt: skip
    if method == "random":
        return RandomizedSearchCV(
            pipeline, space, n_iter=n_iter, random_state=seed, scoring=list(scoring),
            refit=refit_metric if refit else False, **common,
        )  # fmt: skip
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV

    if resource != "n_samples":
        name = f"{STEP}__{resource}"
        if name not in pipeline.get_params():
            raise SearchSpaceError(
                f"halving resource {resource!r} is not an estimator parameter; use n_samples "
                "or one like max_epochs"
            )
        resource = name
        if max_resources is None:
            max_resources = int(pipeline.get_params()[name])
    halving = dict(
        resource=resource,
        factor=factor,
        max_resources="auto" if max_resources is None else max_resources,
        scoring=refit_metric,
        refit=refit,
        random_state=seed,
        **common,
    )
    if method == "halving_grid":
        return HalvingGridSearchCV(
            pipeline, space, min_resources=min_resources or "exhaust", **halving
        )
    return HalvingRandomSearchCV(
        pipeline, space, n_candidates=n_iter, min_resources=min_resources or "smallest", **halving
    )


# --------------------------------------------------------------------------- parallelism
# joblib's threading backend runs fits side by side in one process, where they draw their initial
# weights, shuffles and dropout masks from torch's one global generator in whatever order the
# threads interleave: the same search would give other scores each run. Processes each have theirs.
THREADING_REFUSED = (
    "backend 'threading' is refused: threads share torch's global random number generator, so "
    "parallel fits would not be reproducible; use 'loky' (local processes) or 'dask'"
)
# How the cv and tune stages run their fits is a machine setting, not a param: the scores are the
# same however they run (every fit seeds itself), so these change no result and rerun nothing.
PARALLEL_ENV = {
    "backend": "TANDEM_BACKEND",  # loky (local processes, the default) | dask
    "n_jobs": "TANDEM_N_JOBS",  # fits at a time; -1: all cores (dask: all worker threads)
    "n_workers": "TANDEM_DASK_WORKERS",  # LocalCluster processes (dask, no scheduler)
}


def parallel_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``backend``, ``n_jobs``, ``scheduler`` and ``n_workers`` of the searches' fits, from the
    environment (``PARALLEL_ENV`` and ``TANDEM_DASK_SCHEDULER``); a bad value names its
    variable."""
    env = os.environ if env is None else env
    backend = env.get(PARALLEL_ENV["backend"], "loky")
    if backend == "threading":
        raise ValueError(f"{PARALLEL_ENV['backend']}: {THREADING_REFUSED}")
    if backend not in BACKENDS:
        raise ValueError(f"{PARALLEL_ENV['backend']}={backend!r}: choose one of {list(BACKENDS)}")
    numbers = {}
    for key, default, low in (("n_jobs", 1, -1), ("n_workers", 2, 1)):
        text = env.get(PARALLEL_ENV[key], str(default))
        try:
            numbers[key] = int(text)
        except ValueError:
            raise ValueError(f"{PARALLEL_ENV[key]}={text!r} is not an integer") from None
        if numbers[key] < low or numbers[key] == 0:
            raise ValueError(f"{PARALLEL_ENV[key]}={text}: use a positive number (n_jobs: or -1)")
    return {"backend": backend, "scheduler": env.get(SCHEDULER_ENV) or None, **numbers}


@contextlib.contextmanager
def parallel(
    backend: str = "loky", *, scheduler: str | None = None, n_workers: int = 2
) -> Iterator[Any]:
    """joblib's backend for the search's ``n_jobs``; ``dask`` connects to or starts a cluster.

    dask: the scheduler address comes from ``scheduler``, else the ``TANDEM_DASK_SCHEDULER``
    environment variable, else a LocalCluster of ``n_workers`` processes (one thread each) is
    started here and closed afterwards. Yields the dask Client (None for other backends).
    """
    import joblib

    if backend == "threading":
        raise ValueError(THREADING_REFUSED)
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown parallel backend {backend!r}; choose one of {list(BACKENDS)}."
            + nearest_hint(backend, BACKENDS)
        )
    if backend != "dask":
        with joblib.parallel_backend(backend):
            yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError(
            "backend 'dask' needs dask.distributed: pip install 'tandem[dask]'"
        ) from exc
    import logging

    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    with contextlib.ExitStack() as stack:
        if address:
            client = stack.enter_context(Client(address))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
        stack.enter_context(joblib.parallel_backend("dask"))
        yield client


# --------------------------------------------------------------------------- cross-validation
def cross_validate_scores(
    pipeline: Pipeline,
    X,
    y,
    *,
    cv: Any,
    scoring: Sequence[str],
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """``cross_validate`` with several scorers -> {scorer: {mean, std}} plus timings."""
    check_scoring(scoring, where="cv.scoring")
    start = time.perf_counter()
    out = cross_validate(
        pipeline, X, y, cv=cv, scoring=list(scoring), n_jobs=n_jobs, error_score="raise"
    )
    wall = time.perf_counter() - start
    result: dict[str, Any] = {}
    for name in scoring:
        values = np.asarray(out[f"test_{name}"], dtype=float)
        result[name] = {"mean": float(values.mean()), "std": float(values.std())}
    result["fit_seconds"] = {
        "mean": float(np.mean(out["fit_time"])),
        "std": float(np.std(out["fit_time"])),
    }
    result["wall_seconds"] = round(wall, 3)
    return result


# --------------------------------------------------------------------------- results
def best_index(search, refit_metric: str | None = None) -> int:
    """The best candidate: ``best_index_`` when sklearn set it, else rank 1 of ``refit_metric``
    (a multi-metric search run without refit)."""
    if hasattr(search, "best_index_"):
        return int(search.best_index_)
    results = search.cv_results_
    key = f"rank_test_{refit_metric}"
    if key not in results:
        key = "rank_test_score"
    return int(np.asarray(results[key]).argmin())


def _metric_names(search) -> list[str]:
    keys = search.cv_results_.keys()
    return sorted(k[len("mean_test_") :] for k in keys if k.startswith("mean_test_"))


def _short(name: str) -> str:
    return name[len(STEP) + 2 :] if name.startswith(f"{STEP}__") else name


def results_frame(search) -> pd.DataFrame:
    """``cv_results_`` as a flat frame: one row per candidate (and halving iteration); param
    columns named as in the space (``param_module__activation``), values as plain Python."""
    results = dict(search.cv_results_)
    params = results.pop("params")
    frame = pd.DataFrame(
        {
            (f"param_{_short(k[len('param_') :])}" if k.startswith("param_") else k): (
                [v for v in np.ma.getdata(col)] if k.startswith("param_") else col
            )
            for k, col in results.items()
        }
    )
    frame["params"] = [repr({_short(k): _plain(v) for k, v in p.items()}) for p in params]
    for col in frame.columns:
        if col.startswith("param_"):
            frame[col] = [_plain(v) for v in frame[col]]
    return frame


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _score_key(search, refit_metric: str) -> str:
    """The cv_results_ name of the refit score: the metric's own, or "score" (halving)."""
    return refit_metric if f"mean_test_{refit_metric}" in search.cv_results_ else "score"


def failures(search, refit_metric: str) -> dict[str, int]:
    """Candidates (and CV fits) that failed. A fit that raised scores ``error_score`` (NaN), and
    a candidate with a failed fit has no mean score: it failed. Halving counts each candidate
    once, however many rounds it ran."""
    results = search.cv_results_
    key = _score_key(search, refit_metric)
    splits = np.column_stack(
        [np.asarray(results[f"split{i}_test_{key}"], dtype=float) for i in range(search.n_splits_)]
    )
    failed_fits = ~np.isfinite(splits)
    resource = getattr(search, "resource", None)  # halving: a param that grows by round
    ids = [repr(sorted((k, v) for k, v in p.items() if k != resource)) for p in results["params"]]
    failed = {ids[i] for i in np.flatnonzero(failed_fits.any(axis=1))}
    return {
        "n_candidates": len(set(ids)),
        "n_failed": len(failed),
        "n_fits": int(failed_fits.size),
        "n_failed_fits": int(failed_fits.sum()),
    }


def _failure_message(where: str, counts: dict[str, int]) -> str:
    return (
        f"{where}: {counts['n_failed']} of {counts['n_candidates']} candidates failed "
        f"({counts['n_failed_fits']} of {counts['n_fits']} cross-validation fits raised an "
        "error; a candidate with a failed fit has no score)"
    )


def fit_search(search, X, y, *, refit_metric: str, where: str = "tune") -> dict[str, int]:
    """Fit ``search`` (built with ``refit=False``) and count its failed candidates (see
    ``failures``); a search none of whose candidates succeeded is a ``SearchFailedError``."""
    try:
        search.fit(X, y)
    except ValueError as exc:
        if "fits failed" not in str(exc):  # scikit-learn's error when every fit raised
            raise
        details = str(exc).partition("Below are more details about the failures:")[2]
        raise SearchFailedError(
            f"{where}: every candidate failed (all their cross-validation fits raised an error), "
            f"so there is no best one:\n{(details or str(exc)).strip()}"
        ) from None
    counts = failures(search, refit_metric)
    best = best_index(search, refit_metric)
    if not np.isfinite(search.cv_results_[f"mean_test_{_score_key(search, refit_metric)}"][best]):
        raise SearchFailedError(
            _failure_message(where, counts) + ", so there is no best one; scikit-learn's "
            "FitFailedWarning above shows the errors"
        )
    return counts


def refit_best(search, X, y, refit_metric: str):
    """The best candidate's pipeline fitted on all of ``X, y``: what ``refit=True`` would give
    as ``best_estimator_``, fitted only once the search is known to have a best candidate."""
    from sklearn.base import clone

    params = search.cv_results_["params"][best_index(search, refit_metric)]
    return clone(search.estimator).set_params(**clone(params, safe=False)).fit(X, y)


def summary(search, *, method: str, refit_metric: str, seconds: float | None = None) -> dict:
    """The best candidate's params and scores, the size of the search and how many of its
    candidates (and CV fits) failed."""
    index = best_index(search, refit_metric)
    results = search.cv_results_
    scores = {
        name: {
            "mean": float(results[f"mean_test_{name}"][index]),
            "std": float(results[f"std_test_{name}"][index]),
        }
        for name in _metric_names(search)
    }
    if "score" in scores and refit_metric not in scores:  # halving: one metric, named "score"
        scores = {refit_metric: scores.pop("score")}
    best = {_short(k): _plain(v) for k, v in results["params"][index].items()}
    n_splits = search.n_splits_
    out = {
        "method": method,
        "refit_metric": refit_metric,
        "best_score": scores[refit_metric]["mean"],
        "best_std": scores[refit_metric]["std"],
        "best_params": best,
        "scores": scores,
        "n_candidates": int(len(results["params"])),
        "n_fits": int(len(results["params"]) * n_splits),
        "n_splits": int(n_splits),
    }
    if "iter" in results:  # successive halving
        out["n_iterations"] = int(np.max(results["iter"]) + 1)
        out["n_candidates"] = int(np.sum(np.asarray(results["iter"]) == 0))
        out["n_resources"] = [int(r) for r in search.n_resources_]
    counts = failures(search, refit_metric)
    out["n_failed"] = counts["n_failed"]
    out["n_failed_fits"] = counts["n_failed_fits"]
    if seconds is not None:
        out["search_seconds"] = round(seconds, 3)
    return out


def searched_params(frame: pd.DataFrame) -> list[str]:
    """Space keys that took more than one value in the search."""
    return [
        c[len("param_") :]
        for c in frame.columns
        if c.startswith("param_") and frame[c].map(repr).nunique() > 1
    ]


def plot_param_scores(
    frame: pd.DataFrame, metric: str, folder: str | os.PathLike[str]
) -> list[Path]:
    """One PNG per searched hyperparameter: the spread of mean CV ``metric`` over candidates
    for each of its values (violins where a value has several candidates, else boxes), with
    every candidate as a dot; a numeric parameter drawn from a distribution (more than 6 values)
    gets score against value instead. Halving searches use their first iteration, where every
    candidate was scored on the same budget."""
    from matplotlib.figure import Figure

    if "iter" in frame.columns:
        frame = frame[frame["iter"] == frame["iter"].min()]
    column = f"mean_test_{metric}" if f"mean_test_{metric}" in frame else "mean_test_score"
    written = []
    for key in searched_params(frame):
        if _continuous(frame[f"param_{key}"]):
            written.append(_plot_continuous(frame, key, column, metric, folder))
            continue
        labels = list(dict.fromkeys(frame[f"param_{key}"].map(str)))
        groups = [
            frame.loc[frame[f"param_{key}"].map(str) == label, column].dropna().to_numpy()
            for label in labels
        ]
        fig = Figure(figsize=(max(4.0, 1.1 * len(labels) + 2), 3.6), layout="constrained")
        ax = fig.add_subplot()
        positions = np.arange(1, len(labels) + 1)
        drawable = [len(g) >= 2 and np.ptp(g) > 0 for g in groups]
        if all(drawable):
            ax.violinplot(groups, positions=positions, showmedians=True)
        else:
            ax.boxplot([g if len(g) else [np.nan] for g in groups], positions=positions)
        rng = np.random.default_rng(0)
        for pos, values in zip(positions, groups, strict=True):
            jitter = rng.uniform(-0.08, 0.08, size=len(values))
            ax.scatter(pos + jitter, values, s=10, color="black", alpha=0.6, zorder=3)
        ax.set_xticks(positions, labels, rotation=30 if max(map(len, labels)) > 8 else 0)
        ax.set_xlabel(key)
        ax.set_ylabel(f"mean CV {metric}")
        ax.set_title(f"{metric} by {key} ({len(frame)} candidates)")
        written.append(save_figure(fig, Path(folder) / f"{key}.png", dpi=110))
    return written


def _continuous(values: pd.Series) -> bool:
    numeric = all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in values
    )
    return numeric and values.nunique() > 6


def _plot_continuous(
    frame: pd.DataFrame, key: str, column: str, metric: str, folder: str | os.PathLike[str]
) -> Path:
    from matplotlib.figure import Figure

    x = frame[f"param_{key}"].astype(float).to_numpy()
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x, frame[column].to_numpy(), s=14, color="black", alpha=0.7)
    if x.min() > 0 and x.max() / x.min() >= 20:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"mean CV {metric}")
    ax.set_title(f"{metric} by {key} ({len(frame)} candidates)")
    return save_figure(fig, Path(folder) / f"{key}.png", dpi=110)
