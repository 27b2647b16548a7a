"""sklearn preprocessors built from params, persisted with skops (never pickle).

skops stores the object as a schema of known types; ``load_transformer`` refuses a file that
mentions any type outside skops' default-trusted set and ``TRUSTED_TYPES`` and never executes code
from it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sklearn.base import TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, RobustScaler, StandardScaler

from tandem.io import atomic_path

SCALERS = {
    "standard": StandardScaler,
    "minmax": MinMaxScaler,
    "robust": RobustScaler,
}

# types beyond skops' defaults that tandem's own preprocessors may contain (OneHotEncoder stores
# the dtype of its output, a numpy.dtype: plain data, no code)
TRUSTED_TYPES: list[str] = ["numpy.dtype"]


def build_preprocessor(scaler: str, pca: int | float | None = None) -> Pipeline:
    """scaler (standard | minmax | robust | none) followed by an optional PCA."""
    if scaler == "none":
        first = FunctionTransformer(feature_names_out="one-to-one")
    elif scaler in SCALERS:
        first = SCALERS[scaler]()
    else:
        raise ValueError(f"preprocess.scaler must be one of {[*SCALERS, 'none']}; got {scaler!r}")
    steps = [("scale", first)]
    if pca is not None:
        steps.append(("pca", PCA(n_components=pca, random_state=0)))
    return Pipeline(steps).set_output(transform="pandas")


def save_transformer(obj: TransformerMixin, path: str | Path) -> Path:
    import skops.io as sio

    with atomic_path(path) as tmp:
        sio.dump(obj, tmp)
    return Path(path)


def load_transformer(path: str | Path) -> TransformerMixin:
    """Load a skops file, refusing unknown types (so no code in the file ever runs)."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the preprocess stage first")
    try:
        untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
        if untrusted:
            raise ValueError(
                f"{path} holds types that are not trusted: {untrusted}; refusing to load"
            )
        return sio.load(path, trusted=TRUSTED_TYPES)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"{path} is not a valid skops file ({exc}); refusing to load") from exc


NUMERIC_IMPUTERS = ("median", "mean", "knn")


def column_kinds(frame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) column names: numbers (not bools) are numeric, the rest are not."""
    import pandas as pd

    numeric, categorical = [], []
    for name, dtype in frame.dtypes.items():
        is_number = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        (numeric if is_number else categorical).append(str(name))
    return numeric, categorical


def build_tabular_preprocessor(
    frame,
    *,
    numeric_imputer: str = "median",
    scaler: str = "standard",
    min_frequency: int | float | None = None,
):
    """A ColumnTransformer for a mixed-type frame, chosen from its column types.

    numeric -> imputer (median | mean | knn) + scaler (standard | minmax | robust | none);
    categorical -> most-frequent imputer + OneHotEncoder(handle_unknown="ignore"), with rare
    categories (below ``min_frequency``) grouped. Output is dense float, ready for a torch module.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    if numeric_imputer not in NUMERIC_IMPUTERS:
        raise ValueError(
            f"numeric_imputer must be one of {list(NUMERIC_IMPUTERS)}; got {numeric_imputer!r}"
        )
    if scaler != "none" and scaler not in SCALERS:
        raise ValueError(f"scaler must be one of {[*SCALERS, 'none']}; got {scaler!r}")
    numeric, categorical = column_kinds(frame)
    imputer = KNNImputer() if numeric_imputer == "knn" else SimpleImputer(strategy=numeric_imputer)
    numeric_steps = [("impute", imputer)]
    if scaler != "none":
        numeric_steps.append(("scale", SCALERS[scaler]()))
    categorical_steps = [
        ("impute", SimpleImputer(strategy="most_frequent")),
        (
            "onehot",
            OneHotEncoder(
                handle_unknown="infrequent_if_exist" if min_frequency else "ignore",
                min_frequency=min_frequency,
                sparse_output=False,
            ),
        ),
    ]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline(categorical_steps), categorical))
    if not transformers:
        raise ValueError("the frame has no feature columns")
    return ColumnTransformer(transformers, sparse_threshold=0.0, verbose_feature_names_out=True)
