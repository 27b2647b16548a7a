"""Metrics, plot data for ``dvc plots`` and PNG figures.

Why a layer of its own: the ``evaluate`` and ``baselines`` stages (and the tabular branch) score
torch and sklearn models the same way, so the numbers they write are comparable. Everything here is
a plain function of arrays (labels, probabilities, images) and paths; it knows nothing about
estimators, the CLI or stages.

Figures are written atomically through ``tandem.io.atomic_path``, so an interrupted run never
leaves a half-written figure for DVC to cache. Figures are drawn on
:class:`matplotlib.figure.Figure` objects directly: no pyplot global state, no GUI backend,
thread-safe enough for tests running side by side.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    r2_score,
    roc_auc_score,
    roc_curve,
)

from tandem.io import atomic_path

__all__ = [
    "classification_metrics",
    "comparison_table",
    "confusion_rows",
    "curve_rows",
    "display_labels",
    "learning_rows",
    "natural_order",
    "plot_confusion",
    "plot_learning_curves",
    "plot_model_comparison",
    "plot_worst_digits",
    "regression_metrics",
    "regression_rows",
    "roc_rows",
    "worst_indices",
]

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers
def _labels(values: Any) -> np.ndarray:
    """A 1-d numpy array from a list, Series or array, so pandas and numpy inputs behave alike."""
    return np.asarray(values).ravel()


def _proba(proba: Any, n_classes: int, n_samples: int) -> np.ndarray:
    """Class probabilities as a 2-d float array, checked against the classes and samples."""
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape != (n_samples, n_classes):
        raise ValueError(
            f"proba must have shape (n_samples, n_classes) = ({n_samples}, {n_classes}); "
            f"got {p.shape}"
        )
    return p


def _display(label: Any, names: Mapping[Any, str] | None) -> str:
    """A label as shown: its name from ``names`` if any (USPS "10" -> "0"), else ``str``."""
    if names is not None:
        if label in names:
            return str(names[label])
        if str(label) in names:
            return str(names[str(label)])
    return str(label)


def natural_order(labels: Sequence[Any]) -> np.ndarray:
    """Indices that put ``labels`` in the order a reader counts them: by value when every label
    is a number (USPS's "1", "2", ..., "10", not the string order "1", "10", "2"), else as text
    with each run of digits compared as a number ("item2" before "item10"). Ties keep their
    order, so the result is deterministic."""
    values = [v.item() if isinstance(v, np.generic) else v for v in _labels(labels).tolist()]
    numbers = [_as_number(v) for v in values]
    if all(n is not None for n in numbers):
        return np.asarray(sorted(range(len(values)), key=lambda i: numbers[i]), dtype=np.intp)

    def key(i: int) -> tuple:
        chunks = re.split(r"(\d+)", str(values[i]))
        return tuple((0, int(c), "") if c.isdigit() else (1, 0, c) for c in chunks if c)

    return np.asarray(sorted(range(len(values)), key=key), dtype=np.intp)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    try:
        number = float(str(value))
    except ValueError:
        return None
    return None if math.isnan(number) else number


def display_labels(classes: Sequence[Any], names: Mapping[str, str] | None) -> list[Any]:
    """Each class as a reader knows it: its entry in ``names`` (keys are the labels as strings,
    as params.yaml writes them: USPS's {"10": "9"}), else the label as a string; with no names,
    the labels themselves (numbers stay numbers). Two classes shown with one name are refused,
    naming both: a prediction would not say which of them it is."""
    values = [v.item() if isinstance(v, np.generic) else v for v in _labels(classes).tolist()]
    if not names:
        return values
    shown = [str(names.get(str(v), v)) for v in values]
    seen: dict[str, Any] = {}
    for value, name in zip(values, shown, strict=True):
        if name in seen:
            raise ValueError(
                f"label_names shows the classes {seen[name]!r} and {value!r} both as {name!r}; "
                "give each class its own name"
            )
        seen[name] = value
    return shown


def save_figure(fig: Figure, path: PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically; returns the final path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


# --------------------------------------------------------------------------- metrics
def classification_metrics(
    y_true: Any, y_pred: Any, proba: Any, classes: Sequence[Any]
) -> dict[str, float]:
    """The classification scores every stage reports, as plain floats ready for ``metrics/*.json``.

    ``classes`` is the column order of ``proba`` (an estimator's ``classes_``); it need not be
    sorted (sklearn's ``roc_auc_score`` and ``log_loss`` assume sorted labels, so the columns are
    reordered here rather than silently mismatched). Passing the classes as ``labels`` keeps ROC AUC
    and log loss defined when a class is absent from the test set. In the binary case ROC AUC scores
    ``proba[:, 1]`` with ``classes[1]`` as the positive class. Macro F1 runs over the labels that
    occur in ``y_true`` or ``y_pred``, as sklearn's does. An undefined score (ROC AUC when a class
    never occurs in ``y_true``) is NaN, as sklearn reports it. Macro recall is left out: it is
    balanced accuracy, the same number.
    """
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    classes_in = _labels(classes)
    p = _proba(proba, len(classes_in), len(y_true))
    if len(classes_in) == 2:
        auc = roc_auc_score(y_true == classes_in[1], p[:, 1])
    order = np.argsort(classes_in, kind="stable")
    labels, p = classes_in[order].tolist(), p[:, order]
    if len(labels) > 2:
        auc = roc_auc_score(y_true, p, multi_class="ovr", average="macro", labels=labels)
    elif len(labels) < 2:
        raise ValueError(f"classification needs at least 2 classes; got {labels}")
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "roc_auc_ovr": float(auc),
        "log_loss": float(log_loss(y_true, p, labels=labels)),
    }


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """RMSE, MAE and R² as floats: RMSE is in the target's unit, R² compares across sets (MSE is
    RMSE squared: the same number twice)."""
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    return {
        "rmse": math.sqrt(float(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def headline(scores: Mapping[str, float]) -> str:
    """The one score that ranks models on an entry: accuracy, or R² for regression."""
    return "accuracy" if "accuracy" in scores else "r2"


# ------------------------------------------------------------------------ plot data for dvc plots
def confusion_rows(y_true: Any, y_pred: Any) -> list[dict[str, str]]:
    """One ``{"actual", "predicted"}`` row per sample: what DVC's ``confusion`` template counts
    itself.

    Labels are strings so the JSON is the same whether the model predicted ints or strings.
    """
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} samples but y_pred has {len(y_pred)}")
    return [{"actual": str(a), "predicted": str(p)} for a, p in zip(y_true, y_pred, strict=True)]


def roc_rows(y_true: Any, proba: Any, classes: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-class one-vs-rest ROC points ``{"class", "fpr", "tpr", "threshold"}`` for ``dvc plots``.

    ``drop_intermediate`` keeps only the corners of each curve, so the file stays small. sklearn's
    first threshold is ``inf`` (the "predict nothing" point), which is not valid JSON; it is
    replaced by the next threshold + 1, the convention sklearn itself used before 1.3. A class that
    is absent from ``y_true`` (or is all of it) has no ROC curve and is skipped rather than written
    as NaN.
    """
    y_true = _labels(y_true)
    classes = list(_labels(classes))
    p = _proba(proba, len(classes), len(y_true))
    rows: list[dict[str, Any]] = []
    for j, cls in enumerate(classes):
        positive = y_true == cls
        if positive.all() or not positive.any():
            continue
        fpr, tpr, thresholds = roc_curve(positive, p[:, j], drop_intermediate=True)
        finite = thresholds[np.isfinite(thresholds)]
        top = float(finite.max()) + 1.0 if finite.size else 1.0
        for f, t, th in zip(fpr, tpr, thresholds, strict=True):
            threshold = float(th) if np.isfinite(th) else top
            rows.append(
                {"class": str(cls), "fpr": float(f), "tpr": float(t), "threshold": threshold}
            )
    return rows


def curve_rows(y_true: Any, proba: Any, classes: Sequence[Any]) -> list[dict[str, Any]]:
    """ROC and precision-recall points of every class (one-vs-rest) in one list, for one chart:
    ``{"curve", "class", "point", "x", "y"}``: for ``curve`` "roc" x is the false positive rate
    and y the true positive rate, for "pr" x is recall and y precision; ``point`` orders each
    curve. Every row has the same keys (DVC infers fields from them). Intermediate points are
    dropped; a class absent from ``y_true`` is skipped."""
    y_true = _labels(y_true)
    classes = list(_labels(classes))
    p = _proba(proba, len(classes), len(y_true))
    rows: list[dict[str, Any]] = [
        {"curve": "roc", "class": r["class"], "point": i, "x": r["fpr"], "y": r["tpr"]}
        for i, r in enumerate(roc_rows(y_true, p, classes))
    ]
    for j, cls in enumerate(classes):
        positive = y_true == cls
        if positive.all() or not positive.any():
            continue
        precision, recall, _ = precision_recall_curve(positive, p[:, j], drop_intermediate=True)
        rows += [
            {"curve": "pr", "class": str(cls), "point": i, "x": round(float(r), 6),
             "y": round(float(q), 6)}
            for i, (r, q) in enumerate(zip(recall, precision, strict=True))
        ]  # fmt: skip
    return rows


def regression_rows(y_true: Any, y_pred: Any) -> tuple[list[dict], list[dict]]:
    """Plot data for a regressor: ``{"actual", "predicted"}`` per test row, and the residuals
    ``{"predicted", "residual"}`` (actual - predicted)."""
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    points = [
        {"actual": float(a), "predicted": round(float(b), 6)}
        for a, b in zip(y_true, y_pred, strict=True)
    ]
    residuals = [
        {"predicted": round(float(b), 6), "residual": round(float(a - b), 6)}
        for a, b in zip(y_true, y_pred, strict=True)
    ]
    return points, residuals


def learning_rows(history: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Plot data from an estimator's ``history_``: the losses in long form, ``{"epoch", "split":
    "train" | "valid", "loss"}`` (one line per split in one chart), and ``{"epoch",
    "valid_score"}`` per epoch (accuracy for a classifier, R² for a regressor; ``None`` where the
    fit held out no validation rows)."""
    losses, scores = [], []
    for record in history:
        epoch = int(record["epoch"])
        for split in ("train", "valid"):
            if record.get(f"{split}_loss") is not None:
                losses.append({"epoch": epoch, "split": split,
                               "loss": float(record[f"{split}_loss"])})  # fmt: skip
        key = next((k for k in record if k.startswith("valid_") and k != "valid_loss"), None)
        score = record.get(key) if key else None
        scores.append({"epoch": epoch, "valid_score": None if score is None else float(score)})
    return losses, scores


# --------------------------------------------------------------------------- figures
def plot_confusion(
    y_true: Any,
    y_pred: Any,
    labels: Sequence[Any],
    path: PathLike,
    title: str = "Confusion matrix (test)",
    *,
    label_names: Mapping[Any, str] | None = None,
) -> Path:
    """A heatmap of the confusion matrix with every count written in its cell, saved as PNG.

    ``labels`` fixes the row/column order (an estimator's ``classes_``); ``label_names`` optionally
    maps them to what a reader expects (USPS's "10" is the digit 0).
    """
    labels = list(_labels(labels))
    cm = confusion_matrix(_labels(y_true), _labels(y_pred), labels=labels)
    names = [_display(label, label_names) for label in labels]
    k = len(labels)
    size = max(4.0, 0.55 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names), default=0) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    threshold = cm.max() / 2.0 if cm.size else 0.0
    fontsize = 9 if k <= 12 else 7
    for i in range(k):
        for j in range(k):
            colour = "white" if cm[i, j] > threshold else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=fontsize)
    return save_figure(fig, path)


def worst_indices(
    y_true: Any,
    y_pred: Any,
    proba: Any,
    n: int,
    classes: Sequence[Any] | None = None,
) -> np.ndarray:
    """Indices of the ``n`` misclassified samples the model was most sure about, most confident
    first.

    Confidence is the probability of the predicted class: its ``proba`` column when ``classes`` is
    given, else the row maximum (the same thing when predictions are the argmax). Ties keep sample
    order, so the choice is deterministic. Fewer than ``n`` mistakes returns them all; none returns
    an empty array.
    """
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[0] != len(y_true) or len(y_pred) != len(y_true):
        raise ValueError(
            f"y_true ({len(y_true)}), y_pred ({len(y_pred)}) and proba rows ({p.shape}) must match"
        )
    wrong = np.flatnonzero(y_true != y_pred)
    if wrong.size == 0 or n <= 0:
        return np.empty(0, dtype=np.intp)
    confidence = _predicted_confidence(y_pred, p, classes)[wrong]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:n]]


def _predicted_confidence(
    y_pred: np.ndarray, p: np.ndarray, classes: Sequence[Any] | None
) -> np.ndarray:
    """Probability given to each predicted label (row max when the column order is unknown)."""
    if classes is None:
        return p.max(axis=1)
    column = {c: j for j, c in enumerate(_labels(classes).tolist())}
    try:
        cols = np.array([column[label] for label in y_pred.tolist()], dtype=np.intp)
    except KeyError as exc:
        raise ValueError(f"predicted label {exc.args[0]!r} is not one of classes") from None
    return p[np.arange(len(y_pred)), cols]


def plot_worst_digits(
    images: Any,
    y_true: Any,
    y_pred: Any,
    proba: Any,
    classes: Sequence[Any],
    path: PathLike,
    n: int = 25,
    shape: Sequence[int] = (16, 16),
    *,
    label_names: Mapping[Any, str] | None = None,
    cmap: str = "gray",
) -> Path:
    """A grid of the ``n`` most confidently wrong test images, each titled "true X / pred Y
    (p=0.97)".

    Why these: confident mistakes show what the model finds hard (ambiguous digits, mislabels),
    which accuracy alone hides. ``images`` are flat rows of pixels (the raw features, not the
    scaled ones) of ``shape``: (height, width), or (channels, height, width) channel-major.
    """
    x = np.asarray(images, dtype=float)
    dims = (1, *shape) if len(shape) == 2 else tuple(shape)
    if x.ndim != 2 or x.shape[1] != math.prod(dims):
        raise ValueError(
            f"images must be flat rows of {' x '.join(map(str, dims))} = {math.prod(dims)} "
            f"pixels; got {x.shape}"
        )
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if x.shape[0] != len(y_true):
        raise ValueError(f"images has {x.shape[0]} rows but y_true has {len(y_true)} labels")
    p = _proba(proba, len(_labels(classes)), len(y_true))
    idx = worst_indices(y_true, y_pred, p, n, classes=classes)
    conf = _predicted_confidence(y_pred, p, classes)

    if idx.size == 0:
        fig = Figure(figsize=(4, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=12)
        return save_figure(fig, path)

    cols = math.ceil(math.sqrt(idx.size))
    rows = math.ceil(idx.size / cols)
    fig = Figure(figsize=(1.7 * cols, 1.9 * rows + 0.4), layout="constrained")
    fig.suptitle(f"{idx.size} most confident mistakes")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, idx, strict=False):
        image = x[i].reshape(dims)
        if dims[0] == 1:
            ax.imshow(image[0], cmap=cmap, interpolation="nearest")
        else:  # colour: channels last, stretched to [0, 1]
            image = image.transpose(1, 2, 0)
            ax.imshow((image - image.min()) / max(np.ptp(image), 1e-12), interpolation="nearest")
        true, pred = _display(y_true[i], label_names), _display(y_pred[i], label_names)
        ax.set_title(f"true {true} / pred {pred}\n(p={conf[i]:.2f})", fontsize=8)
    return save_figure(fig, path)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """One column of the history as floats, NaN where an epoch lacks it (so lines simply break)."""
    out = []
    for record in history:
        value = record.get(key)
        out.append(float(value) if value is not None else math.nan)
    return np.asarray(out, dtype=float)


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]], path: PathLike, *, best_epoch: int | None = None
) -> Path:
    """Losses and validation score per epoch (from an estimator's ``history_``), saved as PNG.

    Left: ``train_loss`` and ``valid_loss`` with ``best_epoch`` marked (the epoch whose weights
    the model holds: the estimator's ``best_epoch_``; without it, the lowest validation loss's);
    the learning rate on a secondary axis, since schedules explain bends in the loss. Right:
    every ``valid_*`` score other than the loss (``valid_accuracy``, ``valid_r2``, ...), or a
    note when training ran without a validation slice.
    """
    if not history:
        raise ValueError("history is empty: there are no epochs to plot")
    epochs = _series(history, "epoch")
    if np.isnan(epochs).any():
        epochs = np.arange(1, len(history) + 1, dtype=float)
    keys = {k for record in history for k in record}
    score_keys = sorted(k for k in keys if k.startswith("valid_") and k != "valid_loss")

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_score = fig.subplots(1, 2)

    ax_loss.plot(epochs, _series(history, "train_loss"), marker=".", label="train_loss")
    if "valid_loss" in keys:
        valid_loss = _series(history, "valid_loss")
        ax_loss.plot(epochs, valid_loss, marker=".", label="valid_loss")
        if best_epoch is None and np.isfinite(valid_loss).any():
            best_epoch = int(epochs[int(np.nanargmin(valid_loss))])
    if best_epoch is not None:
        ax_loss.axvline(best_epoch, color="grey", linestyle=":", label=f"saved epoch {best_epoch}")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    handles, names = ax_loss.get_legend_handles_labels()
    if "lr" in keys:
        ax_lr = ax_loss.twinx()
        lr = _series(history, "lr")
        (line,) = ax_lr.plot(epochs, lr, color="tab:green", alpha=0.5, linewidth=1, label="lr")
        ax_lr.set_ylabel("learning rate")
        if np.nanmin(lr) > 0 and np.nanmax(lr) / np.nanmin(lr) > 10:
            ax_lr.set_yscale("log")
        handles.append(line)
        names.append("lr")
    ax_loss.legend(handles, names, loc="upper right", fontsize=8)

    if score_keys:
        for key in score_keys:
            ax_score.plot(epochs, _series(history, key), marker=".", label=key)
        ax_score.legend(loc="lower right", fontsize=8)
        ax_score.set_ylabel("score")
    else:
        ax_score.text(
            0.5, 0.5, "no validation score", ha="center", va="center", transform=ax_score.transAxes
        )
    ax_score.set_xlabel("epoch")
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not score_keys:
        ax_score.set_xticks([])
        ax_score.set_yticks([])
    ax_score.set_title("validation score")
    return save_figure(fig, path)


def plot_model_comparison(
    scores: Mapping[str, float],
    path: PathLike,
    metric: str = "accuracy",
    *,
    higher_is_better: bool = True,
) -> Path:
    """Horizontal bars, one per model, best at the top, each labelled with its score.

    Used for torch against the sklearn baselines and across tabular datasets. The score sits in the
    bar's label; a NaN score is labelled "n/a" with an empty bar, so a failed model stays visible.
    Pass ``higher_is_better=False`` for errors (rmse, log_loss) so the best still comes first.
    """
    if not scores:
        raise ValueError("scores is empty: there are no models to compare")
    fig = Figure(figsize=(7, 0.45 * len(scores) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    _score_bars(ax, scores, metric, higher_is_better)
    ax.set_title(f"model comparison: {metric}")
    return save_figure(fig, path)


def plot_grouped_comparison(
    groups: Mapping[str, Mapping[str, float]], path: PathLike, metrics: Mapping[str, str]
) -> Path:
    """One panel of bars per group (a tabular data set), each on its own scale and metric."""
    if not groups or not all(groups.values()):
        raise ValueError("every group needs at least one score")
    heights = [0.45 * len(scores) + 0.9 for scores in groups.values()]
    fig = Figure(figsize=(7, sum(heights) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, scores) in zip(axes, groups.items(), strict=True):
        _score_bars(ax, scores, metrics[name], higher_is_better=True)
        ax.set_title(f"{name}: {metrics[name]}", loc="left")
    return save_figure(fig, path)


def _score_bars(ax, scores: Mapping[str, float], metric: str, higher_is_better: bool) -> None:
    """Horizontal bars, best at the top, the score in each label (a NaN one: "n/a", no bar)."""
    items = [(str(name), float(value)) for name, value in scores.items()]
    sign = -1.0 if higher_is_better else 1.0
    items.sort(key=lambda kv: (math.isnan(kv[1]), 0.0 if math.isnan(kv[1]) else sign * kv[1]))
    items.reverse()  # barh draws bottom-up; put the best at the top
    # The score goes in the tick label: always readable, never collides with a bar or the frame.
    names = [f"{name} ({'n/a' if math.isnan(v) else f'{v:.4f}'})" for name, v in items]
    values = [0.0 if math.isnan(v) else v for _, v in items]
    ax.barh(names, values, color="tab:blue")
    finite = [v for _, v in items if not math.isnan(v)]
    lo = min(finite, default=0.0)
    hi = max(finite, default=1.0)
    if finite and lo > 0 and hi <= 1.0:
        # Scores in (0, 1] close together: zoom in so differences are visible.
        ax.set_xlim(max(0.0, lo - (hi - lo) * 0.5 - 0.02), min(1.0, hi + (hi - lo) * 0.15 + 0.01))
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(metric)


def comparison_table(
    rows: Mapping[str, Mapping[str, float]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:.4f}",
) -> str:
    """A Markdown table, models as rows and metrics as columns (4 decimals), for a report file.

    Columns are the union of metrics in first-seen order; a model lacking a metric gets an empty
    cell.
    """
    if not rows:
        return ""
    metrics: list[str] = []
    for scores in rows.values():
        for key in scores:
            if key not in metrics:
                metrics.append(key)
    lines = [
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for model, scores in rows.items():
        cells = []
        for key in metrics:
            value = scores.get(key)
            if value is None:
                cells.append("")
            elif isinstance(value, int | float | np.number):
                cells.append(fmt(float(value)))
            else:
                cells.append(str(value))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
