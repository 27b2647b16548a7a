"""tandem.evaluation: metrics agree with sklearn, plot data is valid for DVC, writes are atomic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from tandem import evaluation as ev

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def multiclass():
    """60 samples, 3 string classes, noisy but informative probabilities, argmax labels."""
    rng = np.random.default_rng(0)
    classes = np.array(["cat", "dog", "emu"])
    y_true = classes[rng.integers(0, 3, 60)]
    logits = rng.normal(size=(60, 3))
    logits[np.arange(60), np.searchsorted(classes, y_true)] += 1.5
    proba = _softmax(logits)
    y_pred = classes[proba.argmax(axis=1)]
    return y_true, y_pred, proba, classes


def _assert_png(path, directory) -> None:
    data = path.read_bytes()
    assert len(data) > 100
    assert data[:8] == PNG_MAGIC
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- metrics
def test_classification_metrics_match_sklearn_multiclass(multiclass):
    y_true, y_pred, proba, classes = multiclass
    m = ev.classification_metrics(y_true, y_pred, proba, classes)
    expected = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "f1_macro": f1_score(y_true, y_pred, average="macro"),
        "roc_auc_ovr": roc_auc_score(y_true, proba, multi_class="ovr", average="macro"),
        "log_loss": log_loss(y_true, proba),
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
        assert type(m[key]) is float
    json.dumps(m, allow_nan=False)
    assert 0.5 < m["accuracy"] < 1.0  # the fixture is informative but not perfect


def test_classification_metrics_binary_uses_second_column():
    y_true = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "yes"])
    p_yes = np.array([0.2, 0.9, 0.4, 0.6, 0.8, 0.1, 0.3, 0.7])
    proba = np.column_stack([1 - p_yes, p_yes])
    y_pred = np.where(p_yes >= 0.5, "yes", "no")
    m = ev.classification_metrics(y_true, y_pred, proba, ["no", "yes"])
    assert m["roc_auc_ovr"] == pytest.approx(roc_auc_score(y_true == "yes", p_yes))
    assert m["log_loss"] == pytest.approx(log_loss(y_true, proba, labels=["no", "yes"]))
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_classification_metrics_integer_labels_and_class_missing_from_predictions():
    y_true = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.2, 0.6, 0.2],
            [0.3, 0.3, 0.4],
            [0.1, 0.5, 0.4],
            [0.5, 0.4, 0.1],
            [0.6, 0.3, 0.1],
        ]
    )
    y_pred = np.array([0, 1, 2, 1, 0, 0])
    m = ev.classification_metrics(y_true, y_pred, proba, [0, 1, 2])
    assert m["log_loss"] == pytest.approx(log_loss(y_true, proba, labels=[0, 1, 2]))
    assert m["roc_auc_ovr"] == pytest.approx(
        roc_auc_score(y_true, proba, multi_class="ovr", labels=[0, 1, 2])
    )


def test_classification_metrics_unsorted_classes_reorders_columns(multiclass):
    # USPS labels "1".."10" in natural order are not sklearn's sorted order ("1", "10", "2", ...).
    y_true, y_pred, proba, classes = multiclass
    perm = np.array([2, 0, 1])
    sorted_m = ev.classification_metrics(y_true, y_pred, proba, classes)
    shuffled_m = ev.classification_metrics(y_true, y_pred, proba[:, perm], classes[perm])
    assert shuffled_m == pytest.approx(sorted_m, abs=1e-12)


def test_classification_metrics_rejects_wrong_proba_shape(multiclass):
    y_true, y_pred, proba, classes = multiclass
    with pytest.raises(ValueError, match="n_classes"):
        ev.classification_metrics(y_true, y_pred, proba[:, :2], classes)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y_true = rng.normal(size=40)
    y_pred = y_true + rng.normal(scale=0.3, size=40)
    m = ev.regression_metrics(y_true, y_pred)
    assert set(m) == {"rmse", "mae", "r2"}
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y_true, y_pred)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred))
    assert m["r2"] == pytest.approx(r2_score(y_true, y_pred))
    assert all(type(v) is float for v in m.values())


# --------------------------------------------------------------------------- plot data
def test_confusion_rows_one_per_sample_as_strings():
    rows = ev.confusion_rows([1, 2, 10, 10], ["1", "10", "10", "2"])
    assert len(rows) == 4
    assert rows[1] == {"actual": "2", "predicted": "10"}
    assert all(isinstance(r["actual"], str) and isinstance(r["predicted"], str) for r in rows)
    with pytest.raises(ValueError, match="samples"):
        ev.confusion_rows([1, 2], [1])


def test_roc_rows_per_class_from_origin_to_corner_and_valid_json(multiclass):
    y_true, _, proba, classes = multiclass
    rows = ev.roc_rows(y_true, proba, classes)
    text = json.dumps(rows, allow_nan=False)  # no inf/NaN thresholds
    assert json.loads(text) == rows
    for cls in classes:
        curve = [r for r in rows if r["class"] == cls]
        assert len(curve) >= 2
        assert (curve[0]["fpr"], curve[0]["tpr"]) == (0.0, 0.0)
        assert (curve[-1]["fpr"], curve[-1]["tpr"]) == (1.0, 1.0)
        fpr = [r["fpr"] for r in curve]
        assert fpr == sorted(fpr)
        assert all(math.isfinite(r["threshold"]) for r in curve)
        assert curve[0]["threshold"] > curve[1]["threshold"]
    assert {r["class"] for r in rows} == set(classes)


def test_curve_rows_hold_roc_and_precision_recall_of_every_class(multiclass):
    y_true, _, proba, classes = multiclass
    rows = ev.curve_rows(y_true, proba, classes)
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows
    assert {tuple(sorted(r)) for r in rows} == {("class", "curve", "point", "x", "y")}
    for cls in classes:
        roc = [r for r in rows if r["class"] == cls and r["curve"] == "roc"]
        pr = [r for r in rows if r["class"] == cls and r["curve"] == "pr"]
        assert (roc[0]["x"], roc[0]["y"], roc[-1]["x"], roc[-1]["y"]) == (0.0, 0.0, 1.0, 1.0)
        assert pr[-1]["x"] == 0.0 and pr[-1]["y"] == 1.0  # sklearn's last PR point: recall 0
        assert [r["point"] for r in roc] == list(range(roc[0]["point"], roc[0]["point"] + len(roc)))
        assert all(0 <= r["x"] <= 1 and 0 <= r["y"] <= 1 for r in roc + pr)


def test_regression_rows_points_and_residuals():
    points, residuals = ev.regression_rows([1.0, 2.0, 4.0], np.array([1.5, 2.0, 3.0]))
    assert points[0] == {"actual": 1.0, "predicted": 1.5}
    assert [r["residual"] for r in residuals] == [-0.5, 0.0, 1.0]


def test_learning_rows_losses_and_score_per_epoch():
    history = [
        {"epoch": 1, "train_loss": 0.9, "valid_loss": 0.8, "valid_accuracy": 0.7, "lr": 0.1},
        {"epoch": 2, "train_loss": 0.5, "valid_loss": 0.6, "valid_accuracy": 0.8, "lr": 0.1},
    ]
    losses, scores = ev.learning_rows(history)
    assert losses[2:] == [
        {"epoch": 2, "split": "train", "loss": 0.5},
        {"epoch": 2, "split": "valid", "loss": 0.6},
    ]
    assert scores == [{"epoch": 1, "valid_score": 0.7}, {"epoch": 2, "valid_score": 0.8}]
    losses, scores = ev.learning_rows([{"epoch": 1, "train_loss": 0.4, "lr": 0.1}])
    assert losses == [{"epoch": 1, "split": "train", "loss": 0.4}]
    assert scores == [{"epoch": 1, "valid_score": None}]


def test_roc_rows_skip_class_absent_from_truth():
    y_true = np.array(["a", "b", "a", "b"])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])
    rows = ev.roc_rows(y_true, proba, ["a", "b", "c"])
    assert {r["class"] for r in rows} == {"a", "b"}
    json.dumps(rows, allow_nan=False)


# --------------------------------------------------------------------------- worst digits
def test_worst_indices_picks_most_confident_mistakes():
    y_true = np.array(["a", "a", "b", "b", "a", "b"])
    y_pred = np.array(["b", "a", "a", "b", "b", "a"])  # wrong at 0, 2, 4, 5
    proba = np.array([[0.4, 0.6], [0.9, 0.1], [0.95, 0.05], [0.2, 0.8], [0.3, 0.7], [0.7, 0.3]])
    assert ev.worst_indices(y_true, y_pred, proba, 2).tolist() == [2, 4]
    assert ev.worst_indices(y_true, y_pred, proba, 10).tolist() == [2, 4, 5, 0]
    assert ev.worst_indices(y_true, y_pred, proba, 3, classes=["a", "b"]).tolist() == [2, 4, 5]
    assert ev.worst_indices(y_true, y_true, proba, 5).size == 0


def test_worst_indices_uses_predicted_column_when_classes_given():
    # Predictions that are not the argmax: confidence is the predicted class's own probability.
    y_true = np.array([0, 0, 0])
    y_pred = np.array([1, 2, 1])
    proba = np.array([[0.5, 0.2, 0.3], [0.5, 0.1, 0.4], [0.1, 0.3, 0.6]])
    assert ev.worst_indices(y_true, y_pred, proba, 3, classes=[0, 1, 2]).tolist() == [1, 2, 0]


# --------------------------------------------------------------------------- figures
def _digits(n: int = 30, side: int = 16):
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, size=(n, side * side))
    classes = np.array([str(i) for i in range(1, 11)])
    y_true = classes[rng.integers(0, 10, n)]
    proba = _softmax(rng.normal(size=(n, 10)))
    y_pred = classes[proba.argmax(axis=1)]
    return images, y_true, y_pred, proba, classes


def test_plot_confusion_writes_png(tmp_path):
    _, y_true, y_pred, _, classes = _digits()
    out = ev.plot_confusion(
        y_true, y_pred, classes, tmp_path / "reports" / "confusion.png", label_names={"10": "0"}
    )
    _assert_png(out, tmp_path / "reports")


def test_plot_worst_digits_writes_png_with_mistakes_and_without(tmp_path):
    images, y_true, y_pred, proba, classes = _digits()
    path = tmp_path / "worst.png"
    ev.plot_worst_digits(images, y_true, y_pred, proba, classes, path, n=6)
    _assert_png(path, tmp_path)
    # A perfect model: the figure says so instead of failing.
    ev.plot_worst_digits(images, y_pred, y_pred, proba, classes, path)
    _assert_png(path, tmp_path)
    with pytest.raises(ValueError, match="flat rows of 1 x 16 x 16"):
        ev.plot_worst_digits(images[:, :100], y_true, y_pred, proba, classes, path)


def test_plot_learning_curves_writes_png(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "valid_loss": 1.2 / e + 0.01 * e,
            "valid_accuracy": 1 - 0.5 / e,
            "lr": 0.01 * 0.5**e,
            "seconds": 0.1,
        }
        for e in range(1, 6)
    ]
    _assert_png(ev.plot_learning_curves(history, tmp_path / "curves.png"), tmp_path)
    # No validation slice, a regressor's score name: both still plot.
    plain = [{"epoch": e, "train_loss": 1 / e, "lr": 0.01} for e in range(1, 4)]
    _assert_png(ev.plot_learning_curves(plain, tmp_path / "plain.png"), tmp_path)
    r2 = [{"epoch": 1, "train_loss": 1.0, "valid_loss": 1.1, "valid_r2": 0.3, "lr": 0.1}]
    _assert_png(ev.plot_learning_curves(r2, tmp_path / "r2.png"), tmp_path)
    with pytest.raises(ValueError, match="empty"):
        ev.plot_learning_curves([], tmp_path / "none.png")


def test_plot_model_comparison_writes_png(tmp_path):
    scores = {"torch": 0.986, "logreg": 0.94, "svc": 0.975, "broken": float("nan")}
    out = ev.plot_model_comparison(scores, tmp_path / "cmp.png")
    _assert_png(out, tmp_path)
    _assert_png(
        ev.plot_model_comparison({"ridge": -3.0, "mlp": 0.8}, tmp_path / "r2.png", "r2"), tmp_path
    )


def test_plot_model_comparison_lower_is_better(tmp_path):
    out = ev.plot_model_comparison(
        {"ridge": 12.5, "mlp": 8.1}, tmp_path / "rmse.png", "rmse", higher_is_better=False
    )
    _assert_png(out, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        ev.plot_model_comparison({}, tmp_path / "none.png")


def test_plot_grouped_comparison_one_panel_per_data_set(tmp_path):
    groups = {
        "adult": {"torch_mlp": 0.863, "hist_gradient_boosting": 0.871},
        "cpu": {"torch_mlp": 0.94, "ridge": 0.897, "hist_gradient_boosting": float("nan")},
    }
    out = ev.plot_grouped_comparison(groups, tmp_path / "g.png", {"adult": "accuracy", "cpu": "R²"})
    _assert_png(out, tmp_path)
    with pytest.raises(ValueError, match="at least one score"):
        ev.plot_grouped_comparison({"adult": {}}, tmp_path / "none.png", {"adult": "accuracy"})


def test_plot_replaces_existing_file(tmp_path):
    path = tmp_path / "confusion.png"
    path.write_bytes(b"old")
    ev.plot_confusion(["a", "b"], ["a", "a"], ["a", "b"], path)
    _assert_png(path, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


def test_comparison_table_markdown():
    table = ev.comparison_table(
        {"torch": {"accuracy": 0.98612, "f1_macro": 0.9851}, "svc": {"accuracy": 0.97}}
    )
    lines = table.strip().splitlines()
    assert lines[0] == "| model | accuracy | f1_macro |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| torch | 0.9861 | 0.9851 |"
    assert lines[3] == "| svc | 0.9700 |  |"
    assert ev.comparison_table({}) == ""


def test_natural_order_counts_numbers_as_numbers():
    usps = np.unique([str(k) for k in range(1, 11)])  # classes_ order: "1", "10", "2", ...
    assert usps[ev.natural_order(usps)].tolist() == [str(k) for k in range(1, 11)]
    assert ev.natural_order(np.array([10, 2, -1])).tolist() == [2, 1, 0]
    assert ev.natural_order(["2.5", "10", "-3"]).tolist() == [2, 0, 1]
    text = ["item10", "item2", "b", "a", "item1"]
    assert [text[i] for i in ev.natural_order(text)] == ["a", "b", "item1", "item2", "item10"]
    assert ev.natural_order(["no", "yes"]).tolist() == [0, 1]


def test_display_labels_name_each_class_and_refuse_a_name_twice():
    names = {str(k + 1): str(k) for k in range(10)}  # USPS: "10" is the digit 9
    assert ev.display_labels(["1", "2", "10"], names) == ["0", "1", "9"]
    assert ev.display_labels(np.array([1, 2]), None) == [1, 2]  # no names: labels as they are
    assert ev.display_labels(np.array([1, 2]), {"1": "one"}) == ["one", "2"]
    with pytest.raises(ValueError, match="'1' and '2' both as 'x'"):
        ev.display_labels(["1", "2"], {"1": "x", "2": "x"})
