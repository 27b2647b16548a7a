"""Data sources and splits.

``fetch_openml_frame`` is the real ``sklearn.datasets.fetch_openml`` path with a configurable cache
directory: with network it downloads (and caches), offline it answers from the cache, and when
neither works the error says how to point at a cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

# scikit-learn 1.9's pandas parser breaks on numeric nominal columns with pandas 3 (sklearn#34892)
# and then deletes the cached file; the liac-arff parser reads every data set correctly.
OPENML_PARSER = "liac-arff"


class DataError(ValueError):
    """Input data is missing, unreadable or inconsistent; the message names the file or column."""


def frame_checksum(frame: pd.DataFrame) -> str:
    """A content hash of a frame (values and column names), independent of the file format."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return digest.hexdigest()


def fetch_openml_frame(
    data_id: int, *, target: str, data_home: str | Path | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fetch an OpenML data set as one frame (features + target column) plus provenance."""
    from urllib.error import URLError

    from sklearn.datasets import fetch_openml, get_data_home

    home = get_data_home(data_home)
    try:
        bunch = fetch_openml(
            data_id=data_id,
            data_home=data_home,
            as_frame=True,
            parser=OPENML_PARSER,
            target_column=None,
        )
    except (URLError, TimeoutError, ConnectionError) as exc:
        raise DataError(
            f"OpenML data id {data_id} is not in the cache at {home} and OpenML could not be "
            f"reached ({exc}). Point at an OpenML cache with SCIKIT_LEARN_DATA=<dir> or "
            f"fetch.data_home in params.yaml (see README: running offline)."
        ) from exc
    frame = bunch.frame
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} is not in OpenML data id {data_id}; "
            f"columns are {list(frame.columns)[:20]}"
        )
    if isinstance(frame[target].dtype, pd.CategoricalDtype):
        frame[target] = frame[target].astype(str)
    frame.columns = [str(c) for c in frame.columns]
    details = bunch.details
    provenance = {
        "source": "openml",
        "data_id": int(data_id),
        "name": details.get("name"),
        "version": int(details["version"]) if details.get("version") else None,
        "openml_md5": details.get("md5_checksum"),
        "url": details.get("url"),
        "target": target,
        "rows": int(frame.shape[0]),
        "columns": int(frame.shape[1]),
        "sha256": frame_checksum(frame),
    }
    return frame, provenance


def split_frame(
    frame: pd.DataFrame,
    *,
    target: str,
    method: str,
    test_size: float,
    seed: int,
    n_train: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split: ``random`` (stratified, seeded) or ``ordered`` (first n_train rows)."""
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} is not in the data ({list(frame.columns)[:10]}…)"
        )
    if method == "ordered":
        if not 0 < n_train < len(frame):
            raise DataError(f"split.n_train={n_train} must be between 1 and {len(frame) - 1}")
        return frame.iloc[:n_train].reset_index(drop=True), frame.iloc[n_train:].reset_index(
            drop=True
        )
    if method != "random":
        raise DataError(f"split.method must be 'random' or 'ordered'; got {method!r}")
    y = frame[target]
    counts = y.value_counts()
    stratify = y if counts.min() >= 2 and y.dtype.kind not in "fc" else None
    idx_train, idx_test = train_test_split(
        np.arange(len(frame)), test_size=test_size, random_state=seed, stratify=stratify
    )
    return (
        frame.iloc[np.sort(idx_train)].reset_index(drop=True),
        frame.iloc[np.sort(idx_test)].reset_index(drop=True),
    )


def xy(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Split a frame into features and target, naming the column when it is missing."""
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} is missing (columns: {list(frame.columns)[:10]}…)"
        )
    return frame.drop(columns=[target]), frame[target]


def tabular_xy(
    frame: pd.DataFrame, *, target: str, drop: list[str] | tuple[str, ...] = (), task: str
) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target of a tabular data set, checked before any work starts.

    The target and every column to drop must exist (each is named when not); a regression target
    must be numeric; columns with no values at all are dropped with a warning that names them.
    """
    import warnings

    if task not in ("classification", "regression"):
        raise DataError(f"task must be 'classification' or 'regression'; got {task!r}")
    if target not in frame.columns:
        raise DataError(f"target column {target!r} does not exist; columns: {list(frame.columns)}")
    missing = [c for c in drop if c not in frame.columns]
    if missing:
        raise DataError(f"drop columns {missing} do not exist; columns: {list(frame.columns)}")
    if target in drop:
        raise DataError(f"target column {target!r} is also listed in drop")
    X, y = frame.drop(columns=[*drop, target]), frame[target]
    if y.isna().any():
        raise DataError(f"target column {target!r} has {int(y.isna().sum())} missing values")
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise DataError(
                f"task is regression but target column {target!r} is not numeric ({y.dtype})"
            )
    empty = [str(c) for c in X.columns if X[c].isna().all()]
    if empty:
        warnings.warn(f"dropping columns with no values: {empty}", UserWarning, stacklevel=2)
        X = X.drop(columns=empty)
    if X.shape[1] == 0:
        raise DataError("no feature columns are left after dropping")
    return X, y
