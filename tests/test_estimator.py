"""TorchClassifier / TorchRegressor behaviour: sklearn composition, persistence, training loop.

Synthetic data and tiny networks only; every fit here takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_classification, make_regression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from tandem import TorchClassifier, TorchRegressor, training
from tandem.training import DVCLiveCallback, resolve_device

# Small, fast settings shared by most tests.
FAST = dict(
    module="mlp", module__hidden_sizes=(16,), lr=0.02, batch_size=32, max_epochs=5, random_state=0
)


@pytest.fixture(scope="module")
def blobs():
    """Three well separated classes, 4 features."""
    X, y = make_blobs(n_samples=120, centers=3, n_features=4, cluster_std=1.0, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=100, n_features=5, n_targets=3, noise=0.1, random_state=0)
    return X, y / np.abs(y).max()


def state_dict_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class TinyNet(nn.Module):
    """A custom module class: the estimator passes n_features and n_outputs."""

    def __init__(self, n_features: int, n_outputs: int, width: int = 8):
        super().__init__()
        self.width = width
        self.net = nn.Sequential(
            nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, n_outputs)
        )

    def forward(self, x):
        return self.net(x)


class Recorder:
    """A callback that records every hook call and snapshots the weights after each epoch."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at = stop_at
        self.calls: list[str] = []
        self.records: list[dict] = []
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_begin(self, est):
        self.calls.append("begin")
        self.initial = {k: v.clone() for k, v in est.module_.state_dict().items()}

    def on_epoch_end(self, est, record):
        self.calls.append("epoch")
        self.records.append(dict(record))
        self.states[record["epoch"]] = {k: v.clone() for k, v in est.module_.state_dict().items()}
        return self.stop_at is not None and record["epoch"] >= self.stop_at

    def on_train_end(self, est):
        self.calls.append("end")


# --------------------------------------------------------------------------- sklearn composition
def test_pipeline_fit_score(blobs):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), TorchClassifier(**{**FAST, "max_epochs": 30}))
    pipe.fit(X, y)
    assert pipe.score(X, y) >= 0.9
    proba = pipe.predict_proba(X)
    assert proba.shape == (len(X), 3)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert_array_equal(pipe[-1].classes_, [0, 1, 2])
    # nested routing through the pipeline reaches the module
    pipe.set_params(torchclassifier__module__hidden_sizes=(5, 7)).fit(X, y)
    widths = [m.out_features for m in pipe[-1].module_ if isinstance(m, nn.Linear)]
    assert widths == [5, 7, 3]


