#!/usr/bin/env python
"""USPS recipes on the canonical split: each variant of the entry's train section, over seeds.

USPS's original split (the first 7291 rows train, the last 2007 test: ``split.method: ordered``),
in one process. Every recipe is USPS's entry of params.yaml with some keys of its ``train``
section set, as ``--set datasets.usps.train.KEY=VALUE`` sets them (and validated as params.yaml
is), trained by the train stage's own estimator
(``stages.train.build_estimator``) on the preprocess stage's features, and scored as the evaluate
stage scores it (with test-time augmentation when the entry's ``evaluate.tta`` says so).

The table gives each recipe's test accuracy per seed, its mean ± std, the mean log loss and fit
seconds. Then the error floor: how many test images *every* model of the run misclassifies, and
the accuracy of all the run's models averaged (``--floor-png`` draws those images).

    python benchmarks/usps_recipes.py                     # recipe and previous, 3 seeds
    python benchmarks/usps_recipes.py --recipes previous elastic recipe --seeds 0 10 20 30 40
    python benchmarks/usps_recipes.py --recipes recipe --seeds 0 --train-rows 500 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from _usps import REPO, fit_and_score, load_usps, stage_features
from sklearn.metrics import log_loss

from tandem import config

N_TRAIN = 7291  # USPS's original training rows
# the recipe before the deeper network: two blocks, affine augmentation only, 25 epochs
PREVIOUS = ["augment.elastic=0.0", "max_epochs=25", "module_kwargs.cnn.channels=[32, 64]",
            "module_kwargs.cnn.head=dense"]  # fmt: skip
NO_ELASTIC_25 = ["augment.elastic=0.0", "max_epochs=25"]
# each recipe: keys of USPS's train section set as `--set datasets.usps.train.KEY=VALUE` would
# (or `dvc exp run -S ++datasets.usps.train.KEY=VALUE`); [] is the entry as params.yaml has it
RECIPES: dict[str, list[str]] = {
    "recipe": [],
    "previous": PREVIOUS,
    "all-rows": [*PREVIOUS, "validation_fraction=0.0"],
    "weight-decay-0.05": [*PREVIOUS, "weight_decay=0.05"],
    "elastic": [*PREVIOUS, "augment.elastic=1.0"],
    "wide": [*PREVIOUS, "module_kwargs.cnn.channels=[48, 96]"],
    "three-blocks": NO_ELASTIC_25,
    "three-blocks-40": ["augment.elastic=0.0"],
    "three-blocks-elastic": ["max_epochs=25"],
    "three-blocks-narrow": [*NO_ELASTIC_25, "module_kwargs.cnn.channels=[24, 48, 96]"],
    "deep-wide": [*NO_ELASTIC_25, "module_kwargs.cnn.channels=[48, 96, 192]"],
}


def recipe_params(raw: dict, overrides: list[str], seed: int, name: str = "usps"):
    """Validated params whose entry ``name`` trains with ``overrides`` (``KEY=VALUE`` of its train
    section, applied as the CLI's ``--set`` applies them; later ones win) and ``seed``."""
    keys = [f"datasets.{name}.train.{text}" for text in [*overrides, f"seed={seed}"]]
    return config.validate(config.apply_overrides(raw, keys))


def error_floor(predictions: list[np.ndarray], y_test: np.ndarray) -> np.ndarray:
    """Indices of the test rows that every model misclassifies."""
    wrong = np.array([pred != y_test for pred in predictions])
    return np.flatnonzero(wrong.all(axis=0))


def draw(images: np.ndarray, titles: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 7
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image.reshape(16, 16), cmap="gray_r")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["recipe", "previous"],
                        choices=sorted(RECIPES))  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 10, 20])
    parser.add_argument("--epochs", type=int, default=None, help="override: a smoke run")
    parser.add_argument("--train-rows", type=int, default=N_TRAIN, help="fewer: a smoke run")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--floor-png", default=None, help="draw the images every model misses")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    raw = yaml.safe_load(Path(args.params).read_text())
    X, y, where = load_usps(args.data_home)
    X_train, y_train, X_test, y_test = X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]
    X_train, y_train = X_train[: args.train_rows], y_train[: args.train_rows]
    print(f"USPS canonical split ({where}): {len(y_train)} train / {len(y_test)} test rows\n")
    print("| recipe | " + " | ".join(f"seed {s}" for s in args.seeds)
          + " | mean ± std | log loss | fit s |")  # fmt: skip
    print("|---|" + "---:|" * (len(args.seeds) + 3))
    # recipes set train keys only: the preprocess stage's features are the same for all of them
    features = stage_features(config.validate(raw), "usps", X_train, y_train, X_test)
    results, predictions, probas = {}, [], []
    for name in args.recipes:
        rows = []
        for seed in args.seeds:
            params = recipe_params(raw, RECIPES[name], seed)
            fit = fit_and_score(params, "usps", features[0], y_train, features[1], y_test,
                                epochs=args.epochs)  # fmt: skip
            classes = fit["classes"]
            fit["log_loss"] = float(log_loss(y_test, fit["proba"], labels=classes))
            predictions.append(fit.pop("predicted"))
            probas.append(fit.pop("proba"))
            rows.append({k: v for k, v in fit.items() if k != "classes"})
        acc = np.array([r["accuracy"] for r in rows])
        results[name] = {"override": RECIPES[name], "runs": rows, "mean": float(acc.mean()),
                         "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0}  # fmt: skip
        print(f"| {name} | " + " | ".join(f"{a:.4f}" for a in acc)
              + f" | {acc.mean():.4f} ± {results[name]['std']:.4f}"
              + f" | {np.mean([r['log_loss'] for r in rows]):.3f}"
              + f" | {np.mean([r['seconds'] for r in rows]):.1f} |", flush=True)  # fmt: skip
    floor = error_floor(predictions, y_test)
    said = classes[np.mean(probas, axis=0).argmax(axis=1)]  # all the models averaged
    averaged = float(np.mean(said == y_test))
    models = f"{len(predictions)} model{'s' * (len(predictions) != 1)}"
    print(f"\n{models}: {len(floor)} test images are misclassified by every one "
          f"(no vote of these models beats {1 - len(floor) / len(y_test):.4f}); "
          f"all of them averaged score {averaged:.4f}")  # fmt: skip
    if args.floor_png and len(floor):
        names = (raw["datasets"]["usps"].get("evaluate") or {}).get("label_names") or {}
        shown = lambda label: names.get(str(label), str(label))  # noqa: E731
        titles = [f"label {shown(y_test[i])}, said {shown(said[i])}" for i in floor]
        draw(X_test[floor], titles, args.floor_png)
        print(f"drew them in {args.floor_png}")
    if args.json:
        out = {"recipes": results, "floor": floor.tolist(), "averaged": averaged}
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
