"""benchmarks/usps_recipes.py: every recipe is a valid train override of USPS's entry, it changes
what it names and nothing else, one tiny fit runs end to end on synthetic digits, and recipes are
ranked on selection rows carved from the training rows, never on the test split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _models import digit_images

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import _usps  # noqa: E402
import usps_recipes as bench  # noqa: E402

from tandem import config  # noqa: E402


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def usps_train(params):
    return config.resolve(params.train, params.datasets["usps"], "train").model_dump()


@pytest.mark.parametrize("name", sorted(bench.RECIPES))
def test_every_recipe_is_usps_entry_plus_its_overrides(raw, name):
    train = usps_train(bench.recipe_params(raw, bench.RECIPES[name], seed=7))
    plain = usps_train(bench.recipe_params(raw, [], seed=7))
    assert train["seed"] == 7
    named = {text.split("=")[0].split(".")[0] for text in bench.RECIPES[name]}
    assert {k for k in train if train[k] != plain[k]} <= named  # nothing it does not name
    last = {tuple(path): value for path, value in map(config.parse_override, bench.RECIPES[name])}
    for path, value in last.items():  # and what it names, it sets (the last value of a key)
        node = train
        for part in path:
            node = node[part]
        assert node == value, path
    assert train["augment"]["rotate"] == 10  # the entry's other augmentation ranges stay
    assert raw["datasets"]["usps"]["train"].get("seed") is None  # the input is not modified


def test_two_blocks_is_the_two_block_recipe(raw):
    train = usps_train(bench.recipe_params(raw, bench.RECIPES["two-blocks"], seed=0))
    cnn = train["module_kwargs"]["cnn"]
    assert (cnn["channels"], cnn["head"], cnn["dropout"]) == ([32, 64], "dense", 0.1)
    assert (train["max_epochs"], train["augment"]["elastic"]) == (25, 0.0)


@pytest.mark.parametrize("name", sorted(bench.RECIPES))
def test_every_recipe_sets_its_network_length_and_elastic_itself(name):
    """A recipe means the same whichever recipe USPS's entry holds."""
    named = {tuple(config.parse_override(text)[0]) for text in bench.RECIPES[name]}
    for key in ("augment.elastic", "max_epochs", "module_kwargs.cnn.channels",
                "module_kwargs.cnn.head"):  # fmt: skip
        assert tuple(key.split(".")) in named, key


def test_usps_entry_trains_the_recipe_ranked_first(raw):
    """params.yaml's USPS train section is the recipe that ranks first on the selection set
    (docs/results.md#the-image-recipe), key for key."""
    ranked_first = bench.recipe_params(raw, bench.RECIPES["three-blocks-narrow"], seed=0)
    assert usps_train(ranked_first) == usps_train(bench.recipe_params(raw, [], seed=0))


def test_an_override_with_a_typo_is_refused(raw):
    with pytest.raises(ValueError, match="max_epoch"):
        bench.recipe_params(raw, ["max_epoch=3"], seed=0)


def test_error_floor_is_what_every_model_misses():
    y = np.array(["1", "2", "3", "4"])
    preds = [np.array(["1", "3", "3", "1"]), np.array(["2", "3", "3", "4"])]
    assert bench.error_floor(preds, y).tolist() == [1]


def test_one_tiny_fit_scores_like_the_evaluate_stage(raw):
    (images, y), (test_images, y_test) = digit_images(300, seed=0), digit_images(60, seed=1)
    X, X_test = (a.reshape(len(a), -1).astype(np.float32) for a in (images, test_images))
    y, y_test = y.astype(str), y_test.astype(str)
    params = bench.recipe_params(raw, bench.RECIPES["two-blocks"], seed=0)
    features, features_test = _usps.stage_features(params, "usps", X, y, X_test)
    fit = _usps.fit_and_score(params, "usps", features, y, features_test, y_test, epochs=1)
    assert fit["epochs"] == 1 and fit["seed"] == 0 and 0.0 <= fit["accuracy"] <= 1.0
    assert fit["accuracy"] == pytest.approx(np.mean(fit["predicted"] == y_test))
    assert fit["proba"].shape == (len(y_test), len(fit["classes"]))
    assert np.array_equal(fit["classes"][fit["proba"].argmax(axis=1)], fit["predicted"])


def test_selection_rows_are_a_seeded_stratified_tenth_disjoint_from_the_fitting_rows():
    y = np.repeat(np.array([str(k) for k in range(1, 11)]), 50)
    fit, selection = bench.selection_split(y)
    assert len(selection) == 50 and len(fit) == 450
    assert not set(fit) & set(selection) and set(fit) | set(selection) == set(range(500))
    assert all(np.sum(y[selection] == k) == 5 for k in np.unique(y))  # stratified
    again = bench.selection_split(y)  # the same rows for every recipe and seed
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], selection)


