"""sklearn preprocessors built from params, persisted with skops (never pickle).

skops stores the object as a schema of known types; ``load_transformer`` refuses a file that
mentions any type outside skops' default-trusted set and ``TRUSTED_TYPES`` and never executes code
from it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, RobustScaler, StandardScaler

from tandem.io import write_bytes

SCALERS = {
    "standard": StandardScaler,
    "minmax": MinMaxScaler,
    "robust": RobustScaler,
}

# types beyond skops' defaults that tandem's own preprocessors may contain: OneHotEncoder stores
# the dtype of its output (a numpy.dtype: plain data, no code), and tandem's own encoder below,
# whose code comes from this package, never from the file (skops restores its attributes only)
TRUSTED_TYPES: list[str] = ["numpy.dtype", "tandem.features.PiecewiseLinearEncoder"]


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

    return write_bytes(path, _canonical_skops(sio.dumps(obj)))  # same object, same bytes


def _canonical_skops(data: bytes) -> bytes:
    """skops names entries by ``id()`` (memory addresses, different in every process) and zip
    stamps them with the time: renumber the ids in order of appearance, fix the timestamps."""
    import io as _io
    import re

    with zipfile.ZipFile(_io.BytesIO(data)) as src:
        files = {info.filename: src.read(info) for info in src.infolist()}
    schema = files.pop("schema.json").decode("utf-8")
    ids: dict[str, str] = {}
    for match in re.finditer(r'"__id__": (\d+)|"(\d+)\.npy"', schema):
        ids.setdefault(match.group(1) or match.group(2), str(len(ids) + 1))
    schema = re.sub(
        r'("__id__": )(\d+)|"(\d+)(\.npy)"',
        lambda m: f"{m.group(1)}{ids[m.group(2)]}" if m.group(1) else f'"{ids[m.group(3)]}.npy"',
        schema,
    )
    out = _io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(files, key=lambda n: int(ids.get(n.removesuffix(".npy"), 0))):
            new = f"{ids[name.removesuffix('.npy')]}.npy" if name.endswith(".npy") else name
            dst.writestr(zipfile.ZipInfo(new, date_time=(1980, 1, 1, 0, 0, 0)), files[name])
        dst.writestr(zipfile.ZipInfo("schema.json", date_time=(1980, 1, 1, 0, 0, 0)), schema)
    return out.getvalue()


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
NUMERIC_ENCODINGS = ("none", "piecewise_linear")


class PiecewiseLinearEncoder(TransformerMixin, BaseEstimator):
    """Piecewise-linear encoding of numeric columns (Gorishniy et al., 2022, "On embeddings for
    numerical features in tabular deep learning").

    Each column is cut into at most ``n_bins`` bins; a value becomes one number per bin: 0 below
    it, 1 above it, and its relative position inside it. Bin edges are the thresholds of a
    decision tree (a classifier or a regressor, by ``task``) fitted on the column against ``y``
    when ``y`` is given, else quantiles. It gives an MLP the step-like responses trees find
    easily, which closes most of the MLP's gap to gradient boosting on sets such as adult.
    """

    def __init__(self, n_bins: int = 16, min_samples_leaf: int = 64, task: str = "classification"):
        self.n_bins = n_bins
        self.min_samples_leaf = min_samples_leaf
        self.task = task

    def fit(self, X, y=None):
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
        from sklearn.utils.validation import validate_data

        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression; got {self.task!r}")
        if int(self.n_bins) < 2:
            raise ValueError(f"n_bins must be at least 2; got {self.n_bins!r}")
        X = validate_data(self, X, dtype=np.float64)
        self.edges_ = []
        for column in X.T:
            if y is None:
                inner = np.quantile(column, np.linspace(0, 1, self.n_bins + 1)[1:-1])
            else:
                tree_class = (
                    DecisionTreeClassifier
                    if self.task == "classification"
                    else DecisionTreeRegressor
                )
                tree = tree_class(
                    max_leaf_nodes=self.n_bins,
                    min_samples_leaf=self.min_samples_leaf,
                    random_state=0,
                ).fit(column[:, None], y)
                inner = tree.tree_.threshold[tree.tree_.feature >= 0]
            self.edges_.append(np.unique(np.concatenate([[column.min()], inner, [column.max()]])))
        return self

    def transform(self, X):
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "edges_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        parts = [
            np.clip((column[:, None] - edges[:-1]) / np.diff(edges), 0.0, 1.0)
            for column, edges in zip(X.T, self.edges_, strict=True)
        ]
        return np.hstack(parts) if parts else np.empty((len(X), 0))

    def get_feature_names_out(self, input_features=None):
        from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

        check_is_fitted(self, "edges_")
        names = _check_feature_names_in(self, input_features)
        return np.asarray(
            [
                f"{name}_bin{k}"
                for name, edges in zip(names, self.edges_, strict=True)
                for k in range(len(edges) - 1)
            ],
            dtype=object,
        )


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
    numeric_encoding: str = "none",
    n_bins: int = 16,
    task: str = "classification",
):
    """A ColumnTransformer for a mixed-type frame, chosen from its column types.

    numeric -> imputer (median | mean | knn) + scaler (standard | minmax | robust | none), and
    with ``numeric_encoding="piecewise_linear"`` also the columns' piecewise-linear encoding
    (target-aware bins when the transformer is fitted with ``y``; ``task`` says how to read y);
    categorical -> most-frequent imputer + OneHotEncoder(handle_unknown="ignore"), with rare
    categories (below ``min_frequency``) grouped. Output is dense float, ready for a torch module.
    """
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    if numeric_imputer not in NUMERIC_IMPUTERS:
        raise ValueError(
            f"numeric_imputer must be one of {list(NUMERIC_IMPUTERS)}; got {numeric_imputer!r}"
        )
    if scaler != "none" and scaler not in SCALERS:
        raise ValueError(f"scaler must be one of {[*SCALERS, 'none']}; got {scaler!r}")
    if numeric_encoding not in NUMERIC_ENCODINGS:
        raise ValueError(
            f"numeric_encoding must be one of {list(NUMERIC_ENCODINGS)}; got {numeric_encoding!r}"
        )
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
    if numeric and numeric_encoding == "piecewise_linear":
        # a second view of the same columns (its own imputer: ColumnTransformer branches are
        # independent), so the scaled values stay as they are and the bins come beside them
        bins = PiecewiseLinearEncoder(n_bins=n_bins, task=task)
        transformers.append(
            ("numeric_bins", Pipeline([("impute", clone(imputer)), ("bins", bins)]), numeric)
        )
    if categorical:
        transformers.append(("categorical", Pipeline(categorical_steps), categorical))
    if not transformers:
        raise ValueError("the frame has no feature columns")
    return ColumnTransformer(transformers, sparse_threshold=0.0, verbose_feature_names_out=True)