def test_grid_search_over_lr_and_hidden_sizes(blobs):
    X, y = blobs
    grid = {"lr": [1e-4, 0.03], "module__hidden_sizes": [(4,), (12, 6)]}
    search = GridSearchCV(TorchClassifier(**{**FAST, "max_epochs": 10}), grid, n_jobs=2, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == {"lr", "module__hidden_sizes"}
    assert len(search.cv_results_["params"]) == 4
    # a tiny learning rate cannot separate the blobs in 10 epochs; the large one can
    assert search.best_params_["lr"] == 0.03
    best = search.best_estimator_
    assert best.get_params()["module__hidden_sizes"] == search.best_params_["module__hidden_sizes"]
    widths = [m.out_features for m in best.module_ if isinstance(m, nn.Linear)]
    assert widths == [*search.best_params_["module__hidden_sizes"], 3]
    assert best.n_iter_ == 10 and best.n_features_in_ == 4  # refit on all the data
    assert search.score(X, y) >= 0.9


def test_cross_val_score(blobs):
    X, y = blobs
    pipe = Pipeline(
        [("scale", StandardScaler()), ("clf", TorchClassifier(**{**FAST, "max_epochs": 20}))]
    )
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.min() >= 0.85


def test_clone_keeps_routed_params():
    est = TorchClassifier(**FAST, optimizer__weight_decay=1e-4)
    params = clone(est).get_params()
    assert params["module__hidden_sizes"] == (16,)
    assert params["optimizer__weight_decay"] == 1e-4
    assert params == est.get_params()


# --------------------------------------------------------------------------- labels and input types
def test_string_labels_round_trip(blobs):
    X, y = blobs
    names = np.array(["cat", "dog", "emu"])[y]
    est = TorchClassifier(**{**FAST, "max_epochs": 20}).fit(X, names)
    assert_array_equal(est.classes_, ["cat", "dog", "emu"])
    pred = est.predict(X)
    assert pred.dtype.kind in "UO"
    assert set(pred) <= {"cat", "dog", "emu"}
    assert (pred == names).mean() >= 0.9
    assert est.score(X, names) >= 0.9
    # labels stored as Python objects (a pandas column of strings) also come back as they were
    est_obj = TorchClassifier(**FAST).fit(X, pd.Series(names, dtype=object))
    assert list(est_obj.classes_) == ["cat", "dog", "emu"]
    assert isinstance(est_obj.predict(X[:3])[0], str)


def test_dataframe_input_sets_feature_names(blobs):
    X, y = blobs
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = TorchClassifier(**FAST).fit(df, y)
    assert_array_equal(est.feature_names_in_, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(df.rename(columns={"d": "e"}))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        from_array = est.predict(X)
    assert_array_equal(est.predict(df), from_array)
    assert not hasattr(TorchClassifier(**FAST).fit(X, y), "feature_names_in_")


def test_float64_input_trains_float32_module(blobs):
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X.astype(np.float64), y)
    assert all(p.dtype == torch.float32 for p in est.module_.parameters())
    assert_array_equal(
        est.predict_proba(X.astype(np.float64)), est.predict_proba(X.astype(np.float32))
    )


# --------------------------------------------------------------------------- sample weights
def test_sample_weights_change_the_fit():
    X, y = make_classification(n_samples=80, n_features=5, flip_y=0.2, random_state=1)
    w = np.where(y == 1, 10.0, 0.1)
    plain = TorchClassifier(**FAST).fit(X, y)
    weighted = TorchClassifier(**FAST).fit(X, y, sample_weight=w)
    p_plain, p_weighted = plain.predict_proba(X)[:, 1], weighted.predict_proba(X)[:, 1]
    assert not np.allclose(p_plain, p_weighted, atol=1e-3)
    assert p_weighted.mean() > p_plain.mean()  # heavy class-1 weights pull towards class 1
    ones = TorchClassifier(**FAST).fit(X, y, sample_weight=np.ones(len(y)))
    assert_allclose(ones.predict_proba(X)[:, 1], p_plain, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("Estimator", [TorchClassifier, TorchRegressor])
def test_sample_weight_equals_repetition(Estimator):
    """Integer weights train the same model as repeated rows (one full batch, no validation)."""
    if Estimator is TorchClassifier:
        X, y = make_classification(
            n_samples=40, n_features=5, n_informative=3, n_classes=3, random_state=0
        )
    else:
        X, y = make_regression(n_samples=40, n_features=5, n_targets=2, random_state=0)
        y = y / np.abs(y).max()
    w = np.random.RandomState(0).randint(0, 4, size=len(y))
    assert (w == 0).any() and (w > 1).any()
    params = dict(FAST, batch_size=256, max_epochs=30, validation_fraction=0)
    weighted = Estimator(**params).fit(X, y, sample_weight=w)
    repeated = Estimator(**params).fit(np.repeat(X, w, axis=0), np.repeat(y, w, axis=0))
    out = "predict_proba" if Estimator is TorchClassifier else "predict"
    a, b = getattr(weighted, out)(X), getattr(repeated, out)(X)
    assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    unweighted = Estimator(**params).fit(X, y)
    assert not np.allclose(getattr(unweighted, out)(X), b, rtol=1e-3)


def test_bad_sample_weights_refused(blobs):
    X, y = blobs
    w = np.ones(len(y))
    w[3] = -1
    with pytest.raises(ValueError, match="non-negative"):
        TorchClassifier(**FAST).fit(X, y, sample_weight=w)
    # weight only on rows that the validation slice takes: the training rows weigh nothing
    est = TorchClassifier(**{**FAST, "validation_fraction": 0.5})
    valid_rows = est._split(y, training.seed_from(0))[1]
    w = np.zeros(len(y))
    w[valid_rows] = 1.0
    with pytest.raises(ValueError, match="sums to zero over the training rows"):
        est.fit(X, y, sample_weight=w)


# --------------------------------------------------------------------------- early stopping
def test_patience_restores_best_epoch_weights():
    # noisy labels, many features, few rows: the validation loss dips, then rises (overfitting)
    X, y = make_classification(
        n_samples=120, n_features=20, n_informative=4, flip_y=0.3, random_state=0
    )
    rec = Recorder()
    est = TorchClassifier(
        module__hidden_sizes=(128,), lr=0.003, batch_size=16, max_epochs=60, patience=4,
        validation_fraction=0.3, random_state=0, callbacks=[rec],
    ).fit(X, y)  # fmt: skip
    losses = [h["valid_loss"] for h in est.history_]
    assert est.n_iter_ < 60  # stopped early
    assert est.n_iter_ == len(est.history_) == len(rec.states)
    assert est.best_epoch_ == est.history_[int(np.argmin(losses))]["epoch"]
    assert est.best_epoch_ == est.n_iter_ - 4  # no improvement in the last `patience` epochs
    assert 1 < est.best_epoch_  # the restore is not trivially the first epoch
    final = est.module_.state_dict()
    best = rec.states[est.best_epoch_]
    assert all(torch.equal(final[k], best[k]) for k in final)
    last = rec.states[est.n_iter_]
    assert not all(torch.equal(final[k], last[k]) for k in final)


def test_no_patience_runs_all_epochs(blobs):
    X, y = blobs
    est = TorchClassifier(**{**FAST, "max_epochs": 4, "patience": None}).fit(X, y)
    assert est.n_iter_ == 4 and est.best_epoch_ == 4


# --------------------------------------------------------------------------- persistence
def test_save_load_classifier_string_labels(blobs, tmp_path):
    X, y = blobs
    names = np.array(["cat", "dog", "emu"])[y]
    est = TorchClassifier(**FAST).fit(pd.DataFrame(X, columns=list("abcd")), names)
    path = est.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = TorchClassifier.load(path)
    assert_array_equal(loaded.classes_, est.classes_)
    assert_array_equal(loaded.feature_names_in_, est.feature_names_in_)
    df = pd.DataFrame(X, columns=list("abcd"))
    assert_array_equal(loaded.predict(df), est.predict(df))
    assert_array_equal(loaded.predict_proba(df), est.predict_proba(df))
    without_timing = [{k: v for k, v in r.items() if k != "seconds"} for r in est.history_]
    assert loaded.history_ == without_timing and loaded.best_epoch_ == est.best_epoch_
    assert loaded.get_params()["module__hidden_sizes"] == [16]
    assert state_dict_equal(loaded.module_, est.module_)
    # saving again replaces the directory atomically, and only one directory remains
    est.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with pytest.raises(ValueError, match="TorchClassifier, not a TorchRegressor"):
        TorchRegressor.load(path)


def test_save_load_regressor_multi_output(regression, tmp_path):
    X, y = regression
    est = TorchRegressor(**FAST).fit(X, y)
    loaded = TorchRegressor.load(est.save(tmp_path / "reg"))
    assert loaded.predict(X).shape == (len(X), 3)
    assert_array_equal(loaded.predict(X), est.predict(X))
    single = TorchRegressor(**FAST).fit(X, y[:, 0])
    loaded1 = TorchRegressor.load(single.save(tmp_path / "reg1"))
    assert loaded1.predict(X).shape == (len(X),)
    assert_array_equal(loaded1.predict(X), single.predict(X))


def test_save_keeps_numpy_scalar_params(blobs, tmp_path):
    """Params from a numpy grid (np.int64, np.float32) are stored, not dropped to defaults."""
    X, y = blobs
    est = TorchClassifier(**{**FAST, "batch_size": np.int64(16), "lr": np.float32(0.01)}).fit(X, y)
    loaded = TorchClassifier.load(est.save(tmp_path / "m"))
    assert loaded.batch_size == 16
    assert loaded.lr == pytest.approx(0.01)


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"with open({self.marker!r}, 'w') as f: f.write('pwned')",))


