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
import usps_recipes as bench  # noqa: E402

from tandem import config  # noqa: E402


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def contains(value, expected) -> bool:
    """``value`` holds ``expected``: equal, or for mappings, equal on every key it gives."""
    if isinstance(expected, dict):
        return all(contains(value[k], v) for k, v in expected.items())
    return value == expected


@pytest.mark.parametrize("name", sorted(bench.RECIPES))
def test_every_recipe_is_usps_entry_plus_its_override(raw, name):
    params = bench.recipe_params(raw, bench.RECIPES[name], seed=7)
    train = config.resolve(params.train, params.datasets["usps"], "train")
    base = bench.recipe_params(raw, {}, seed=7)
    plain = config.resolve(base.train, base.datasets["usps"], "train")
    assert train.seed == 7
    changed = {k for k, v in train.model_dump().items() if v != plain.model_dump()[k]}
    assert changed <= set(bench.RECIPES[name])  # nothing it does not name
    expected = bench.merge(raw["datasets"]["usps"]["train"], bench.RECIPES[name])
    for key in bench.RECIPES[name]:  # and what it names, it sets
        assert contains(train.model_dump()[key], expected[key]), key
    # the entry's other parts of the recipe stay: an augment override keeps the affine ranges
    if "augment" in bench.RECIPES[name]:
        assert train.augment.rotate == plain.augment.rotate == 10
    if name == "previous":  # the two-block network, no elastic, 25 epochs
        cnn = train.module_kwargs["cnn"]
        assert (cnn["channels"], cnn["head"], train.augment.elastic) == ([32, 64], "dense", 0.0)
        assert train.max_epochs == 25 and plain.module_kwargs["cnn"]["head"] == "global"
    assert raw["datasets"]["usps"]["train"].get("seed") is None  # the input is not modified


def test_an_override_with_a_typo_is_refused(raw):
    with pytest.raises(ValueError, match="max_epoch"):
        bench.recipe_params(raw, {"max_epoch": 3}, seed=0)


def test_error_floor_is_what_every_model_misses():
    y = np.array(["1", "2", "3", "4"])
    preds = [np.array(["1", "3", "3", "1"]), np.array(["2", "3", "3", "4"])]
    assert bench.error_floor(preds, y).tolist() == [1]


def test_one_tiny_fit_scores_like_the_evaluate_stage(raw):
    (images, y), (test_images, y_test) = digit_images(300, seed=0), digit_images(60, seed=1)
    X, X_test = (a.reshape(len(a), -1).astype(np.float32) for a in (images, test_images))
    y, y_test = y.astype(str), y_test.astype(str)
    params = bench.recipe_params(raw, bench.RECIPES["previous"], seed=0)
    row, predicted, proba, classes = bench.fit_and_score(
        params, "usps", X, y, X_test, y_test, epochs=1
    )
    assert row["epochs"] == 1 and row["seed"] == 0 and 0.0 <= row["accuracy"] <= 1.0
    assert row["accuracy"] == pytest.approx(np.mean(predicted == y_test))
    assert predicted.shape == y_test.shape and set(predicted) <= set(y)
    assert proba.shape == (len(y_test), len(classes))
    assert np.array_equal(classes[proba.argmax(axis=1)], predicted)
