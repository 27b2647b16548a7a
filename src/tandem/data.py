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
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit, train_test_split

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
            f"reached ({exc}). Point at an OpenML cache with SCIKIT_LEARN_DATA=<dir> "
            f"(see docs/install.md: running offline)."
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
    stratify: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split: ``random`` (seeded; stratified by the target when ``stratify`` and every
    class has two rows) or ``ordered`` (the first n_train rows train)."""
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
    small = counts[counts < 2]
    if stratify and len(small):  # one row cannot be on both sides of a stratified split
        raise DataError(
            f"target {target!r}: class(es) {[str(c) for c in small.index[:5]]} have a single row, "
            "and a stratified split needs at least two of each class; drop those rows from the "
            "source, or merge each such class into another"
        )
    strata = y if stratify and y.dtype.kind not in "fc" else None
    idx_train, idx_test = train_test_split(
        np.arange(len(frame)), test_size=test_size, random_state=seed, stratify=strata
    )
    return (
        frame.iloc[np.sort(idx_train)].reset_index(drop=True),
        frame.iloc[np.sort(idx_test)].reset_index(drop=True),
    )


def validation_rows(
    y: Any, fraction: float, seed: int, *, stratify: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(fit rows, validation rows)`` of a training set: the slice a torch estimator holds out
    for early stopping and its validation curves (``validation_fraction``), sorted; ``None`` when
    the fraction leaves no row. Stratified by ``y`` when ``stratify`` and every class can give a
    row to each side. The preprocess stage fits on the same fit rows, so that no fitted step
    (target-aware bins above all) has seen the rows the validation scores are computed on."""
    labels = np.unique(np.asarray(y), return_inverse=True)[1] if stratify else None
    n = len(y)
    idx = np.arange(n)
    n_valid = int(round(fraction * n))
    if n_valid < 1 or n - n_valid < 2:
        return idx, None
    splitter = ShuffleSplit(n_splits=1, test_size=n_valid, random_state=seed)
    if labels is not None:
        counts = np.bincount(labels)
        n_cls = int((counts > 0).sum())
        if counts[counts > 0].min() >= 2 and n_cls <= n_valid <= n - n_cls:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_valid, random_state=seed)
    fit_idx, valid_idx = next(splitter.split(np.zeros((n, 1)), labels))
    return np.sort(fit_idx), np.sort(valid_idx)


# a text column is "numeric-looking" when at least this share of its cells parse as numbers
NUMERIC_LOOKING = 0.9


def check_intake(
    frame: pd.DataFrame, *, target: str, task: str, drop: list[str] | tuple[str, ...] = (),
    dtypes: dict[str, str] | None = None, source: str = "the data",
) -> pd.DataFrame:
    """The checks a fetched table passes before anything is written, each naming the column and
    the count: rows at all, a target with no missing or non-finite value, no infinite feature,
    and no numeric-looking column with a few unparseable cells (``'oops'`` among numbers would
    make it a category and silently drop the feature). ``dtypes`` settles such a column:
    ``numeric`` turns its bad cells into missing values (imputed later), ``categorical`` keeps
    it as text. Returns the frame with those columns converted."""
    dtypes = dict(dtypes or {})
    if len(frame) == 0:
        raise DataError(f"{source} has no rows (a header alone?)")
    unknown = [c for c in dtypes if c not in frame.columns]
    if unknown:
        raise DataError(f"data.dtypes names columns that {source} does not have: {unknown}")
    if target in dtypes:
        raise DataError(f"data.dtypes: {target!r} is the target (its type comes from the task)")
    frame = frame.copy()
    for column, kind in dtypes.items():
        frame[column] = (pd.to_numeric(frame[column], errors="coerce") if kind == "numeric"
                         else frame[column].astype("string").astype(object))  # fmt: skip
    y = frame[target] if target in frame.columns else None
    if y is not None:
        missing = int(y.isna().sum())
        if missing:
            raise DataError(f"target column {target!r} has {missing} missing values of "
                            f"{len(frame)} rows (drop those rows from {source})")  # fmt: skip
        if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
            bad = int((~np.isfinite(y.to_numpy(dtype=np.float64))).sum())
            if bad:
                raise DataError(f"target column {target!r} has {bad} infinite values")
    problems = []
    for column in frame.columns:
        if column == target or column in drop or column in dtypes:
            continue
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            inf = int(np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
            if inf:
                problems.append(f"column {column!r} has {inf} infinite values")
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            present = values.dropna()
            parsed = pd.to_numeric(present.astype(str), errors="coerce")
            bad = present[parsed.isna()]
            if len(present) and 0 < len(bad) <= (1 - NUMERIC_LOOKING) * len(present):
                first = ", ".join(repr(str(v)[:20]) for v in bad.unique()[:3])
                problems.append(
                    f"column {column!r} looks numeric but {len(bad)} of {len(present)} cells "
                    f"are not numbers (first: {first}); fix them, or declare the column in "
                    f"data.dtypes: {{{column}: numeric}} (they become missing values) or "
                    f"{{{column}: categorical}}"
                )
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))
    return frame


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


# --------------------------------------------------------------------------- more sources
SOURCES = "data/sources"  # the local sources' folder (config.SOURCES): links must stay inside
# (the registry's `file`, `images` and `sklearn` sources; each returns the frame and provenance)
TABLE_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def file_sha256(paths: list[Path], root: Path | None = None) -> str:
    """A content hash of files (and, under ``root``, of their relative names)."""
    digest = hashlib.sha256()
    for path in paths:
        if root is not None:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def inside_sources(path: Path, root: str | Path) -> Path:
    """``path``, refused when it resolves (through a symbolic link, say) outside ``root``: DVC
    tracks what lies under data/sources/, and would not see a change made elsewhere."""
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise DataError(
            f"{path} resolves to a place outside {Path(root).as_posix()}/ (a symbolic link?); "
            "sources must lie inside it, where DVC tracks them: copy the data in instead"
        )
    return path