@pytest.mark.parametrize("victim", ["weights.safetensors", "config.json"])
def test_load_refuses_pickle_payload(blobs, tmp_path, victim):
    X, y = blobs
    path = TorchClassifier(**FAST).fit(X, y).save(tmp_path / "model")
    # the payload is live: unpickling it really does write its marker
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()
    marker = tmp_path / "marker"
    for protocol in (0, pickle.HIGHEST_PROTOCOL):
        (path / victim).write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
        with pytest.raises(ValueError, match=victim.replace(".", r"\.")):
            TorchClassifier.load(path)
        assert not marker.exists()
    # a torch.save checkpoint (a pickle inside a zip) is refused too
    torch.save({"x": _Payload(marker)}, path / victim)
    with pytest.raises(ValueError):
        TorchClassifier.load(path)
    assert not marker.exists()


def test_load_refuses_incomplete_or_foreign_config(blobs, tmp_path):
    import json

    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, y)
    path = est.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    for key in ("n_outputs", "classes"):
        broken = {k: v for k, v in config.items() if k != key}
        (path / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="config.json"):
            TorchClassifier.load(path)
    (path / "config.json").write_text(json.dumps({**config, "format": "other/1"}))
    with pytest.raises(ValueError, match="not a tandem model config"):
        TorchClassifier.load(path)
    (path / "config.json").write_text(json.dumps(config))
    assert_array_equal(TorchClassifier.load(path).predict(X), est.predict(X))  # restored: loads
    (path / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        TorchClassifier.load(path)


def test_load_of_custom_module_requires_module(blobs, tmp_path):
    X, y = blobs
    est = TorchClassifier(module=TinyNet, module__width=6, lr=0.02, max_epochs=5, random_state=0)
    est.fit(X, y)
    path = est.save(tmp_path / "custom")
    with pytest.raises(ValueError, match="module="):
        TorchClassifier.load(path)
    loaded = TorchClassifier.load(path, module=TinyNet)
    assert isinstance(loaded.module_, TinyNet) and loaded.module_.width == 6
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_load_warns_about_params_that_were_not_saved(blobs, tmp_path):
    X, y = blobs
    est = TorchClassifier(**{**FAST, "optimizer": torch.optim.RMSprop}).fit(X, y)
    with pytest.warns(UserWarning, match=r"\['optimizer'\] were classes or callables"):
        loaded = TorchClassifier.load(est.save(tmp_path / "m"))
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lost, nothing to say
        TorchClassifier.load(TorchClassifier(**FAST).fit(X, y).save(tmp_path / "plain"))


def test_a_loaded_model_builds_its_optimizer_only_when_it_trains_on(blobs, tmp_path):
    """Loading for prediction builds no optimizer (torch's optimizers import torch._dynamo,
    about 2 s per evaluate/export/predict); partial_fit, pickling and saving still work."""
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, y)
    loaded = TorchClassifier.load(est.save(tmp_path / "m"))
    assert loaded.optimizer_ is None
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    again = pickle.loads(pickle.dumps(loaded))  # pickles with no optimizer state
    assert again.optimizer_ is None
    n = loaded.n_iter_
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == n + 1 and isinstance(loaded.optimizer_, torch.optim.Optimizer)
    assert loaded.optimizer_.state  # the new optimizer took steps


