#!/usr/bin/env python
"""USPS recipes: each variant of the entry's train section ranked on a selection set carved from
the training rows, then the chosen one scored once on the canonical test split.

USPS's original split is the first 7291 rows train, the last 2007 test (``split.method:
ordered``). Every recipe is USPS's entry of params.yaml with some keys of its ``train`` section
set, as ``--set datasets.usps.train.KEY=VALUE`` sets them (and validated as params.yaml is),
trained by the train stage's own estimator (``stages.train.build_estimator``) on the preprocess
stage's features. Two phases, in one process:

1. **Selection, training rows only.** A stratified tenth of the training rows (``selection_split``:
   seeded, the same rows for every recipe and seed) is held out; the preprocessor is fitted and
   every recipe trained on the other rows (its own ``validation_fraction`` still applies inside
   them), and scored on the held-out rows as the evaluate stage scores (with test-time
   augmentation when the entry's ``evaluate.tta`` is on; the plain network's accuracy beside
   it). The recipes are ranked by mean selection accuracy over the seeds, compared exactly as
   error counts (ties: lower mean log loss). The test rows are not loaded during this phase.
2. **The chosen recipe, on the test split.** Only then are the test rows read: the chosen recipe
   is trained as ``dvc repro`` trains it (all the training rows, its own validation fraction) for
   ``--final-seeds``, and its test accuracy is printed once (plain and as evaluated), with the
   test images all of its models misclassify (``--floor-png`` draws them).

    python benchmarks/usps_recipes.py    # every recipe, seeds 0 10 20: ~75 min on 2 busy cores
    python benchmarks/usps_recipes.py --recipes two-blocks three-blocks --seeds 0 10 20 30 40
    python benchmarks/usps_recipes.py --recipes two-blocks three-blocks --seeds 0 --final-seeds 0 \\
        --train-rows 500 --epochs 1      # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from _usps import REPO, fit_estimator, load_usps, score_estimator, stage_features
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

from tandem import config

N_TRAIN = 7291  # USPS's original training rows
SELECTION_FRACTION = 0.1  # of the training rows, held out to rank the recipes
SELECTION_SEED = 0  # the same selection rows for every recipe and seed
# Each recipe: keys of USPS's train section set as `--set datasets.usps.train.KEY=VALUE` would
# (or `dvc exp run -S ++datasets.usps.train.KEY=VALUE`). Every recipe sets the network, its
# length and its elastic distortion itself, so that it means the same whatever the entry says;
# the rest (augmentation ranges, EMA, batch, lr, dropout) is the entry's.
TWO_BLOCKS = ["augment.elastic=0.0", "max_epochs=25", "module_kwargs.cnn.channels=[32, 64]",
              "module_kwargs.cnn.head=dense"]  # fmt: skip
THREE_BLOCKS = ["augment.elastic=0.0", "max_epochs=25", "module_kwargs.cnn.channels=[32, 64, 128]",
                "module_kwargs.cnn.head=global"]  # fmt: skip
RECIPES: dict[str, list[str]] = {
    "two-blocks": TWO_BLOCKS,
    "all-rows": [*TWO_BLOCKS, "validation_fraction=0.0"],
    "weight-decay-0.05": [*TWO_BLOCKS, "weight_decay=0.05"],
    "elastic": [*TWO_BLOCKS, "augment.elastic=1.0"],
    "wide": [*TWO_BLOCKS, "module_kwargs.cnn.channels=[48, 96]"],
    "three-blocks": THREE_BLOCKS,
    "three-blocks-40": [*THREE_BLOCKS, "max_epochs=40"],
    "three-blocks-elastic": [*THREE_BLOCKS, "augment.elastic=1.0"],
    "three-blocks-elastic-40": [*THREE_BLOCKS, "augment.elastic=1.0", "max_epochs=40"],
    "three-blocks-narrow": [*THREE_BLOCKS, "module_kwargs.cnn.channels=[24, 48, 96]"],
    "deep-wide": [*THREE_BLOCKS, "module_kwargs.cnn.channels=[48, 96, 192]"],
}


def recipe_params(raw: dict, overrides: list[str], seed: int, name: str = "usps"):
    """Validated params whose entry ``name`` trains with ``overrides`` (``KEY=VALUE`` of its train
    section, applied as the CLI's ``--set`` applies them; later ones win) and ``seed``."""
    keys = [f"datasets.{name}.train.{text}" for text in [*overrides, f"seed={seed}"]]
    return config.validate(config.apply_overrides(raw, keys))


def canonical_rows(data_home: str | None, part: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(X, y, where) of one part of USPS's canonical split: ``train`` (the first ``N_TRAIN``
    rows) or ``test`` (the rest). Each part is read on its own, so that the test rows are in
    memory only once they are asked for."""
    X, y, where = load_usps(data_home)
    rows = {"train": slice(None, N_TRAIN), "test": slice(N_TRAIN, None)}[part]
    return X[rows], y[rows], where


def selection_split(y: np.ndarray, fraction: float = SELECTION_FRACTION,
                    seed: int = SELECTION_SEED) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(fitting rows, selection rows): sorted indices into the training rows, the selection rows
    a stratified ``fraction`` of them. Seeded, so every recipe and seed sees the same rows."""
    fit, selection = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y,
                                      random_state=seed)  # fmt: skip
    return np.sort(fit), np.sort(selection)