def read_table_file(
    path: str | Path, *, target: str, root: str | Path | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A CSV or parquet file of the user's (tracked with ``dvc add``) as one frame; with
    ``root`` (the fetch stage's data/sources), it must lie under it once links are resolved."""
    path = Path(path)
    if path.exists() and root is not None:
        inside_sources(path, root)
    if not path.is_file():
        raise DataError(f"{path} does not exist (a CSV or parquet file is expected)")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{path}: expected a {' or '.join(TABLE_SUFFIXES)} file")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many kinds for a bad file
        raise DataError(f"{path} cannot be read as {path.suffix[1:]}: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    if target not in frame.columns:
        raise DataError(f"{path} has no target column {target!r}; columns: {list(frame.columns)}")
    return frame, {
        "source": "file", "path": path.as_posix(), "target": target, "rows": int(len(frame)),
        "columns": int(frame.shape[1]), "file_sha256": file_sha256([path]),
        "sha256": frame_checksum(frame),
    }  # fmt: skip


def stretch_pixels(pixels: np.ndarray) -> np.ndarray:
    """One image (any range) stretched to exactly [-1, 1], flat, as USPS's rows are; a blank
    image (a single grey level) is refused."""
    pixels = np.asarray(pixels, dtype=np.float64)
    low, high = pixels.min(), pixels.max()
    if high <= low:
        raise DataError("the image is blank (a single grey level)")
    return ((pixels - low) / (high - low) * 2.0 - 1.0).reshape(-1)


def image_pixels(image: Any, shape: tuple[int, int], channels: int = 1) -> np.ndarray:
    """A PIL image -> one row of ``channels * height * width`` values in [-1, 1], channel-major.

    Greyscale images are read as light ink on a dark background, as USPS stores its digits: an
    image whose border is mostly light is inverted first. Any size is resized (box filter) to
    ``shape`` = (height, width).
    """
    from PIL import Image

    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float64)
    if pixels.ndim < 2 or min(pixels.shape[:2]) < 2:
        raise DataError(f"an image of shape {pixels.shape} is too small")
    planes = [pixels] if channels == 1 else [pixels[..., c] for c in range(3)]
    if channels == 1:
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        planes = [255.0 - pixels] if border.mean() > 127.5 else planes
    height, width = shape
    if pixels.shape[:2] != (height, width):
        planes = [
            np.asarray(Image.fromarray(p.astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.BOX), dtype=np.float64)
            for p in planes
        ]  # fmt: skip
    return stretch_pixels(np.stack(planes))


def read_image_folder(
    path: str | Path, *, shape: tuple[int, int], channels: int, target: str,
    root: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A folder with one subfolder of PNG/JPEG files per class -> one row per image: the pixels
    (``pixel0``...) and the class (the subfolder's name) in ``target``. Rows follow the sorted
    class and file names, so the same folder always gives the same frame."""
    from PIL import Image, UnidentifiedImageError

    sources, root = root, Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (one subfolder of images per class)")
    if sources is not None:  # the fetch stage: every folder and file resolves inside it
        inside_sources(root, sources)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} holds no class subfolders (one subfolder of images per class)")
    rows, labels, files = [], [], []
    for folder in classes:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for item in (folder, *images) if sources is not None else ():
            inside_sources(item, sources)
        if not images:
            raise DataError(f"class folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        for file in images:
            try:
                with Image.open(file) as image:
                    rows.append(image_pixels(image, shape, channels))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{file} is not a readable image ({exc})") from None
            except DataError as exc:
                raise DataError(f"{file}: {exc}") from None
            labels.append(folder.name)
            files.append(file)
    if len(classes) < 2:
        raise DataError(f"{root} holds one class folder ({classes[0].name}); classes need two")
    frame = pd.DataFrame(np.vstack(rows), columns=[f"pixel{i}" for i in range(len(rows[0]))])
    frame[target] = labels
    return frame, {
        "source": "images", "path": root.as_posix(), "target": target, "rows": len(frame),
        "image_shape": [channels, *shape],
        "classes": {c.name: labels.count(c.name) for c in classes},
        "files_sha256": file_sha256(files, root), "sha256": frame_checksum(frame),
    }  # fmt: skip


def load_sklearn_frame(name: str, *, target: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One of scikit-learn's bundled data sets (``load_digits``, ``load_iris``, ...), offline;
    its target becomes column ``target``."""
    import sklearn.datasets as datasets

    loaders = sorted(n for n in dir(datasets) if n.startswith("load_") and n != "load_files")
    if name not in loaders:
        raise DataError(f"unknown sklearn loader {name!r}; choose one of {loaders}")
    try:
        bunch = getattr(datasets, name)(as_frame=True)
    except TypeError as exc:  # a loader without a frame form (e.g. load_sample_images)
        raise DataError(f"sklearn.datasets.{name} does not give a table ({exc})") from None
    frame = bunch.frame.rename(columns={"target": target})
    frame.columns = [str(c) for c in frame.columns]
    return frame, {
        "source": "sklearn", "name": name, "target": target, "rows": int(len(frame)),
        "columns": int(frame.shape[1]), "sha256": frame_checksum(frame),
    }  # fmt: skip
