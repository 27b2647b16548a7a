"""Search spaces checked before any fit; searches, CV and their outputs on tiny synthetic data;
the dask backend gives the same results as the default one; the tune/cv stages alone."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, tool_env, usps_like
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from tandem import TorchClassifier, search, training
from tandem.config import validate
from tandem.search import SearchSpaceError


class CountFits:
    """A callback that counts fits: proves a refused space never started one."""

    fits = 0

    def on_train_begin(self, estimator):
        CountFits.fits += 1


def small_estimator(**kwargs) -> TorchClassifier:
    params = dict(module="mlp", module__hidden_sizes=[16], max_epochs=3, batch_size=32,
                  validation_fraction=0.0, random_state=0)  # fmt: skip
    return TorchClassifier(**{**params, **kwargs})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny fits: one torch thread is faster, and far faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def xy():
    X, y = make_classification(
        n_samples=150, n_features=12, n_informative=6, n_classes=3, random_state=0
    )
    return X.astype("float32"), np.array(["a", "b", "c"])[y]


# --------------------------------------------------------------------------- the space
def test_unknown_name_is_refused_before_any_fit_with_valid_names_listed():
    est = small_estimator(callbacks=[CountFits()])
    pipe = search.make_pipeline(StandardScaler(), est)
    with pytest.raises(SearchSpaceError) as info:
        space = search.build_space(
            {"module__activaton": ["relu"], "lr": [0.01]}, est, method="grid", pipeline=pipe
        )
        search.build_search(
            pipe, space, method="grid", cv=3, scoring=["accuracy"], refit_metric="accuracy"
        ).fit(np.zeros((9, 2)), [0, 1, 2] * 3)
    message = str(info.value)
    assert "'module__activaton'" in message and "Did you mean 'module__activation'" in message
    for valid in ("module__activation", "module__init", "module__hidden_sizes", "batch_size",
                  "max_epochs", "optimizer", "optimizer__weight_decay", "lr"):  # fmt: skip
        assert valid in message
    assert CountFits.fits == 0


def test_empty_space_and_empty_values_are_refused():
    est = small_estimator()
    for space in ({}, None):
        with pytest.raises(SearchSpaceError, match="empty"):
            search.build_space(space, est, method="grid")
    with pytest.raises(SearchSpaceError, match="batch_size: the list of values is empty"):
        search.build_space({"batch_size": []}, est, method="grid")
    with pytest.raises(SearchSpaceError, match="expected a list"):
        search.build_space({"batch_size": 32}, est, method="grid")


def test_routed_names_follow_every_candidate():
    est = small_estimator(optimizer="sgd")
    names = search.estimator_param_names(est)
    assert "optimizer__momentum" in names and "module__dropout" in names
    assert "lr_schedule__pct_start" not in names  # no schedule chosen
    # momentum is SGD's: refused when the space also tries Adam
    search.build_space({"optimizer__momentum": [0.9]}, est, method="grid")
    with pytest.raises(SearchSpaceError, match="optimizer__momentum"):
        search.build_space(
            {"optimizer": ["sgd", "adam"], "optimizer__momentum": [0.9]}, est, method="grid"
        )
    cnn = small_estimator(module="usps_cnn", lr_schedule="onecycle")
    names = search.estimator_param_names(cnn)
    assert {"module__activation", "module__init", "lr_schedule__pct_start"} <= set(names)
    assert "module__hidden_sizes" not in names


def test_tune_takes_every_routed_prefix_of_the_estimator(monkeypatch):
    """tune's checks accept every name TorchClassifier routes (set_params does), augment__*
    included; augmentation ranges need augment: affine, fixed or in the space."""
    monkeypatch.syspath_prepend(str(ROOT))
    from stages import tune

    TorchClassifier().set_params(augment__rotate=10)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"]["estimator"] = {"module": "mlp", "augment": "affine", "augment__translate": 0.1}
    raw["tune"]["space"] = {"augment__rotate": [0, 10], "augment__scale": [0.0, 0.1]}
    p = validate(raw).tune
    est = tune.build_estimator(p)  # the fixed params' names are checked here
    space = search.build_space(p.space, est, method=p.method)
    assert space["model__augment__rotate"] == [0, 10]
    # the augmentation chosen in the space instead
    est = TorchClassifier(module="mlp")
    search.build_space({"augment": ["affine"], "augment__rotate": [5]}, est, method="grid")
    assert "augment__shape" in search.estimator_param_names(est)  # also serves TTA
    for space in ({"augment__rotate": [5]}, {"augment": [None, "affine"], "augment__rotate": [5]}):
        with pytest.raises(SearchSpaceError, match="augment__\\* ranges need augment: affine"):
            search.build_space(space, est, method="grid")
    with pytest.raises(SearchSpaceError, match="unknown augment 'afine'.*'affine'"):
        search.build_space({"augment": ["afine"], "augment__rotate": [5]}, est, method="grid")


def test_space_rules_per_method():
    est = small_estimator()
    lr = {"distribution": "loguniform", "low": 1e-4, "high": 1e-1}
    with pytest.raises(SearchSpaceError, match="needs a list of values"):
        search.build_space({"lr": lr}, est, method="grid")
    space = search.build_space({"lr": lr}, est, method="random")
    assert 1e-4 <= space["model__lr"].rvs(random_state=0) <= 1e-1
    with pytest.raises(SearchSpaceError, match="distribution"):
        search.build_space({"lr": {"distribution": "normal", "low": 0, "high": 1}}, est,
                           method="random")  # fmt: skip
    with pytest.raises(SearchSpaceError, match="resource"):
        search.build_space({"max_epochs": [2, 4]}, est, method="halving_grid",
                           resource="max_epochs")  # fmt: skip
    with pytest.raises(SearchSpaceError, match="unknown search method"):
        search.build_space({"lr": [0.1]}, est, method="gird")
    with pytest.raises(SearchSpaceError, match="refit metric"):
        search.check_scoring(["accuracy"], "f1_macro")
    with pytest.raises(SearchSpaceError, match="accuracy"):
        search.check_scoring(["acuracy"])


# --------------------------------------------------------------------------- searches
def _search(xy, method, space, backend="loky", n_jobs=1, **kwargs):
    est = small_estimator()
    pipe = search.make_pipeline(StandardScaler(), est)
    grid = search.build_space(space, est, method=method, pipeline=pipe,
                              resource=kwargs.get("resource"))  # fmt: skip
    searcher = search.build_search(
        pipe, grid, method=method, cv=search.folds(3, 0), scoring=["accuracy", "neg_log_loss"],
        refit_metric="accuracy", n_jobs=n_jobs, n_iter=4, seed=0, **kwargs,
    )  # fmt: skip
    with search.parallel(backend, n_workers=2) as client:
        if client is None:
            searcher.fit(*xy)
        else:
            from dask.distributed import get_task_stream

            with get_task_stream(client) as stream:
                searcher.fit(*xy)
            assert len(stream.data) > 0, "no fit ran on the dask workers"
    return searcher


SPACE = {"module__activation": ["relu", "tanh"], "lr": [0.01, 0.003]}


def test_grid_search_outputs(xy, tmp_path):
    searcher = _search(xy, "grid", SPACE)
    best = search.summary(searcher, method="grid", refit_metric="accuracy")
    assert best["n_candidates"] == 4 and best["n_fits"] == 12
    assert set(best["best_params"]) == {"module__activation", "lr"}
    assert set(best["scores"]) == {"accuracy", "neg_log_loss"}
    json.dumps(best)  # plain Python values
    frame = search.results_frame(searcher)
    assert {"param_module__activation", "param_lr", "mean_test_accuracy"} <= set(frame.columns)
    assert search.searched_params(frame) == ["lr", "module__activation"]
    paths = search.plot_param_scores(frame, "accuracy", tmp_path)
    assert sorted(p.name for p in paths) == ["lr.png", "module__activation.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert searcher.best_estimator_.predict(xy[0][:3]).dtype.kind == "U"


def test_grid_without_refit_still_names_the_best(xy):
    est = small_estimator()
    pipe = search.make_pipeline(StandardScaler(), est)
    grid = search.build_space(SPACE, est, method="grid", pipeline=pipe)
    searcher = search.build_search(
        pipe,
        grid,
        method="grid",
        cv=3,
        refit=False,
        scoring=["accuracy", "f1_macro"],
        refit_metric="f1_macro",
    )
    searcher.fit(*xy)
    best = search.summary(searcher, method="grid", refit_metric="f1_macro")
    ranks = searcher.cv_results_["rank_test_f1_macro"]
    assert best["best_params"] == {
        k.removeprefix("model__"): v
        for k, v in searcher.cv_results_["params"][ranks.argmin()].items()
    }


@pytest.mark.parametrize(
    ("method", "extra"),
    [("halving_grid", {"resource": "max_epochs", "max_resources": 4, "min_resources": 1,
                       "factor": 2}),
     ("halving_random", {"resource": "n_samples", "factor": 2})],
)  # fmt: skip
def test_successive_halving(xy, method, extra, tmp_path):
    searcher = _search(xy, method, SPACE, **extra)
    best = search.summary(searcher, method=method, refit_metric="accuracy")
    assert best["n_iterations"] >= 2 and best["refit_metric"] == "accuracy"
    assert best["n_resources"] == sorted(best["n_resources"])
    frame = search.results_frame(searcher)
    assert search.plot_param_scores(frame, "accuracy", tmp_path)


def test_random_search_plots_a_distribution_as_score_against_value(xy, tmp_path):
    lr = {"distribution": "loguniform", "low": 1e-4, "high": 1e-1}
    est = small_estimator(max_epochs=1)
    pipe = search.make_pipeline(StandardScaler(), est)
    space = search.build_space({"lr": lr}, est, method="random", pipeline=pipe)
    searcher = search.build_search(
        pipe, space, method="random", cv=2, scoring=["accuracy"], refit_metric="accuracy",
        refit=False, n_iter=8, seed=0,
    )  # fmt: skip
    searcher.fit(*xy)
    frame = search.results_frame(searcher)
    assert frame["param_lr"].nunique() == 8
    (path,) = search.plot_param_scores(frame, "accuracy", tmp_path)
    assert path.name == "lr.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_cross_validate_scores(xy):
    pipe = search.make_pipeline(StandardScaler(), small_estimator())
    scores = search.cross_validate_scores(
        pipe, *xy, cv=search.folds(4, 0), scoring=["accuracy", "f1_macro", "neg_log_loss"]
    )
    assert set(scores) == {"accuracy", "f1_macro", "neg_log_loss", "fit_seconds", "wall_seconds"}
    for name in ("accuracy", "f1_macro"):
        assert 0 < scores[name]["mean"] <= 1 and scores[name]["std"] >= 0
    assert scores["neg_log_loss"]["mean"] < 0


def test_subsample_is_stratified(xy):
    X, y = search.subsample(*xy, 60, 0)
    assert len(y) == 60 and set(np.unique(y)) == {"a", "b", "c"}
    assert search.subsample(*xy, None, 0)[0] is xy[0]


@pytest.mark.slow
def test_dask_backend_gives_the_default_backends_results(xy):
    """A LocalCluster of 2 worker processes: same best params, same scores, bit for bit."""
    default = _search(xy, "grid", SPACE)
    dask = _search(xy, "grid", SPACE, backend="dask", n_jobs=-1)
    assert dask.best_params_ == default.best_params_
    for key in ("mean_test_accuracy", "mean_test_neg_log_loss", "split0_test_neg_log_loss"):
        np.testing.assert_array_equal(dask.cv_results_[key], default.cv_results_[key])
    assert dask.best_score_ == default.best_score_


def test_auto_device_is_each_workers_first_visible_gpu(monkeypatch):
    """One dask worker per GPU with CUDA_VISIBLE_DEVICES=<i>: "auto" must mean the worker's
    current device (index-less "cuda" = cuda:0 of what it sees), never a fixed global index."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = training.resolve_device("auto")
    assert device.type == "cuda" and device.index is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training.resolve_device("auto").type == "cpu"


