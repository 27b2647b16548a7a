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

# types beyond skops' defaults that tandem's own preprocessors may contain
TRUSTED_TYPES: list[str] = []


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
