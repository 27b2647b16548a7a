#!/usr/bin/env python
"""Exhaustive grid search vs successive halving over the same space, on USPS.

Both searches run in this one process, one after the
other, over the same space, the same 3 stratified folds and the same data, through the same
tandem code the ``tune`` stage uses (``tandem.search``):

- exhaustive: ``GridSearchCV``, every candidate trained for the full ``--epochs``;
- halving: ``HalvingGridSearchCV`` with ``max_epochs`` as the resource (factor 3, from 1 epoch up
  to ``--epochs``): all 81 candidates get 1 epoch, the best third 3, then 9, 27, and the last one
  standing the full 81.

Each then refits its best candidate on the whole training subset (full ``--epochs``), and that
model is scored on the held-out test split. The table gives wall time (search + refit), the best
mean CV accuracy, the test accuracy and the ratios against the exhaustive search. Target: halving
within 0.3 accuracy points of the exhaustive best, in at most a fifth of its time.

Model: preprocessor (StandardScaler) + ``TorchClassifier(module="mlp", hidden 128)``, constant lr
3e-3, no validation slice. Space: the full grid without its epochs axis, which halving uses as
its budget instead: activation x optimizer x initialisation x batch size, 3 values each (81
candidates); the exhaustive search trains every candidate for the full ``--epochs``.

Data: USPS (OpenML 41070) from the offline cache (copied to a temporary folder first;
``--data-home`` or ``SCIKIT_LEARN_DATA`` to use another), stratified 70/30 split with seed 11 (the
pipeline's split before the registry; its numbers were measured on it), then a stratified
``--train-rows`` subset of train; the whole test split is scored.

Halving saves most where the grid is wide and the budget deep: its cost is about (rounds + 1) x
candidates x 1 epoch against candidates x ``--epochs`` for the grid (81 candidates, 81 epochs: 5
rounds, ~1/13 ideally). With 27 epochs it is 4 rounds of 81 candidates, ~1/6 ideally, and the
refit, the rounds' stragglers on 2 workers and per-fit overheads bring it to about 1/4.

    python benchmarks/search.py                      # 2000 training rows, 81 epochs, n_jobs 2
    python benchmarks/search.py --train-rows 400 --epochs 9   # smoke run, seconds

Timings on a shared 2-core machine move with other processes' load; the script prints the load
average before and after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from _usps import load_usps
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from tandem import TorchClassifier, search

SPACE = {
    "module__activation": ["relu", "tanh", "sigmoid"],
    "optimizer": ["adam", "rmsprop", "sgd"],
    "module__init": ["xavier_uniform", "kaiming_uniform", "orthogonal"],
    "batch_size": [32, 64, 128],
}
FOLDS = 3


def estimator(epochs: int, seed: int) -> TorchClassifier:
    return TorchClassifier(
        module="mlp", module__hidden_sizes=[128], lr=3e-3, max_epochs=epochs,
        validation_fraction=0.0, random_state=seed, device="cpu",
    )  # fmt: skip


def run_search(method: str, X, y, X_test, y_test, args) -> dict:
    est = estimator(args.epochs, args.seed)
    pipe = search.make_pipeline(StandardScaler(), est)
    resource = "max_epochs" if method == "halving_grid" else None
    space = search.build_space(SPACE, est, method=method, pipeline=pipe, resource=resource)
    searcher = search.build_search(
        pipe, space, method=method, cv=search.folds(FOLDS, args.seed), scoring=["accuracy"],
        refit_metric="accuracy", n_jobs=args.n_jobs, seed=args.seed, resource="max_epochs",
        factor=3, min_resources=1, max_resources=args.epochs,
    )  # fmt: skip
    start = time.perf_counter()
    searcher.fit(X, y)
    wall = time.perf_counter() - start
    best = search.summary(searcher, method=method, refit_metric="accuracy", seconds=wall)
    return {
        "method": method,
        "candidates": best["n_candidates"],
        "fits": best["n_fits"],
        "wall_s": wall,
        "best_cv": best["best_score"],
        "test": float(searcher.score(X_test, y_test)),
        "best_params": best["best_params"],
        "resources": best.get("n_resources"),
    }


def warm_up(n_jobs: int) -> None:
    """Start joblib's worker processes (and import torch in them) before anything is timed."""
    from joblib import Parallel, delayed

    def touch(i):
        import tandem.estimators  # noqa: F401

        return i

    Parallel(n_jobs=n_jobs)(delayed(touch)(i) for i in range(max(n_jobs, 1) * 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=2000, help="stratified training subset")
    parser.add_argument("--epochs", type=int, default=81, help="full budget (a power of 3)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    X, y, _ = load_usps(args.data_home)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=11
    )
    X_train, y_train = search.subsample(X_train, y_train, args.train_rows, args.seed)
    n_cand = search.n_candidates(SPACE)
    print(
        f"USPS: {len(y_train)} training rows (subset), {len(y_test)} test rows; {n_cand} "
        f"candidates x {FOLDS} folds; mlp(128), {args.epochs} epochs; n_jobs {args.n_jobs}; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    load_before = os.getloadavg()
    warm_up(args.n_jobs)
    rows = [run_search(m, X_train, y_train, X_test, y_test, args) for m in ("grid", "halving_grid")]
    load_after = os.getloadavg()

    grid = rows[0]
    header = ("method", "candidates", "fits", "wall s", "best CV acc", "test acc",
              "time ratio", "Δ test (points)")  # fmt: skip
    print("\n| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    names = {"grid": "exhaustive (GridSearchCV)", "halving_grid": "halving (HalvingGridSearchCV)"}
    for row in rows:
        row["time_ratio"] = row["wall_s"] / grid["wall_s"]
        row["delta_points"] = 100 * (row["test"] - grid["test"])
        print(
            f"| {names[row['method']]} | {row['candidates']} | {row['fits']} | "
            f"{row['wall_s']:.1f} | {row['best_cv']:.4f} | {row['test']:.4f} | "
            f"{row['time_ratio']:.3f} | {row['delta_points']:+.2f} |"
        )
    halving = rows[1]
    for row in rows:
        print(f"{row['method']}: best {row['best_params']}"
              + (f"; epochs per round {row['resources']}" if row["resources"] else ""))  # fmt: skip
    met = halving["delta_points"] >= -0.3 and halving["time_ratio"] <= 0.2
    print(
        f"\ntarget (halving within 0.3 points, at most 1/5 of the time): "
        f"{'met' if met else 'NOT met'} (Δ {halving['delta_points']:+.2f} points, "
        f"{halving['time_ratio']:.3f}x the time, {1 / halving['time_ratio']:.1f}x faster)"
    )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(timings include other processes' load on this machine)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
