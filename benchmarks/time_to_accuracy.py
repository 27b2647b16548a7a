#!/usr/bin/env python
"""Time to accuracy on USPS's canonical split: skorch's USPS tutorial recipe against tandem.

USPS's original split (the first 7291 rows train, the last 2007 test: ``split.method: ordered``),
side by side in one process:

- **skorch's USPS tutorial recipe**: ``NeuralNetClassifier`` around the ``usps_cnn`` network, Adam
  lr 1e-3, batch 32, skorch's 20 % stratified validation split, ``EarlyStopping`` on the
  validation loss with patience 5 (at most ``--skorch-max-epochs``), on the raw pixels;
- **tandem, default**: the train stage's own estimator for the ``usps`` entry of params.yaml
  (``stages.train.build_estimator``: the entry's recipe, with its augmentation, EMA, batch and
  epochs) on the preprocess stage's features (the entry's preprocess section), scored with
  test-time augmentation when the entry's ``evaluate.tta`` says so, as the evaluate stage does;
- **tandem, short**: the same recipe with fewer epochs (``--short``, each a whole OneCycle run,
  because a OneCycle run's middle epochs are not a shorter recipe's end).

Every fit is timed alone (wall clock around ``fit``; predictions are not timed). The table gives
each run's epochs, fit seconds, test accuracy and time against skorch's; then the shortest tandem
run that reaches skorch's final test accuracy, as a fraction of skorch's time (the target:
at most 0.25).

    python benchmarks/time_to_accuracy.py                       # about 3 minutes on 2 cores
    python benchmarks/time_to_accuracy.py --short 2 3 4 6 --json out.json
    python benchmarks/time_to_accuracy.py --train-rows 600 --short 1 --skorch-max-epochs 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _usps import REPO, fit_and_score, load_usps, stage_features
from torch import nn

from tandem import config
from tandem.models import build_module

N_TRAIN = 7291  # USPS's original training rows
TARGET = 0.25


def skorch_tutorial(seed: int, max_epochs: int, device: str):
    """skorch's USPS tutorial recipe: its CNN, Adam 1e-3, batch 32, early stopping (patience 5)."""
    from skorch import NeuralNetClassifier
    from skorch.callbacks import EarlyStopping
    from skorch.dataset import ValidSplit

    torch.manual_seed(seed)
    return NeuralNetClassifier(
        module=build_module("usps_cnn", 256, 10),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        batch_size=32,
        max_epochs=max_epochs,
        train_split=ValidSplit(5, stratified=True),  # skorch's default: the last fifth
        iterator_train__shuffle=True,
        callbacks=[EarlyStopping(monitor="valid_loss", patience=5)],
        device=device,
        verbose=0,
    )


def timed(fit) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def run_skorch(X, y, X_test, y_test, *, seed, max_epochs, device) -> dict:
    from sklearn.preprocessing import LabelEncoder

    enc = LabelEncoder().fit(y)
    net = skorch_tutorial(seed, max_epochs, device)
    seconds = timed(lambda: net.fit(X, enc.transform(y).astype(np.int64)))
    accuracy = float(np.mean(enc.inverse_transform(net.predict(X_test)) == y_test))
    return {"recipe": "skorch, USPS tutorial", "epochs": len(net.history), "seconds": seconds,
            "accuracy": accuracy}  # fmt: skip


def run_tandem(label, features, y, features_test, y_test, *, params, epochs, device) -> dict:
    fit = fit_and_score(params, "usps", features, y, features_test, y_test, epochs=epochs,
                        device=device)  # fmt: skip
    return {"recipe": label, **{k: fit[k] for k in ("epochs", "seconds", "accuracy")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, nargs="*", default=[2, 3, 4],
                        help="epochs of the short tandem recipes")  # fmt: skip
    parser.add_argument("--skorch-max-epochs", type=int, default=100)
    parser.add_argument("--train-rows", type=int, default=N_TRAIN, help="fewer: a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    params = config.validate(yaml.safe_load(Path(args.params).read_text()))
    X, y, where = load_usps(args.data_home)
    X_train, y_train, X_test, y_test = X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]
    X_train, y_train = X_train[: args.train_rows], y_train[: args.train_rows]
    features, features_test = stage_features(params, "usps", X_train, y_train, X_test)

    rows = [run_skorch(X_train, y_train, X_test, y_test, seed=args.seed,
                       max_epochs=args.skorch_max_epochs, device=args.device)]  # fmt: skip
    data = (features, y_train, features_test, y_test)
    for epochs in (None, *args.short):
        label = f"tandem, {epochs} epoch{'s' * (epochs != 1)}" if epochs else "tandem, default"
        rows.append(run_tandem(label, *data, params=params, epochs=epochs, device=args.device))
    skorch = rows[0]
    print(
        f"USPS canonical split ({where}): {len(y_train)} train / {len(y_test)} test rows, "
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(
        "| recipe | epochs | fit s | test accuracy | time vs skorch | reaches skorch's accuracy |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        row["time_ratio"] = row["seconds"] / skorch["seconds"]
        reached = "" if row is skorch else "yes" if row["accuracy"] >= skorch["accuracy"] else "no"
        print(f"| {row['recipe']} | {row['epochs']} | {row['seconds']:.1f} | "
              f"{row['accuracy']:.4f} | {row['time_ratio']:.3f} | {reached} |")  # fmt: skip
    reaching = [r for r in rows[1:] if r["accuracy"] >= skorch["accuracy"]]
    best = min(reaching, key=lambda r: r["seconds"], default=None)
    if best is None:
        print(f"\nno tandem run reached skorch's {skorch['accuracy']:.4f}")
        met = False
    else:
        met = best["time_ratio"] <= TARGET
        print(
            f"\ntime to skorch's accuracy ({skorch['accuracy']:.4f}): {best['recipe']}, "
            f"{best['seconds']:.1f} s = {best['time_ratio']:.3f} of skorch's "
            f"{skorch['seconds']:.1f} s (target <= {TARGET}: {'met' if met else 'not met'})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "met": met}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
