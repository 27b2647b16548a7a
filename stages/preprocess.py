"""preprocess: fit the preprocessor on train only, transform both, persist it (skops).

USPS: a scaler (+ optional PCA) over the pixels. Tabular: a ColumnTransformer chosen from the
column types (imputers, scaler, optional piecewise-linear bins, one-hot encoding).
"""

from stages.layout import layout
from tandem import data, features, io

PARAMS = ("preprocess", "fetch.target")
TABULAR_PARAMS = (
    "tabular.preprocess",
    "tabular.datasets.{name}.target",
    "tabular.datasets.{name}.task",
    "tabular.datasets.{name}.drop",
)


def run(params, dataset: str | None = None) -> None:
    paths = layout(dataset)
    train, test = io.read_parquet(paths.train), io.read_parquet(paths.test)
    if dataset is None:
        target = params.fetch.target
        X_train, y_train = data.xy(train, target)
        X_test, y_test = data.xy(test, target)
        prep = features.build_preprocessor(params.preprocess.scaler, params.preprocess.pca)
    else:
        spec, p = params.tabular.datasets[dataset], params.tabular.preprocess
        target = spec.target
        X_train, y_train = data.tabular_xy(train, target=target, drop=spec.drop, task=spec.task)
        X_test, y_test = test[X_train.columns], test[target]  # the columns train kept
        prep = features.build_tabular_preprocessor(
            X_train,
            numeric_imputer=p.numeric_imputer,
            scaler=p.scaler,
            min_frequency=p.min_frequency,
            numeric_encoding=p.numeric_encoding,
            n_bins=p.n_bins,
            task=spec.task,
        ).set_output(transform="pandas")
    # y is passed so that target-aware encodings (piecewise-linear bins) see it; train only
    train_features = prep.fit_transform(X_train, y_train).assign(**{target: y_train.to_numpy()})
    test_features = prep.transform(X_test).assign(**{target: y_test.to_numpy()})
    features.save_transformer(prep, paths.preprocessor)
    io.write_parquet(paths.train_features, train_features)
    io.write_parquet(paths.test_features, test_features)
