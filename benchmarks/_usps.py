"""Where the benchmarks read USPS from: an OpenML cache, never the shared one itself (scikit-learn
deletes cache files it fails to parse, so the shared cache is only ever read through a copy)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import fetch_openml

REPO = Path(__file__).resolve().parents[1]
SHARED_CACHE = REPO.parent / "shared" / "data" / "openml-cache"
USPS_ID = 41070


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def load_usps(data_home: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(X float32, y str, where it was read from). Never lets sklearn touch the shared cache."""
    tmp = None
    home = data_home or os.environ.get("SCIKIT_LEARN_DATA")
    if home and _same_path(Path(home), SHARED_CACHE):
        print(f"note: {home} is the shared cache itself; reading a temporary copy of it instead")
        home = None
    if not home:
        if not SHARED_CACHE.is_dir():
            sys.exit(
                f"no OpenML cache at {SHARED_CACHE}; pass --data-home or set SCIKIT_LEARN_DATA"
            )
        tmp = tempfile.mkdtemp(prefix="usps-openml-")
        shutil.copytree(SHARED_CACHE, tmp, dirs_exist_ok=True)
        home = tmp
    try:
        X, y = fetch_openml(
            data_id=USPS_ID, as_frame=False, parser="liac-arff", data_home=home, return_X_y=True
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    where = f"copy of {SHARED_CACHE}" if tmp is not None else home
    return np.asarray(X, dtype=np.float32), np.asarray(y).astype(str), where


def _stages_importable() -> None:
    """The repository's stages package importable, as DVC runs it (once on sys.path)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def stage_features(params, name: str, X, y, X_test) -> tuple[np.ndarray, np.ndarray]:
    """The preprocess stage's features of the training and test rows (the entry's section)."""
    _stages_importable()
    from stages.preprocess import build_preprocessor
    from tandem import config

    entry = params.datasets[name]
    prep = config.resolve(params.preprocess, entry, "preprocess")
    transformer = build_preprocessor(prep, entry.data, X).fit(X, y)
    return tuple(np.asarray(transformer.transform(a), dtype=np.float32) for a in (X, X_test))


def fit_estimator(params, name, features, y, *, epochs=None, device="cpu"):
    """(the train stage's estimator for entry ``name``, fitted on ``features``, fit seconds).
    ``epochs`` replaces the section's length, exactly (also below ``min_steps``' floor)."""
    _stages_importable()
    import time

    from stages.train import build_estimator
    from tandem import config

    entry = params.datasets[name]
    p = config.resolve(params.train, entry, "train")
    est = build_estimator(p.model_copy(update={"device": device}), entry.data, len(y))
    if epochs:
        est.set_params(max_epochs=epochs)
    start = time.perf_counter()
    est.fit(features, y)
    return est, time.perf_counter() - start


def score_estimator(params, name, est, features, y) -> dict:
    """``est`` scored on (``features``, ``y``) as the evaluate stage scores it (``accuracy``,
    ``proba``, ``predicted``: with test-time augmentation when the entry's ``evaluate.tta`` is
    on), and the plain network's accuracy beside it (``plain_accuracy``: one view per image)."""
    from tandem import config

    tta = config.resolve(params.evaluate, params.datasets[name], "evaluate").tta
    plain = est.predict_proba(features)
    proba = est.predict_proba_tta(features) if tta else plain
    predicted = est.classes_[proba.argmax(axis=1)]
    return {"accuracy": float(np.mean(predicted == y)),
            "plain_accuracy": float(np.mean(est.classes_[plain.argmax(axis=1)] == y)),
            "predicted": predicted, "proba": proba, "classes": est.classes_}  # fmt: skip


def fit_and_score(params, name, features, y, features_test, y_test, *, epochs=None,
                  device="cpu") -> dict:  # fmt: skip
    """The train stage's estimator for entry ``name``, fitted (timed alone) and scored as the
    evaluate stage scores it: with test-time augmentation when the entry's ``evaluate.tta`` is
    on. ``epochs`` replaces the section's length, exactly (also below ``min_steps``' floor)."""
    from tandem import config

    est, seconds = fit_estimator(params, name, features, y, epochs=epochs, device=device)
    seed = config.resolve(params.train, params.datasets[name], "train").seed
    scores = score_estimator(params, name, est, features_test, y_test)
    return {"seed": seed, "epochs": est.n_iter_, "seconds": seconds, **scores}