def test_bad_backend_is_refused():
    with pytest.raises(ValueError, match="dask"):
        with search.parallel("dusk"):
            pass


def test_threading_backend_is_refused_with_the_reason(project):
    """Threads share torch's global RNG: parallel fits in threads are not reproducible."""
    with pytest.raises(ValueError, match="threads share torch's global random number generator"):
        with search.parallel("threading"):
            pass
    for stage in ("cv", "tune"):
        proc = tandem([stage], project, TANDEM_BACKEND="threading")
        assert proc.returncode == 1
        assert "TANDEM_BACKEND: backend 'threading' is refused" in " ".join(proc.stderr.split())
    assert not (project / "search").exists() and not (project / "metrics").exists()


# --------------------------------------------------------------------------- params and stages
def test_full_grid_params_file():
    """params/full_grid.yaml: the full grid, 243 candidates x 3 folds = 729 fits."""
    overlay = yaml.safe_load((ROOT / "params" / "full_grid.yaml").read_text())
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"] = {**raw["tune"], **overlay["tune"]}
    params = validate(raw)
    space = params.tune.space
    assert len(space) == 5 and all(len(v) == 3 for v in space.values())
    assert search.n_candidates(space) == 243 and 243 * params.tune.folds == 729
    est = TorchClassifier(**params.tune.estimator)
    search.build_space(space, est, method=params.tune.method)
    # the defaults name the same five keys, so `dvc exp run -S tune.space.<key>=[...]` works
    assert set(raw["tune"]["space"]) == set(yaml.safe_load((ROOT / "params.yaml").read_text())
                                            ["tune"]["space"])  # fmt: skip