def test_pickle_and_joblib_round_trip(blobs, regression, tmp_path):
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, np.array(["a", "b", "c"])[y])
    again = pickle.loads(pickle.dumps(est))
    assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    assert_array_equal(again.predict(X), est.predict(X))
    joblib.dump(est, tmp_path / "est.joblib")
    assert_array_equal(joblib.load(tmp_path / "est.joblib").predict_proba(X), est.predict_proba(X))
    # the unpickled estimator keeps training from where it was
    n = again.n_iter_
    again.partial_fit(X, np.array(["a", "b", "c"])[y])
    assert again.n_iter_ == n + 1
    Xr, yr = regression
    reg = TorchRegressor(**FAST).fit(Xr, yr)
    assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(Xr), reg.predict(Xr))


def test_getstate_stores_tensors_on_cpu(blobs):
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, y)
    state = est.__getstate__()
    assert "device_" not in state
    assert state["module_"] is not est.module_
    tensors = list(state["module_"].state_dict().values())
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    opt = state["optimizer_"]["state"]
    opt_tensors = [t for s in opt.values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert opt_tensors and all(t.device.type == "cpu" for t in opt_tensors)
    assert est.device_.type == "cpu"  # the live estimator is untouched


def test_model_fitted_for_cuda_loads_on_cpu(blobs, tmp_path, monkeypatch):
    """A model whose device param is 'cuda' unpickles/loads onto the CPU when CUDA is absent."""
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, y)
    est.set_params(device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for again in (pickle.loads(pickle.dumps(est)), TorchClassifier.load(est.save(tmp_path / "m"))):
        assert again.device_.type == "cpu"
        assert all(t.device.type == "cpu" for t in again.module_.state_dict().values())
        assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_load_maps_every_tensor_to_cpu(tmp_path):
    X, y = make_classification(n_samples=64, n_features=6, random_state=0)
    # batch norm adds buffers (running stats), which must move too
    est = TorchClassifier(**{**FAST, "module__batch_norm": True}).fit(X, y)
    loaded = TorchClassifier.load(est.save(tmp_path / "bn"), device="cpu")
    assert loaded.device_ == torch.device("cpu")
    assert list(loaded.module_.buffers())
    assert all(t.device.type == "cpu" for t in loaded.module_.parameters())
    assert all(t.device.type == "cpu" for t in loaded.module_.buffers())
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_unpickles_and_loads_on_cpu(blobs, tmp_path):
    X, y = blobs
    est = TorchClassifier(**{**FAST, "device": "cuda"}).fit(X, y)
    assert next(est.module_.parameters()).device.type == "cuda"
    loaded = TorchClassifier.load(est.save(tmp_path / "m"), device="cpu")
    assert all(t.device.type == "cpu" for t in loaded.module_.state_dict().values())
    assert_allclose(loaded.predict_proba(X), est.predict_proba(X), rtol=1e-4, atol=1e-6)
    state = pickle.loads(pickle.dumps(est)).__getstate__()
    assert all(t.device.type == "cpu" for t in state["module_"].state_dict().values())


# --------------------------------------------------------------------------- devices and seeding
def test_resolve_device(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("cuda", fallback=True) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def test_fit_on_unavailable_cuda_is_refused(blobs, monkeypatch):
    X, y = blobs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        TorchClassifier(**{**FAST, "device": "cuda"}).fit(X, y)


def test_random_state_is_bit_for_bit_repeatable(blobs):
    X, y = blobs
    # dropout, shuffling and the validation split all draw random numbers
    params = dict(FAST, module__dropout=0.3, validation_fraction=0.25, batch_size=16)
    rec_a, rec_b, rec_c = Recorder(), Recorder(), Recorder()
    torch.manual_seed(1)  # the global RNG state before fit must not matter
    a = TorchClassifier(**params, callbacks=[rec_a]).fit(X, y)
    torch.manual_seed(2)
    b = TorchClassifier(**params, callbacks=[rec_b]).fit(X, y)
    assert all(torch.equal(rec_a.initial[k], rec_b.initial[k]) for k in rec_a.initial)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert state_dict_equal(a.module_, b.module_)
    assert [h["valid_loss"] for h in a.history_] == [h["valid_loss"] for h in b.history_]
    c = TorchClassifier(**{**params, "random_state": 1}, callbacks=[rec_c]).fit(X, y)
    assert not all(torch.equal(rec_a.initial[k], rec_c.initial[k]) for k in rec_a.initial)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    assert not state_dict_equal(a.module_, c.module_)
    # the global torch RNG is left as it was
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TorchClassifier(**params).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


def test_seed_from():
    assert training.seed_from(7) == training.seed_from(7) == 7
    assert training.seed_from(np.int64(2**32 + 3)) == 3
    assert training.seed_from(np.random.RandomState(0)) == training.seed_from(
        np.random.RandomState(0)
    )


# --------------------------------------------------------------------------- partial_fit
def test_partial_fit_classifier(blobs):
    X, y = blobs
    keep = y != 2  # the first batch lacks class 2
    est = TorchClassifier(**FAST)
    est.partial_fit(X[keep], y[keep], classes=[0, 1, 2])
    assert_array_equal(est.classes_, [0, 1, 2])
    assert est.n_iter_ == len(est.history_) == 1
    before = {k: v.clone() for k, v in est.module_.state_dict().items()}
    est.partial_fit(X, y)
    assert est.n_iter_ == 2 and [h["epoch"] for h in est.history_] == [1, 2]
    after = est.module_.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in after)
    for _ in range(20):
        est.partial_fit(X, y)
    assert len(est.history_) == 22
    assert est.score(X, y) >= 0.85
    with pytest.raises(ValueError, match="4 features"):
        est.partial_fit(X[:, :3], y)
    with pytest.raises(ValueError, match="differs from the fitted classes_"):
        est.partial_fit(X, y, classes=[0, 1])
    # without classes, a label unseen in the first call is refused later
    est2 = TorchClassifier(**FAST).partial_fit(X[keep], y[keep])
    assert_array_equal(est2.classes_, [0, 1])
    with pytest.raises(ValueError, match="not in classes_"):
        est2.partial_fit(X, y)


def test_partial_fit_continues_after_fit(regression):
    X, y = regression
    est = TorchRegressor(**FAST).fit(X, y)
    assert est.n_iter_ == 5
    before = est.predict(X)
    est.partial_fit(X, y)
    assert est.n_iter_ == 6 and est.history_[-1]["epoch"] == 6
    assert not np.allclose(est.predict(X), before)
    with pytest.raises(ValueError, match="outputs"):
        est.partial_fit(X, y[:, :2])
    # fit starts over
    est.fit(X, y)
    assert est.n_iter_ == 5


# --------------------------------------------------------------------------- history and callbacks
def test_history_records(blobs, regression):
    X, y = blobs
    clf = TorchClassifier(**FAST).fit(X, y)
    assert [h["epoch"] for h in clf.history_] == [1, 2, 3, 4, 5]
    for h in clf.history_:
        assert set(h) == {"epoch", "train_loss", "valid_loss", "valid_accuracy", "lr", "seconds"}
        assert 0 <= h["valid_accuracy"] <= 1 and h["lr"] == 0.02 and h["seconds"] > 0
    assert clf.history_[-1]["train_loss"] < clf.history_[0]["train_loss"]
    Xr, yr = regression
    reg = TorchRegressor(**FAST).fit(Xr, yr)
    assert set(reg.history_[0]) == {
        "epoch",
        "train_loss",
        "valid_loss",
        "valid_r2",
        "lr",
        "seconds",
    }
    no_valid = TorchRegressor(**{**FAST, "validation_fraction": 0}).fit(Xr, yr)
    assert set(no_valid.history_[0]) == {"epoch", "train_loss", "lr", "seconds"}


def test_callbacks_get_every_hook(blobs):
    X, y = blobs
    rec = Recorder()
    est = TorchClassifier(**{**FAST, "callbacks": [rec]}).fit(X, y)
    assert rec.calls == ["begin"] + ["epoch"] * 5 + ["end"]
    assert rec.records == est.history_


def test_callback_returning_true_stops_training(blobs):
    X, y = blobs
    rec = Recorder(stop_at=2)
    est = TorchClassifier(**{**FAST, "max_epochs": 50, "callbacks": [rec]}).fit(X, y)
    assert est.n_iter_ == 2
    assert rec.calls == ["begin", "epoch", "epoch", "end"]


def test_verbose_prints_one_line_per_epoch(blobs, capsys):
    X, y = blobs
    TorchClassifier(**{**FAST, "max_epochs": 3, "verbose": 1}).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch=1 ")


def test_dvclive_callback_logs_every_epoch(blobs, tmp_path, monkeypatch):
    from dvclive import Live

    monkeypatch.chdir(tmp_path)  # dvclive writes dvc.yaml beside the working directory
    monkeypatch.setenv("DVCLIVE_TEST", "true")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    X, y = blobs
    with Live(dir=str(tmp_path / "live"), save_dvc_exp=False) as live:
        est = TorchClassifier(**{**FAST, "max_epochs": 3, "callbacks": [DVCLiveCallback(live)]})
        est.fit(X, y)
    metrics = tmp_path / "live" / "plots" / "metrics"
    for name in ("train_loss", "valid_loss", "valid_accuracy", "lr"):
        rows = (metrics / f"{name}.tsv").read_text().strip().splitlines()
        assert rows[0].split("\t") == ["step", name]
        assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2"]
    rows = (metrics / "train_loss.tsv").read_text().strip().splitlines()[1:]
    logged = [float(r.split("\t")[1]) for r in rows]
    assert_allclose(logged, [h["train_loss"] for h in est.history_])
    assert not (metrics / "epoch.tsv").exists() and not (metrics / "seconds.tsv").exists()


# --------------------------------------------------------------------------- errors
def test_misspelt_prefix_refused_at_set_params():
    with pytest.raises(ValueError, match="module") as err:
        TorchClassifier().set_params(modul__hidden_sizes=(8,))
    assert "Did you mean 'module'" in str(err.value)


def test_misspelt_prefix_refused_at_fit(blobs):
    X, y = blobs
    est = TorchClassifier(**FAST, modul__hidden_sizes=(8,))  # constructing never fails
    with pytest.raises(ValueError, match="Did you mean 'module'"):
        est.fit(X, y)


def test_unknown_plain_param_refused_at_fit(blobs):
    X, y = blobs
    est = TorchClassifier(**FAST).set_params(max_epoch=3)
    with pytest.raises(ValueError, match="'max_epoch'.*Did you mean 'max_epochs'"):
        est.fit(X, y)


def test_unknown_module_name_lists_registered(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="Unknown module 'mpl'") as err:
        TorchClassifier(**{**FAST, "module": "mpl"}).fit(X, y)
    for name in ("cnn", "mlp", "usps_cnn"):
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_refused(blobs, bad):
    X, y = blobs
    X = X.copy()
    X[5, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        TorchClassifier(**FAST).fit(X, y)


def test_non_finite_input_refused_at_predict(blobs):
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, y)
    X = X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.predict(X)


def test_wrong_feature_count_at_predict(blobs, regression):
    X, y = blobs
    est = TorchClassifier(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features.*expecting 4 features"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="X has 5 features.*expecting 4 features"):
        est.predict_proba(np.hstack([X, X[:, :1]]))


def test_predict_before_fit_refused(blobs):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TorchClassifier().predict(blobs[0])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"optimizer": "adamm"}, "Unknown optimizer 'adamm'.*Did you mean 'adam'"),
        ({"lr_schedule": "cosin"}, "Unknown lr_schedule 'cosin'.*Did you mean 'cosine'"),
        ({"criterion": "cross_entropi"}, "Unknown criterion 'cross_entropi'.*cross_entropy"),
        ({"lr": 0}, "lr must be a positive number"),
        ({"lr": -0.1}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"max_epochs": 0}, "max_epochs must be an integer >= 1"),
        ({"patience": 0}, "patience must be None or an integer >= 1"),
        ({"validation_fraction": 1.0}, "validation_fraction must be a number in"),
        ({"device": "tpu"}, "device must be"),
        ({"lr_schedule__pct_start": 0.3}, "lr_schedule__\\* arguments need"),
    ],
)
def test_bad_settings_refused(blobs, params, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        TorchClassifier(**{**FAST, **params}).fit(X, y)


def test_numpy_scalar_hyperparameters_accepted(blobs):
    """GridSearchCV over numpy arrays hands over numpy scalars; they are valid numbers."""
    X, y = blobs
    est = TorchClassifier(
        **{**FAST, "lr": np.float32(0.01), "patience": np.int64(2), "max_epochs": np.int64(3)}
    ).fit(X, y)
    assert est.n_iter_ <= 3


def test_one_class_refused(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="at least 2 classes"):
        TorchClassifier(**FAST).fit(X, np.zeros(len(X)))


# ------------------------------------------------------------- modules, optimizers, schedules
def test_module_as_class(blobs):
    X, y = blobs
    est = TorchClassifier(module=TinyNet, module__width=5, lr=0.02, max_epochs=3, random_state=0)
    est.fit(X, y)
    assert isinstance(est.module_, TinyNet) and est.module_.width == 5
    assert est.module_.net[0].in_features == 4 and est.module_.net[-1].out_features == 3
    assert est.predict_proba(X).shape == (len(X), 3)


def test_module_as_callable(regression):
    X, y = regression
    seen = {}

    def build(n_features, n_outputs, depth=1):
        seen.update(n_features=n_features, n_outputs=n_outputs, depth=depth)
        return nn.Sequential(*[nn.Linear(n_features, n_features) for _ in range(depth)],
                             nn.Linear(n_features, n_outputs))  # fmt: skip

    est = TorchRegressor(module=build, module__depth=2, max_epochs=2, random_state=0).fit(X, y)
    assert seen == {"n_features": 5, "n_outputs": 3, "depth": 2}
    assert est.predict(X).shape == (len(X), 3)
    # a callable that does not return a module is refused
    with pytest.raises(TypeError, match="not nn.Module"):
        TorchRegressor(module=lambda: "oops", max_epochs=1).fit(X, y)


def test_registered_module_with_kwargs(blobs):
    X, y = blobs
    est = TorchClassifier(
        module="mlp", module__hidden_sizes=(9, 7), module__activation="tanh", module__dropout=0.1,
        max_epochs=2, random_state=0,
    ).fit(X, y)  # fmt: skip
    layers = list(est.module_)
    assert [m.out_features for m in layers if isinstance(m, nn.Linear)] == [9, 7, 3]
    assert sum(isinstance(m, nn.Tanh) for m in layers) == 2
    assert sum(isinstance(m, nn.Dropout) for m in layers) == 2
    with pytest.raises(ValueError, match="'hiden_sizes' for module 'mlp'.*'hidden_sizes'"):
        TorchClassifier(module="mlp", module__hiden_sizes=(3,), max_epochs=1).fit(X, y)


def test_sgd_with_momentum_and_weight_decay(blobs):
    X, y = blobs
    est = TorchClassifier(
        **{**FAST, "optimizer": "sgd"}, optimizer__momentum=0.9, optimizer__weight_decay=1e-3
    ).fit(X, y)
    assert isinstance(est.optimizer_, torch.optim.SGD)
    group = est.optimizer_.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-3 and group["lr"] == 0.02
    assert est.optimizer_.state  # momentum buffers were used
    # an optimizer class is accepted too
    est2 = TorchClassifier(**{**FAST, "optimizer": torch.optim.RMSprop}).fit(X, y)
    assert isinstance(est2.optimizer_, torch.optim.RMSprop)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedules_change_lr(blobs, schedule):
    X, y = blobs
    est = TorchClassifier(**{**FAST, "lr_schedule": schedule}).fit(X, y)
    lrs = [h["lr"] for h in est.history_]
    assert len(set(lrs)) == len(lrs)  # a new rate every epoch
    assert max(lrs) <= 0.02 + 1e-9
    if schedule == "cosine":
        assert lrs[0] == pytest.approx(0.02) and lrs == sorted(lrs, reverse=True)
    else:
        assert lrs[0] < lrs[1]  # one-cycle warms up first


def test_lr_schedule_kwargs_are_routed(blobs):
    X, y = blobs
    a = TorchClassifier(**{**FAST, "lr_schedule": "onecycle"}, lr_schedule__div_factor=4.0).fit(
        X, y
    )
    assert a.history_[0]["lr"] == pytest.approx(0.02 / 4.0)


def test_regressor_output_shapes(regression):
    X, y = regression
    multi = TorchRegressor(**{**FAST, "max_epochs": 40}).fit(X, y)
    assert multi.predict(X).shape == (len(X), 3) and multi.n_outputs_ == 3
    assert multi.score(X, y) > 0.5
    single = TorchRegressor(**FAST).fit(X, y[:, 0])
    assert single.predict(X).shape == (len(X),)
    column = TorchRegressor(**FAST).fit(X, y[:, :1])
    assert column.predict(X).shape == (len(X), 1)


def test_sparse_input_matches_dense(blobs):
    import scipy.sparse as sp

    X, y = blobs
    dense = TorchClassifier(**FAST).fit(X, y)
    sparse = TorchClassifier(**FAST).fit(sp.csr_matrix(X), y)
    assert_array_equal(sparse.predict_proba(sp.csr_matrix(X)), dense.predict_proba(X))


def test_no_warnings_in_a_plain_fit(blobs):
    X, y = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TorchClassifier(**FAST).fit(X, y).predict(X)


@pytest.mark.slow  # torch.compile needs ~15 s to build its CPU kernels
def test_compile_flag_trains_like_eager():
    X, y = make_blobs(200, random_state=0)
    kw = dict(max_epochs=3, random_state=0, module__hidden_sizes=(16,))
    compiled = TorchClassifier(compile=True, **kw).fit(X, y)
    eager = TorchClassifier(**kw).fit(X, y)
    assert isinstance(compiled.module_, torch.nn.Module)  # the stored module stays plain
    np.testing.assert_allclose(compiled.predict_proba(X), eager.predict_proba(X), atol=1e-5)


def test_amp_flag_is_a_no_op_on_cpu():
    """bf16 autocast applies on CUDA only; on the CPU amp=True trains exactly like amp=False."""
    X, y = make_blobs(120, random_state=0)
    kw = dict(max_epochs=2, random_state=0, module__hidden_sizes=(16,), device="cpu")
    a = TorchClassifier(amp=True, **kw).fit(X, y).predict_proba(X)
    b = TorchClassifier(amp=False, **kw).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


def test_same_fit_saves_byte_identical_artifacts(tmp_path):
    """Timings stay out of the saved model, so DVC sees the same hash for the same training."""
    X, y = make_blobs(120, random_state=0)
    for name in ("a", "b"):
        TorchClassifier(max_epochs=3, random_state=0, module__hidden_sizes=(8,)).fit(X, y).save(
            tmp_path / name
        )
    for file in ("config.json", "weights.safetensors"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
