"""Image augmentation on the device (batched affine + elastic, seeded), an EMA of the weights,
label smoothing and test-time augmentation: estimator parameters, tunable by GridSearchCV."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from tandem import TorchClassifier, models
from tandem.training import Augment

AFFINE = {"augment": "affine", "augment__rotate": 10, "augment__translate": 0.1,
          "augment__scale": 0.1, "augment__shear": 5}  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # 8 x 8 images, one channel
    return (X / 8 - 1).astype(np.float32)[:600], y[:600]


def small(**kw) -> TorchClassifier:
    params = dict(module="cnn", max_epochs=3, batch_size=64, random_state=0, device="cpu",
                  validation_fraction=0.2)  # fmt: skip
    return TorchClassifier(**{**params, **kw})


def weights(est):
    return {k: v.clone() for k, v in est.module_.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_whole_batch_is_transformed_by_one_grid_sample(monkeypatch):
    """No loop over images: one affine_grid/grid_sample per batch, whatever its size."""
    calls = []
    real = torch.nn.functional.grid_sample
    monkeypatch.setattr(torch.nn.functional, "grid_sample",
                        lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))  # fmt: skip
    augment = Augment(shape=(1, 16, 16), rotate=15, translate=0.1, scale=0.1, shear=5, elastic=1)
    gen = torch.Generator().manual_seed(0)
    out = augment(torch.randn(256, 256), gen)
    assert calls == [256] and out.shape == (256, 256) and torch.isfinite(out).all()


def test_zero_ranges_are_the_identity_and_a_shift_moves_the_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    flat = x.reshape(1, -1)
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(Augment(shape=(1, 8, 8))(flat, gen), flat, atol=1e-6)
    moved = Augment(shape=(1, 8, 8), translate=0.25)(flat, gen).reshape(8, 8)
    assert moved.max() > 0.2 and moved[3, 3] < 0.9  # the bright pixel went somewhere else


def test_augmented_fits_are_seeded_and_differ_from_plain(digits):
    X, y = digits
    a, b = small(**AFFINE).fit(X, y), small(**AFFINE).fit(X, y)
    assert same(weights(a), weights(b))  # bit-for-bit on the CPU
    assert not same(weights(a), weights(small().fit(X, y)))
    assert not same(weights(a), weights(small(**AFFINE, random_state=1).fit(X, y)))


def test_bad_augment_params_are_named(digits):
    X, y = digits
    with pytest.raises(ValueError, match="augment__rotate"):
        small(augment="affine", augment__rotat=10).fit(X, y)
    with pytest.raises(ValueError, match=">= 0"):
        small(augment="affine", augment__rotate=-1).fit(X, y)
    with pytest.raises(ValueError, match="affine"):
        small(augment="affin").fit(X, y)
    with pytest.raises(ValueError, match="need augment='affine'"):
        small(augment__rotate=10).fit(X, y)
    with pytest.raises(ValueError, match="not a square one-channel image"):
        small(module="mlp", augment="affine").fit(X[:, :60], y)
    with pytest.raises(ValueError, match="does not hold 64 features"):
        small(augment="affine", augment__shape=[7, 8]).fit(X, y)
    with pytest.raises(ValueError, match="ema"):
        small(ema=1.5).fit(X, y)


def test_ema_averages_the_weights_and_resumes_exactly(digits, tmp_path):
    X, y = digits
    plain = weights(small().fit(X, y))
    # a decay this small keeps (almost) the latest weights: the same fit as without EMA
    nearly = weights(small(ema=1e-9).fit(X, y))
    assert all(torch.allclose(plain[k].float(), nearly[k].float(), atol=1e-5) for k in plain)
    averaged = small(ema=0.9).fit(X, y)
    assert not all(torch.allclose(plain[k].float(), v.float(), atol=1e-3)
                   for k, v in weights(averaged).items())  # fmt: skip

    class Interrupt(Exception):
        pass

    class StopAt:
        def on_epoch_end(self, estimator, record):
            if record["epoch"] == 2:
                raise Interrupt

    ckpt = tmp_path / "ckpt.pt"
    kw = dict(ema=0.9, **AFFINE, checkpoint=str(ckpt))
    with pytest.raises(Interrupt):
        small(**kw, callbacks=[StopAt()]).fit(X, y)
    resumed = small(**kw).fit(X, y)
    assert same(weights(resumed), weights(small(ema=0.9, **AFFINE).fit(X, y)))


def test_partial_fit_refuses_ema(digits):
    X, y = digits
    with pytest.raises(ValueError, match="partial_fit"):
        small(ema=0.9).partial_fit(X, y, classes=np.unique(y))


def test_label_smoothing_is_a_routed_criterion_param(digits):
    X, y = digits
    smooth = small(criterion__label_smoothing=0.2).fit(X, y)
    assert smooth.get_params()["criterion__label_smoothing"] == 0.2
    assert not same(weights(smooth), weights(small().fit(X, y)))


def test_grid_search_tunes_the_augmentation(digits):
    X, y = digits
    search = GridSearchCV(small(augment="affine", max_epochs=1),
                          {"augment__rotate": [0, 15], "ema": [None, 0.9]}, cv=2)  # fmt: skip
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert {"augment__rotate", "ema"} <= set(search.best_params_)


def test_tta_averages_the_shifted_views(digits):
    X, y = digits
    est = small().fit(X, y)
    proba = est.predict_proba_tta(X[:50])
    assert proba.shape == (50, 10) and np.allclose(proba.sum(axis=1), 1)
    images = torch.nn.functional.pad(torch.from_numpy(X[:50]).reshape(50, 1, 8, 8),
                                     (1, 1, 1, 1), mode="replicate")  # fmt: skip
    views = [images[:, :, 1 + dy : 9 + dy, 1 + dx : 9 + dx].reshape(50, -1).numpy()
             for dx, dy in models.TTA_VIEWS]  # fmt: skip
    expected = np.mean([est.predict_proba(v) for v in views], axis=0)
    assert np.allclose(proba, expected, atol=1e-6)


def test_train_and_evaluate_stages_take_the_recipe_from_params(project):
    """train.augment / train.ema / train.label_smoothing reach the estimator; evaluate.tta the
    evaluation (the saved model records the recipe it was trained with)."""
    import json
    import subprocess

    from conftest import tool_env, usps_like

    usps_like(120, at=(project / "data/usps/features_train.parquet",))
    frame = usps_like(40, at=(project / "data/usps/features_test.parquet",
                              project / "data/usps/test.parquet"))  # fmt: skip

    def tandem(*args):
        proc = subprocess.run(["tandem", *args], cwd=project, env=tool_env(), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]

    # augmentation belongs to the image entry's own train section (tabular entries refuse it)
    tandem("train", "--dataset", "usps", "--set", "train.max_epochs=2",
           "--set", "train.min_steps=0", "--set", "datasets.usps.train={augment: {rotate: 10, "
           "shear: 5}, ema: 0.99, label_smoothing: 0.1}")  # fmt: skip
    params = json.loads((project / "models/usps/model/config.json").read_text())["params"]
    assert params["augment"] == "affine" and params["ema"] == 0.99
    assert params["augment__rotate"] == 10 and params["augment__translate"] == 0
    assert params["criterion__label_smoothing"] == 0.1
    tandem("evaluate", "--dataset", "usps", "--set", "evaluate.tta=true")
    plain = TorchClassifier.load(project / "models/usps/model")
    test = frame
    expected = plain.predict_proba_tta(test.drop(columns="class"))
    scores = json.loads((project / "metrics/usps/eval.json").read_text())
    from sklearn.metrics import log_loss

    loss = log_loss(test["class"], expected, labels=plain.classes_)
    assert scores["log_loss"] == pytest.approx(loss, rel=1e-4)  # the TTA probabilities
    assert scores["log_loss"] != pytest.approx(
        log_loss(test["class"], plain.predict_proba(test.drop(columns="class")),
                 labels=plain.classes_), rel=1e-4)  # fmt: skip