def tandem(args, cwd, **env):
    return subprocess.run(
        ["tandem", *args],
        cwd=cwd,
        env=tool_env(OMP_NUM_THREADS="1", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tune_stage_refuses_a_bad_space_before_reading_data(project):
    proc = tandem(["tune", "--set", "tune.space.module__activaton=[relu]"], project)
    assert proc.returncode == 1, proc.stderr
    assert "module__activaton" in proc.stderr and "module__activation" in proc.stderr
    assert "data/usps/train.parquet" not in proc.stderr  # refused before the data is read
    proc = tandem(["tune", "--set", "tune.space={}"], project)
    assert proc.returncode == 1 and "tune.space is empty" in proc.stderr
    assert not (project / "search").exists() and not (project / "metrics").exists()


def test_cv_and_tune_stages_alone(project):
    usps_like(150, classes=3, at=(project / "data/usps/train.parquet",))
    cv_args = ["cv", "--set", "train.module=mlp", "--set", "cv.max_epochs=2",
               "--set", "cv.folds=3", "--set", "cv.max_rows=120"]  # fmt: skip
    proc = tandem(cv_args, project, TANDEM_N_JOBS="2")
    assert proc.returncode == 0, proc.stderr
    two_jobs = (project / "search" / "cv.json").read_bytes()
    proc = tandem(cv_args, project, TANDEM_N_JOBS="1")  # a machine setting: the same scores
    assert proc.returncode == 0, proc.stderr
    assert (project / "search" / "cv.json").read_bytes() == two_jobs
    cv = json.loads((project / "search" / "cv.json").read_text())
    assert set(cv) == {"accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss"}  # scores only
    assert set(cv["accuracy"]) == {"mean", "std"}
    record = json.loads((project / "logs" / "timings" / "cv@usps.json").read_text())
    assert record["folds"] == 3 and record["rows"] == 120

    proc = tandem(["tune", "--set", "tune.space.max_epochs=[2]", "--set", "tune.save_model=true",
                   "--set", "tune.max_rows=120"], project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((project / "search" / "tune" / "best.json").read_text())
    assert scores.pop("failed_candidates") == 0
    assert set(scores) == {"accuracy", "f1_macro"} and set(scores["accuracy"]) == {"mean", "std"}
    best = json.loads((project / "models" / "tune" / "search.json").read_text())
    assert best["n_candidates"] == 4 and best["n_fits"] == 12
    assert best["scores"] == scores
    frame = pd.read_csv(project / "search" / "tune" / "cv_results.csv")
    assert len(frame) == 4 and "param_module__activation" in frame
    plots = sorted(p.name for p in (project / "reports" / "tune").glob("*.png"))
    assert plots == ["batch_size.png", "module__activation.png"]
    saved = json.loads((project / "models" / "tune" / "search.json").read_text())
    assert saved["estimator"]["module"] == "mlp"
    assert saved["estimator"]["batch_size"] == best["best_params"]["batch_size"]
    model = TorchClassifier.load(project / "models" / "tune" / "model")
    assert model.get_params()["module__activation"] == best["best_params"]["module__activation"]
    assert (project / "models" / "tune" / "preprocessor.skops").is_file()


def test_parallel_settings_come_from_the_environment():
    assert search.parallel_settings({}) == {"backend": "loky", "n_jobs": 1, "n_workers": 2,
                                            "scheduler": None}  # fmt: skip
    env = {"TANDEM_BACKEND": "dask", "TANDEM_N_JOBS": "-1", "TANDEM_DASK_WORKERS": "4",
           "TANDEM_DASK_SCHEDULER": "tcp://h:8786"}  # fmt: skip
    assert search.parallel_settings(env) == {"backend": "dask", "n_jobs": -1, "n_workers": 4,
                                             "scheduler": "tcp://h:8786"}  # fmt: skip
    for bad, named in ((("TANDEM_N_JOBS", "two"), "TANDEM_N_JOBS='two' is not an integer"),
                       (("TANDEM_N_JOBS", "0"), "TANDEM_N_JOBS=0"),
                       (("TANDEM_BACKEND", "dusk"), "TANDEM_BACKEND='dusk'")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(named)):
            search.parallel_settings(dict([bad]))