def test_rank_order_is_fewest_errors_then_lower_log_loss():
    # equal error counts whose mean accuracies differ in the last float bits still tie
    results = {"a": {"errors": 5, "log_loss": 0.011, "mean": 0.9977168949771689},
               "b": {"errors": 5, "log_loss": 0.005, "mean": 0.9977168949771688},
               "c": {"errors": 3, "log_loss": 0.020, "mean": 0.9986301369863014},
               "d": {"errors": 6, "log_loss": 0.001, "mean": 0.9972602739726028}}  # fmt: skip
    assert bench.rank_order(results) == ["c", "b", "a", "d"]


def test_recipes_are_ranked_without_the_test_split(raw, monkeypatch, tmp_path):
    """The tiny path end to end (synthetic digits as USPS, 300 training and 60 test rows): the
    ranking sees training rows only (the preprocessor fitted on the fitting rows, every model
    scored on the selection rows, both disjoint and neither holding a test row), the test rows
    are read only after the choice, and they score the chosen recipe alone."""
    n_train, n_test = 300, 60
    images, labels = digit_images(n_train + n_test, seed=0)
    X_all = (images.reshape(len(images), -1) / 127.5 - 1).astype(np.float32)
    y_all = labels.astype(str)
    monkeypatch.setattr(bench, "N_TRAIN", n_train)
    monkeypatch.setattr(bench, "load_usps", lambda home: (X_all.copy(), y_all.copy(), "synthetic"))
    keys = lambda X: {row.tobytes() for row in np.asarray(X)}  # noqa: E731
    test_rows = keys(X_all[n_train:])
    assert len(test_rows) == n_test and not test_rows & keys(X_all[:n_train])

    events = []
    canonical, rank, features = bench.canonical_rows, bench.rank_recipes, bench.stage_features
    fit, score = bench.fit_estimator, bench.score_estimator

    def read(home, part):
        events.append(("read", part))
        return canonical(home, part)

    def ranking(raw, names, seeds, X, y, **kw):
        assert not keys(X) & test_rows
        events.append(("rank",))
        return rank(raw, names, seeds, X, y, **kw)

    def preprocess(params, name, X, y, X_eval):
        events.append(("preprocess", keys(X), keys(X_eval)))
        return features(params, name, X, y, X_eval)

    def fitted(params, name, X, y, **kw):
        events.append(("fit", keys(X)))
        return fit(params, name, X, y, **kw)

    def scored(params, name, est, X, y):
        events.append(("score", keys(X)))
        return score(params, name, est, X, y)

    for attr, wrapper in [("canonical_rows", read), ("rank_recipes", ranking),
                          ("stage_features", preprocess), ("fit_estimator", fitted),
                          ("score_estimator", scored)]:  # fmt: skip
        monkeypatch.setattr(bench, attr, wrapper)
    out = tmp_path / "out.json"
    argv = ["--recipes", "two-blocks", "three-blocks", "--seeds", "0", "1", "--final-seeds", "0",
            "--epochs", "1", "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0

    kinds = [e[0] for e in events]
    test_read = kinds.index("read", 1)
    assert events[0] == ("read", "train") and events[test_read] == ("read", "test")
    assert kinds.count("read") == 2 and kinds.index("rank") < test_read
    selecting, testing = events[:test_read], events[test_read + 1 :]
    (_, fit_rows, selection_rows), *models = [e for e in selecting if e[0] != "read"][1:]
    assert len(selection_rows) == n_train // 10 and len(fit_rows) == n_train - n_train // 10
    assert not fit_rows & selection_rows and not (fit_rows | selection_rows) & test_rows
    assert [e[0] for e in models] == ["fit", "score"] * 4  # two recipes, two seeds
    for kind, rows in models:
        assert rows == (fit_rows if kind == "fit" else selection_rows)

    result = json.loads(out.read_text())
    assert result["chosen"] == next(iter(result["selection"]["recipes"]))
    assert [r["rank"] for r in result["selection"]["recipes"].values()] == [1, 2]
    # the test rows score the chosen recipe's models only (one final seed), fitted on all rows
    assert [e[0] for e in testing] == ["preprocess", "fit", "score"]
    assert testing[0][2] == test_rows and testing[2][1] == test_rows
    assert testing[1][1] == keys(X_all[:n_train])
    assert [r["seed"] for r in result["test"]["runs"]] == [0]
