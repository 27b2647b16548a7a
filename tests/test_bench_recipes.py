"""benchmarks/usps_recipes.py: every recipe is a valid train override of USPS's entry, it changes
what it names and nothing else, and one tiny fit runs end to end on synthetic digits."""

from __future__ import annotations

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


def test_previous_is_the_two_block_recipe(raw):
    train = usps_train(bench.recipe_params(raw, bench.RECIPES["previous"], seed=0))
    cnn = train["module_kwargs"]["cnn"]
    assert (cnn["channels"], cnn["head"], cnn["dropout"]) == ([32, 64], "dense", 0.1)
    assert (train["max_epochs"], train["augment"]["elastic"]) == (25, 0.0)


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
    params = bench.recipe_params(raw, bench.RECIPES["previous"], seed=0)
    features, features_test = _usps.stage_features(params, "usps", X, y, X_test)
    fit = _usps.fit_and_score(params, "usps", features, y, features_test, y_test, epochs=1)
    assert fit["epochs"] == 1 and fit["seed"] == 0 and 0.0 <= fit["accuracy"] <= 1.0
    assert fit["accuracy"] == pytest.approx(np.mean(fit["predicted"] == y_test))
    assert fit["proba"].shape == (len(y_test), len(fit["classes"]))
    assert np.array_equal(fit["classes"][fit["proba"].argmax(axis=1)], fit["predicted"])
