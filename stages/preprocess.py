"""preprocess: fit the scaler (+ optional PCA) on train only, transform both, persist it (skops)."""

from stages.split import TEST, TRAIN
from tandem import data, features, io

PARAMS = ("preprocess", "fetch.target")
TRANSFORMER = "models/preprocessor.skops"
TRAIN_FEATURES = "data/features/train.parquet"
TEST_FEATURES = "data/features/test.parquet"


def run(params) -> None:
    target = params.fetch.target
    prep = features.build_preprocessor(params.preprocess.scaler, params.preprocess.pca)
    X_train, y_train = data.xy(io.read_parquet(TRAIN), target)
    X_test, y_test = data.xy(io.read_parquet(TEST), target)
    train = prep.fit_transform(X_train).assign(**{target: y_train.to_numpy()})
    test = prep.transform(X_test).assign(**{target: y_test.to_numpy()})
    features.save_transformer(prep, TRANSFORMER)
    io.write_parquet(TRAIN_FEATURES, train)
    io.write_parquet(TEST_FEATURES, test)
