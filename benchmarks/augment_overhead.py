#!/usr/bin/env python
"""What on-device augmentation and the weight EMA add to an epoch of tandem's default USPS network.

The default ``cnn`` on USPS's original 7291 training rows (standardised pixels, AdamW, batch 64,
10 % validation, OneCycle), trained side by side in one process with the same seed: plain, with
random affine augmentation (rotate 10°, translate 10 %, scale 10 %, shear 5°), with augmentation
plus elastic distortion, and with augmentation plus an EMA of the weights. Runs alternate, so
drifts in the machine's speed hit every variant alike. s/epoch is the median of the epochs'
wall times (``history_[i]["seconds"]``: training and validation). The target: augmentation
adds at most 15 % to an epoch.

    python benchmarks/augment_overhead.py                 # 3 epochs x 2 repeats
    python benchmarks/augment_overhead.py --epochs 5 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
from _usps import load_usps
from sklearn.preprocessing import StandardScaler

from tandem import TorchClassifier

AFFINE = {"augment": "affine", "augment__rotate": 10, "augment__translate": 0.1,
          "augment__scale": 0.1, "augment__shear": 5}  # fmt: skip
VARIANTS = {
    "plain": {},
    "affine": AFFINE,
    "affine + elastic": {**AFFINE, "augment__elastic": 1.0},
    "affine + EMA": {**AFFINE, "ema": 0.999},
}
TARGET = 1.15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    X, y, where = load_usps(args.data_home)
    X_train = StandardScaler().fit_transform(X[:7291]).astype("float32")
    y_train = y[:7291]
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, extra in VARIANTS.items():
            est = TorchClassifier(
                module="cnn", optimizer="adamw", lr=3e-3, batch_size=64, max_epochs=args.epochs,
                lr_schedule="onecycle", validation_fraction=0.1, random_state=0,
                device=args.device, **extra,
            ).fit(X_train, y_train)  # fmt: skip
            seconds[name] += [r["seconds"] for r in est.history_]
    base = statistics.median(seconds["plain"])
    rows = []
    print(f"USPS ({where}), {len(X_train)} training rows, device {args.device}, torch "
          f"{torch.__version__}, {args.epochs} epochs x {args.repeats} repeats\n")  # fmt: skip
    print(f"| variant | s/epoch | vs plain | within {TARGET:.2f}x |")
    print("|---|---:|---:|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        ratio = median / base
        rows.append({"variant": name, "s_per_epoch": median, "ratio": ratio})
        print(f"| {name} | {median:.3f} | {ratio:.3f}x | {'yes' if ratio <= TARGET else 'no'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "epochs": args.epochs, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
