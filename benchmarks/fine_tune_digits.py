#!/usr/bin/env python
"""Fine-tuning from a trained USPS model against training from scratch, on sklearn's digits.

sklearn's 8x8 digits stand in for a user's small image folder: each image is read as an image
source reads it (``tandem.data.image_pixels``: light ink on dark, resized to 16x16, stretched to
[-1, 1]) and labelled as USPS labels its digits ("1" is a 0), so the head's classes line up.
``--per-class`` images of each digit are kept, a third of them train (30 by default) and the rest
are held out. Both runs train USPS's network (24-48-96 channels, global head, dropout 0.1) with
the same recipe and epochs; the fine-tuned one starts from the model's weights
(``init_weights``) with its first block frozen. One table row per epoch count:

    python benchmarks/fine_tune_digits.py models/usps/model --epochs 3 5 10
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tandem import TorchClassifier, data
from tandem.estimators.persistence import write_weights

FIRST_BLOCK = ["1", "2", "4", "5"]  # the cnn's first two convolutions and their BatchNorms


def digits(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 16x16 pixels and USPS-style labels, ``per_class`` images of each digit."""
    d, rows, labels, count = load_digits(), [], [], {}
    for image, digit in zip(d.images, d.target, strict=True):
        if count.setdefault(digit, 0) >= per_class:
            continue
        count[digit] += 1
        pixels = Image.fromarray((image * 255 / 16).astype("uint8"), mode="L")
        rows.append(data.image_pixels(pixels, (16, 16)))
        labels.append(str(digit + 1))
    return np.stack(rows).astype("float32"), np.array(labels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="a trained USPS model folder (models/usps/model)")
    p.add_argument("--epochs", type=int, nargs="+", default=[3, 5, 10])
    p.add_argument("--per-class", type=int, default=90, help="images per digit (a third train)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    X, y = digits(args.per_class)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=2 / 3, stratify=y, random_state=args.seed
    )
    weights = Path(tempfile.mkdtemp()) / "usps.safetensors"
    write_weights(args.model_dir, weights)
    print(f"{len(y_train)} training images, {len(y_test)} held out\n")
    print("| epochs | from scratch | fine-tuned | errors scratch / fine-tuned |")
    print("|---:|---:|---:|---:|")
    for epochs in args.epochs:
        recipe = dict(
            module="cnn", module__channels=[24, 48, 96], module__head="global",
            module__dropout=0.1, module__image_shape=[16, 16], max_epochs=epochs, batch_size=16,
            lr=0.003, optimizer="adamw", lr_schedule="onecycle", random_state=args.seed,
        )  # fmt: skip
        scratch = TorchClassifier(**recipe).fit(X_train, y_train).score(X_test, y_test)
        tuned = TorchClassifier(**recipe, init_weights=str(weights), freeze=FIRST_BLOCK)
        tuned = tuned.fit(X_train, y_train).score(X_test, y_test)
        wrong = [round((1 - acc) * len(y_test)) for acc in (scratch, tuned)]
        print(f"| {epochs} | {scratch:.4f} | {tuned:.4f} | {wrong[0]} / {wrong[1]} |", flush=True)


if __name__ == "__main__":
    main()
