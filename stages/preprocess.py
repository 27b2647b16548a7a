"""preprocess: fit the preprocessor on train only, transform both, persist it (skops).

"Train" means the rows the train stage's estimator fits on: the validation slice it holds out
(``train.validation_fraction``, drawn with ``train.seed``) is left out of the fit as the test
split is, so its validation loss, which early stopping and the learning curves watch, is
computed on rows no fitted step (target-aware bins above all) has seen.

Image entries: a scaler (+ optional PCA) over the pixels. Tabular entries: a ColumnTransformer
chosen from the column types (imputers, scaler, optional piecewise-linear bins, one-hot).
"""

from stages.layout import layout
from tandem import config, data, features, io

PARAMS = ("preprocess", "train.seed", "train.validation_fraction", "datasets.{name}.data",
          "datasets.{name}.preprocess", "datasets.{name}.train")  # fmt: skip


def build_preprocessor(p, spec, X_train):
    """The (unfitted) preprocessor of an entry (``spec``: its data): by modality, from its
    (resolved) preprocess section ``p``."""
    if spec.modality == "image":
        return features.build_preprocessor(p.scaler, p.pca)
    return features.build_tabular_preprocessor(
        X_train, numeric_imputer=p.numeric_imputer, scaler=p.scaler,
        min_frequency=p.min_frequency, numeric_encoding=p.numeric_encoding, n_bins=p.n_bins,
        task=spec.task,
    ).set_output(transform="pandas")  # fmt: skip


def estimator_fit_rows(train, spec, y):
    """The training rows the train stage's estimator fits on (all but its validation slice)."""
    stratify = spec.task == "classification"  # train.seed is the estimator's seed as it is
    return data.validation_rows(y.to_numpy(), train.validation_fraction, train.seed,
                                stratify=stratify)[0]  # fmt: skip


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    p, spec = config.recipe(params, name, "preprocess"), entry.data
    train, test = io.read_parquet(paths.train), io.read_parquet(paths.test)
    X_train, y_train = data.tabular_xy(train, target=spec.target, drop=spec.drop, task=spec.task)
    X_test, y_test = test[X_train.columns], test[spec.target]  # the columns train kept
    prep = build_preprocessor(p, spec, X_train)
    fit_rows = estimator_fit_rows(config.recipe(params, name, "train"), spec, y_train)
    # y is passed so that target-aware encodings (piecewise-linear bins) see it; fit rows only
    prep.fit(X_train.iloc[fit_rows], y_train.iloc[fit_rows])
    train_features = prep.transform(X_train).assign(**{spec.target: y_train.to_numpy()})
    test_features = prep.transform(X_test).assign(**{spec.target: y_test.to_numpy()})
    features.save_transformer(prep, paths.preprocessor)
    io.write_parquet(paths.train_features, train_features)
    io.write_parquet(paths.test_features, test_features)
