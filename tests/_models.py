"""Tiny trained pipelines for the predict / export / serve tests, laid out as the pipeline does.

``usps_dir``: a USPS-like image model (16x16 digits on the 8-bit grid, so PNG round trips are
exact), ``tabular_dir``: a mixed-type model with missing values and rare categories. Both are
fitted in seconds on synthetic data: hermetic, no pipeline run needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tandem import TorchClassifier, features
from tandem.inference import scale_image

IMAGE_SIDE = 16  # USPS-like digits

PIXELS = [f"int{i}" for i in range(IMAGE_SIDE**2)]


def digit_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (n, 16, 16), labels "1".."10"): a bar per class at a class-specific place."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 10, n)
    images = rng.randint(0, 40, (n, IMAGE_SIDE, IMAGE_SIDE)).astype(np.float64)
    for img, k in zip(images, labels, strict=True):
        row, col = 2 + (k % 5) * 2 + rng.randint(0, 2), 3 + (k // 5) * 6 + rng.randint(0, 2)
        img[row : row + 3, col : col + 6] += 200 + rng.randint(0, 15)
    images = np.clip(images, 0, 255)
    low, high = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    images = np.round((images - low) / (high - low) * 255).astype(np.uint8)  # 0 and 255 in each
    return images, np.asarray([str(k + 1) for k in labels], dtype=object)


def usps_frame(images: np.ndarray, labels) -> pd.DataFrame:
    rows = np.vstack([scale_image(img) for img in images])
    return pd.DataFrame(rows, columns=PIXELS).assign(**{"class": labels})


def build_usps(root: Path, **params) -> Path:
    """models/usps/{preprocessor.skops,model} + data/usps/test.parquet under ``root``; ``params``
    replace the classifier's (e.g. another module)."""
    train = usps_frame(*digit_images(400, seed=0))
    test = usps_frame(*digit_images(60, seed=1))
    X, y = train.drop(columns="class"), train["class"]
    prep = features.build_preprocessor("standard").fit(X)
    model = TorchClassifier(
        module="usps_cnn", max_epochs=3, lr=3e-3, batch_size=32, validation_fraction=0.0,
        random_state=0, device="cpu",
    ).set_params(**params).fit(prep.transform(X), y)  # fmt: skip
    models = root / "models" / "usps"
    features.save_transformer(prep, models / "preprocessor.skops")
    model.save(models / "model")
    (root / "data" / "usps").mkdir(parents=True, exist_ok=True)
    test.to_parquet(root / "data" / "usps" / "test.parquet", index=False)
    return models


def tabular_frame(n: int, seed: int) -> pd.DataFrame:
    """Numbers, categories (one rare), missing values; a target that depends on all of them."""
    rng = np.random.RandomState(seed)
    age = rng.normal(40, 12, n).round()
    income = rng.lognormal(10, 1, n)
    colour = rng.choice(["red", "green", "blue", "rare"], n, p=[0.4, 0.3, 0.29, 0.01])
    city = rng.choice(["Oslo", "Lima", "Pune"], n).astype(object)
    score = (age - 40) / 12 + (colour == "red") * 1.5 - (city == "Lima") + rng.normal(0, 0.5, n)
    age[rng.rand(n) < 0.05] = np.nan
    city[rng.rand(n) < 0.05] = np.nan
    return pd.DataFrame({
        "age": age,
        "income-usd": income,
        "colour": pd.Categorical(colour),
        "city": city,
        "label": np.where(score > 0.3, "yes", "no").astype(object),
    })  # fmt: skip


def build_tabular(root: Path) -> Path:
    """models/toy/{preprocessor.skops,model} + data/toy/test.parquet."""
    train, test = tabular_frame(600, 0), tabular_frame(200, 1)
    X, y = train.drop(columns="label"), train["label"]
    prep = features.build_tabular_preprocessor(
        X, numeric_imputer="median", scaler="standard", min_frequency=10
    ).set_output(transform="pandas")
    Xt = prep.fit_transform(X)
    model = TorchClassifier(
        module="mlp", module__hidden_sizes=(32,), max_epochs=5, lr=1e-2, batch_size=64,
        validation_fraction=0.0, random_state=0, device="cpu",
    ).fit(Xt, y)  # fmt: skip
    models = root / "models" / "toy"
    features.save_transformer(prep, models / "preprocessor.skops")
    model.save(models / "model")
    data = root / "data" / "toy"
    data.mkdir(parents=True, exist_ok=True)
    test.to_parquet(data / "test.parquet", index=False)
    return models


def evaluate_labels(model_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    """The labels the evaluate stage computes: the saved preprocessor, then the model's argmax."""
    model = TorchClassifier.load(model_dir / "model")
    prep = features.load_transformer(model_dir / "preprocessor.skops")
    X = prep.transform(frame[list(prep.feature_names_in_)])
    return model.classes_[model.predict_proba(X).argmax(axis=1)]


def exported(model_dir: Path, test_file: Path) -> Path:
    """Run the export (ONNX + TorchScript, parity-checked) on a built model directory."""
    from tandem import export, inference

    export.export(inference.load(model_dir), pd.read_parquet(test_file))
    return model_dir


def usps_test(model_dir: Path) -> Path:
    return model_dir.parents[1] / "data" / "usps" / "test.parquet"


def tabular_test(model_dir: Path) -> Path:
    return model_dir.parents[1] / "data" / "toy" / "test.parquet"