def _summary(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def rank_recipes(raw: dict, names: list[str], seeds: list[int], X: np.ndarray, y: np.ndarray,
                 *, epochs: int | None = None) -> dict:  # fmt: skip
    """Each recipe trained on the fitting rows of the training rows (``X``, ``y``) for each seed
    and scored on the selection rows; ``{name: {...}}`` in rank order (best first: mean selection
    accuracy as the evaluate stage scores: ``rank_order``). Takes training rows only."""
    fit_rows, selection = selection_split(y)
    # recipes set train keys only: one preprocessor, fitted on the fitting rows alone
    features, features_sel = stage_features(config.validate(raw), "usps", X[fit_rows],
                                            y[fit_rows], X[selection])  # fmt: skip
    y_fit, y_sel = y[fit_rows], y[selection]
    print(
        f"selection: {len(selection)} of the {len(y)} training rows (stratified, seed "
        f"{SELECTION_SEED}); each recipe fits on the other {len(fit_rows)}\n",
        flush=True,
    )
    results = {}
    for name in names:
        runs = []
        for seed in seeds:
            params = recipe_params(raw, RECIPES[name], seed)
            est, seconds = fit_estimator(params, "usps", features, y_fit, epochs=epochs)
            scores = score_estimator(params, "usps", est, features_sel, y_sel)
            runs.append({"seed": seed, "epochs": est.n_iter_, "seconds": seconds,
                         "accuracy": scores["accuracy"],
                         "errors": int(np.sum(scores["predicted"] != y_sel)),
                         "plain_accuracy": scores["plain_accuracy"],
                         "log_loss": float(log_loss(y_sel, scores["proba"],
                                                    labels=scores["classes"]))})  # fmt: skip
            print(
                f"  {name} seed {seed}: selection accuracy {scores['accuracy']:.4f} "
                f"(plain {scores['plain_accuracy']:.4f}), fit {seconds:.1f} s",
                flush=True,
            )
        mean, std = _summary([r["accuracy"] for r in runs])
        results[name] = {"override": RECIPES[name], "runs": runs, "mean": mean, "std": std,
                         "errors": sum(r["errors"] for r in runs),
                         "plain_mean": _summary([r["plain_accuracy"] for r in runs])[0],
                         "log_loss": float(np.mean([r["log_loss"] for r in runs])),
                         "seconds": float(np.mean([r["seconds"] for r in runs]))}  # fmt: skip
    return {name: {**results[name], "rank": i + 1} for i, name in enumerate(rank_order(results))}


def rank_order(results: dict) -> list[str]:
    """Recipe names, best first: fewest selection errors over all seeds (every seed scores the
    same rows, so this is the highest mean accuracy, compared exactly rather than as rounded
    floats), then the lower mean log loss."""
    return sorted(results, key=lambda name: (results[name]["errors"], results[name]["log_loss"]))


def print_ranking(ranking: dict, seeds: list[int], n_selection: int) -> None:
    print(
        f"\nselection accuracy ({n_selection} rows; one image is {1 / n_selection:.4f}), "
        "best first:\n"
    )
    print("| rank | recipe | " + " | ".join(f"seed {s}" for s in seeds)
          + " | mean ± std | errors | plain mean | log loss | fit s |")  # fmt: skip
    print("|---:|---|" + "---:|" * (len(seeds) + 5))
    for name, r in ranking.items():
        print(f"| {r['rank']} | {name} | " + " | ".join(f"{x['accuracy']:.4f}" for x in r["runs"])
              + f" | {r['mean']:.4f} ± {r['std']:.4f} | {r['errors']} | {r['plain_mean']:.4f}"
              + f" | {r['log_loss']:.3f} | {r['seconds']:.1f} |")  # fmt: skip


def score_chosen(raw: dict, name: str, seeds: list[int], X, y, X_test, y_test, *,
                epochs: int | None = None) -> dict:  # fmt: skip
    """The chosen recipe trained as the pipeline trains it (all the training rows, its own
    validation fraction) for each seed, scored once on the test rows, plain and as evaluated."""
    features, features_test = stage_features(config.validate(raw), "usps", X, y, X_test)
    runs, predictions, probas = [], [], []
    for seed in seeds:
        params = recipe_params(raw, RECIPES[name], seed)
        est, seconds = fit_estimator(params, "usps", features, y, epochs=epochs)
        scores = score_estimator(params, "usps", est, features_test, y_test)
        predictions.append(scores["predicted"])
        probas.append(scores["proba"])
        classes = scores["classes"]
        runs.append(
            {
                "seed": seed,
                "epochs": est.n_iter_,
                "seconds": seconds,
                "accuracy": scores["accuracy"],
                "plain_accuracy": scores["plain_accuracy"],
                "log_loss": float(log_loss(y_test, scores["proba"], labels=classes)),
            }
        )
    said = classes[np.mean(probas, axis=0).argmax(axis=1)]  # the models' probabilities averaged
    return {"name": name, "override": RECIPES[name], "runs": runs,
            "accuracy": _summary([r["accuracy"] for r in runs]),
            "plain_accuracy": _summary([r["plain_accuracy"] for r in runs]),
            "floor": error_floor(predictions, y_test), "said": said,
            "averaged": float(np.mean(said == y_test))}  # fmt: skip


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
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 10, 20],
                        help="seeds of each recipe on the selection set")  # fmt: skip
    parser.add_argument("--final-seeds", type=int, nargs="+", default=[0, 10, 20],
                        help="seeds of the chosen recipe on the test split")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="override: a smoke run")
    parser.add_argument("--train-rows", type=int, default=N_TRAIN, help="fewer: a smoke run")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--data-home", default=None)
    parser.add_argument(
        "--floor-png",
        default=None,
        help="draw the test images every model of the chosen recipe misses",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    raw = yaml.safe_load(Path(args.params).read_text())
    X, y, where = canonical_rows(args.data_home, "train")
    X, y = X[: args.train_rows], y[: args.train_rows]
    print(f"USPS canonical split ({where}): {len(y)} training rows\n")
    ranking = rank_recipes(raw, args.recipes, args.seeds, X, y, epochs=args.epochs)
    print_ranking(ranking, args.seeds, len(selection_split(y)[1]))
    chosen = next(iter(ranking))
    print(f"\nchosen on the selection set: {chosen} {RECIPES[chosen]}")

    # the test split is read here, after the choice, and scores the chosen recipe only
    X_test, y_test, _ = canonical_rows(args.data_home, "test")
    final = score_chosen(raw, chosen, args.final_seeds, X, y, X_test, y_test, epochs=args.epochs)
    print(f"\n{chosen} trained on all {len(y)} training rows, test split ({len(y_test)} rows):\n")
    print("| seed | plain | as evaluated | log loss | fit s |\n|---:|---:|---:|---:|---:|")
    for r in final["runs"]:
        print(f"| {r['seed']} | {r['plain_accuracy']:.4f} | {r['accuracy']:.4f}"
              f" | {r['log_loss']:.4f} | {r['seconds']:.1f} |")  # fmt: skip
    (plain, plain_sd), (acc, acc_sd) = final["plain_accuracy"], final["accuracy"]
    print(f"| mean ± std | {plain:.4f} ± {plain_sd:.4f} | {acc:.4f} ± {acc_sd:.4f} | | |")
    floor, n = final["floor"], len(final["runs"])
    print(
        f"\n{n} model{'s' * (n != 1)} of {chosen}: {len(floor)} test images are misclassified "
        f"by every one; their probabilities averaged score {final['averaged']:.4f}"
    )
    if args.floor_png and len(floor):
        names = raw["datasets"]["usps"].get("label_names") or {}
        shown = lambda label: names.get(str(label), str(label))  # noqa: E731
        said = final["said"]
        titles = [f"label {shown(y_test[i])}, said {shown(said[i])}" for i in floor]
        draw(X_test[floor], titles, args.floor_png)
        print(f"drew them in {args.floor_png}")
    if args.json:
        out = {"selection": {"fraction": SELECTION_FRACTION, "seed": SELECTION_SEED,
                             "seeds": args.seeds, "recipes": ranking},
               "chosen": chosen,
               "test": {**{k: v for k, v in final.items() if k not in ("floor", "said")},
                        "seeds": args.final_seeds, "floor": floor.tolist()}}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
