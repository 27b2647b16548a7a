"""Use a trained pipeline on new data: load the artifacts, check the input, predict, write.

A model directory is what the pipeline writes for one data set (``models/<name>/``):
``preprocessor.skops`` (the fitted sklearn preprocessor, read by skops with trusted types only)
and ``model/`` (the torch estimator: JSON + safetensors), and after the export stage
``model.onnx`` and ``serving.json``. Loading never unpickles anything.

``serving.json`` (``Serving``) says what the directory serves beyond the trained network: the
export stage writes it from the entry's evaluate section and label names, the keys the evaluate
stage scores with. An image classifier with ``evaluate.tta`` serves its test-time augmented network
(``models.ShiftAveraged``), in torch and in ``model.onnx`` alike, so that ``tandem predict``,
``tandem serve`` and eval.json's headline are one model; classes are named by
the entry's ``label_names`` and listed in natural order ("1", "2", ..., "10"), as the figures show
them. A directory without it serves the plain network under the labels it was trained on.

The same checks guard every route in (``tandem predict``, ``tandem serve``, the export parity
check): missing columns are named, numbers must be numbers the model can compute with (finite
and inside float32's range, the precision of the network and of ``model.onnx``; a value outside
it is refused with its column and row rather than answered with NaN), and images are turned
into rows exactly the way an image data set's training images were (resized to the model's
image shape, light ink on a dark background when grey, each image stretched to [-1, 1]).
Messages quote at most a short excerpt of an offending value (``excerpt``).
"""

from __future__ import annotations

import hashlib
import json
import math
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tandem import data, evaluation, features, io
from tandem.estimators import TorchClassifier, TorchRegressor

PREPROCESSOR = "preprocessor.skops"
MODEL = "model"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
SERVING_FILE = "serving.json"
SERVING_FORMAT = "tandem-serving/1"
IMAGE_SUFFIXES = data.IMAGE_SUFFIXES  # what an ``images`` source trains on
TABLE_SUFFIXES = (".csv", ".parquet")
OUTPUT_SUFFIXES = (".csv", ".parquet", ".json")
METADATA_KEY = "tandem"  # the ONNX file's metadata entry (JSON) written by tandem.export
FLOAT32_MAX = float(np.finfo(np.float32).max)  # about 3.4e38: larger values become infinity
EXCERPT_CHARS = 100  # the most of an offending value an error message quotes


class InputError(ValueError):
    """The data handed to a model is unusable; the message names the column, row or file."""


@dataclass(frozen=True)
class Serving:
    """What a model directory serves on top of its trained network.

    ``tta``: an image classifier serves test-time augmentation, the mean probabilities over the
    image and its 1-pixel shifts (``models.ShiftAveraged``), as the evaluate stage scores it with
    ``evaluate.tta``. ``label_names``: how each label is shown, keys being the labels as strings
    (USPS: {"1": "0", ..., "10": "9"}); None shows them as they are.
    """

    tta: bool = False
    label_names: dict[str, str] | None = None

    @property
    def served(self) -> str:
        """``"tta"`` or ``"plain"``: the name eval.json, export.json and /metadata use."""
        return "tta" if self.tta else "plain"

    @classmethod
    def read(cls, model_dir: str | Path) -> Serving:
        """``serving.json`` of a model directory; the plain network when there is none."""
        path = Path(model_dir) / SERVING_FILE
        if not path.is_file():
            return cls()
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != SERVING_FORMAT:
            raise ValueError(f"{path} was not written by tandem export (format {SERVING_FORMAT})")
        if record.get("served") not in ("tta", "plain"):
            raise ValueError(f"{path}: 'served' must be 'tta' or 'plain'")
        names = record.get("label_names")
        if names is not None and not isinstance(names, dict):
            raise ValueError(f"{path}: 'label_names' must be a mapping or null")
        return cls(tta=record["served"] == "tta", label_names=names)


@dataclass
class Pipeline:
    """A fitted preprocessor and torch estimator read from one model directory, and what the
    directory serves of them (``serving``)."""

    model_dir: Path
    preprocessor: Any
    estimator: TorchClassifier | TorchRegressor
    target_scaler: Any = None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    serving: Serving = field(default_factory=Serving)

    @property
    def task(self) -> str:
        return "classification" if isinstance(self.estimator, TorchClassifier) else "regression"

    @property
    def order(self) -> np.ndarray:
        """Positions of the estimator's ``classes_`` in the served order (natural order: "1",
        "2", ..., "10"); served probabilities are the estimator's columns taken in this order."""
        return evaluation.natural_order(self.estimator.classes_)

    @property
    def model_classes(self) -> list[Any] | None:
        """The labels the network was trained on, in the served order."""
        if self.task != "classification":
            return None
        return [c.item() if isinstance(c, np.generic) else c
                for c in self.estimator.classes_[self.order]]  # fmt: skip

    @property
    def classes(self) -> list[Any] | None:
        """The served classes: ``model_classes`` as ``serving.label_names`` shows them."""
        if self.task != "classification":
            return None
        return evaluation.display_labels(self.model_classes, self.serving.label_names)

    def record(self) -> dict[str, Any]:
        """``serving.json``'s content: what is served, and the classes it answers with."""
        return {
            "format": SERVING_FORMAT,
            "served": self.serving.served,
            "label_names": self.serving.label_names,
            "classes": self.classes,
            "model_classes": self.model_classes,
        }

    @property
    def feature_names(self) -> list[str]:
        """The raw input columns, in the order the preprocessor was fitted on."""
        return [str(c) for c in self.preprocessor.feature_names_in_]

    @property
    def by_columns(self) -> bool:
        """A tabular preprocessor (a ColumnTransformer: named columns, imputation), as against a
        scaler over a matrix of numbers (image pixels)."""
        return hasattr(self.preprocessor, "transformers_")

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(channels, height, width) of an image model's rows, else None: ``augment__shape``
        (the pipeline sets it for every image entry), the module's ``image_shape`` (and
        ``in_channels``), else a square count of numeric
        columns under a plain scaler (a one-channel image, as USPS's 16x16 pixels)."""
        if self.by_columns:
            return None
        params = self.estimator.get_params(deep=False)
        given = {"augment__shape", "module__image_shape"} & {k for k, v in params.items() if v}
        try:  # the pipeline records every image entry's augment__shape
            return self.estimator.image_shape(len(self.feature_names))
        except ValueError:
            if given:
                raise
            return None  # no image: not a square of at least 4x4

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    def predict_proba(self, frame: pd.DataFrame, *, tta: bool | None = None) -> np.ndarray:
        """The served model's class probabilities (classification; columns in the order of
        ``classes``) or predictions (regression), float64. ``tta``: an image classifier's
        probabilities averaged over each image and its 1-pixel shifts; None: as served."""
        tta = self.serving.tta if tta is None else tta
        if tta and (self.task != "classification" or not self.is_image):
            raise InputError(
                f"test-time augmentation shifts images; {self.model_dir} is not an image classifier"
            )
        X = self.preprocessor.transform(prepare_frame(frame, self))
        check_preprocessed(X)
        if self.task == "classification":
            proba = self.estimator.predict_proba_tta(X) if tta else self.estimator.predict_proba(X)
            return check_output(np.asarray(proba, dtype=np.float64)[:, self.order])
        pred = self.estimator.predict(X)
        if self.target_scaler is not None:
            pred = self.target_scaler.inverse_transform(np.reshape(pred, (-1, 1))).ravel()
        return check_output(np.asarray(pred, dtype=np.float64))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return result_frame(self, self.predict_proba(frame))


def column_kinds_of(preprocessor) -> tuple[list[str], list[str]]:
    """(numeric, categorical) raw columns of a fitted preprocessor.

    A ColumnTransformer says which column went to which branch; anything else (USPS's scaler
    pipeline) takes only numbers.
    """
    names = [str(c) for c in preprocessor.feature_names_in_]
    transformers = getattr(preprocessor, "transformers_", None)
    if transformers is None:
        return names, []
    categorical = []
    for branch, _, columns in transformers:
        if branch == "categorical":
            categorical.extend(str(c) for c in columns)
    return [n for n in names if n not in categorical], [n for n in names if n in categorical]


def load(model_dir: str | Path) -> Pipeline:
    """Read a model directory (skops with trusted types + safetensors; no pickle)."""
    model_dir = Path(model_dir)
    model_path = model_dir / MODEL
    if not (model_dir / PREPROCESSOR).is_file() or not (model_path / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a model directory: it needs {PREPROCESSOR} and {MODEL}/ "
            "(models/<name>/ for an entry of params.yaml's datasets)"
        )
    config_file = model_path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc}); refusing to load") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{config_file} holds a JSON {type(config).__name__}, not a tandem model config "
            "(an object); refusing to load"
        )
    cls = TorchRegressor if config.get("estimator") == "TorchRegressor" else TorchClassifier
    estimator = cls.load(model_path, device="cpu")
    preprocessor = features.load_transformer(model_dir / PREPROCESSOR)
    scaler = TorchRegressor.load_target_scaler(model_path) if cls is TorchRegressor else None
    if not hasattr(preprocessor, "feature_names_in_"):
        raise ValueError(f"{model_dir / PREPROCESSOR} is not a fitted tandem preprocessor")
    numeric, categorical = column_kinds_of(preprocessor)
    pipe = Pipeline(model_dir, preprocessor, estimator, scaler, numeric, categorical)
    pipe.serving = Serving.read(model_dir)
    check_serving(pipe)
    return pipe


def check_serving(pipe: Pipeline) -> None:
    """Refuse what the model cannot serve at load, not per request: test-time augmentation of
    anything but an image classifier, label names that give two classes one name."""
    if pipe.serving.tta and (pipe.task != "classification" or not pipe.is_image):
        raise ValueError(
            f"{pipe.model_dir / SERVING_FILE}: test-time augmentation shifts images; the model is "
            "not an image classifier"
        )
    _ = pipe.classes


ONNX_META_KEYS = ("task", "classes", "feature_names", "numeric", "categorical", "layout")


class OnnxModel:
    """An exported model run by onnxruntime, fed from a frame of raw columns.

    A file that onnxruntime cannot load, or that lacks tandem's metadata (the served classes,
    the raw columns and how they feed the graph), is refused at load with a ValueError naming
    it, never later, per request."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnx
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist: run `tandem export` first")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
            proto = onnx.load(str(self.path), load_external_data=False)
        except (MemoryError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors (InvalidProtobuf, Fail, ...) are bare Exceptions
            raise ValueError(
                f"{self.path} is not an ONNX model onnxruntime can load "
                f"({excerpt(str(exc).strip().splitlines()[0] if str(exc).strip() else exc)}); "
                "rerun the export stage"
            ) from None
        self.meta = self._metadata({p.key: p.value for p in proto.metadata_props})
        self.task = self.meta["task"]
        self.classes = self.meta["classes"]  # the served names, in the probabilities' order
        self.served = self.meta.get("served", "plain")
        self.feature_names = self.meta["feature_names"]
        self.numeric = self.meta["numeric"]
        self.categorical = self.meta["categorical"]
        wanted = ["features"] if self.meta["layout"] == "matrix" else self.meta["input_names"]
        given = {i.name for i in self.session.get_inputs()}
        if not set(wanted) <= given:
            raise ValueError(
                f"{self.path}: its graph takes {sorted(given)}, its metadata names {wanted}; "
                "rerun the export stage"
            )

    def _metadata(self, props: dict[str, str]) -> dict[str, Any]:
        """tandem's metadata entry of the file, checked for what serving reads."""
        if METADATA_KEY not in props:
            raise ValueError(f"{self.path} was not written by tandem export (no metadata)")
        try:
            meta = json.loads(props[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: its {METADATA_KEY!r} metadata is not JSON ({exc})") \
                from None  # fmt: skip
        if not isinstance(meta, dict):
            meta = {}
        keys = (
            ONNX_META_KEYS if meta.get("layout") == "matrix" else (*ONNX_META_KEYS, "input_names")
        )
        missing = [k for k in keys if k not in meta]
        if missing:
            raise ValueError(
                f"{self.path}: its {METADATA_KEY!r} metadata lacks {missing}; rerun the export "
                "stage"
            )
        return meta

    def feeds(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Onnxruntime inputs from a frame already checked by ``prepare_frame``."""
        if self.meta["layout"] == "matrix":
            return {"features": X[self.feature_names].to_numpy(dtype=np.float32)}
        inputs = dict(zip(self.feature_names, self.meta["input_names"], strict=True))
        out = {}
        for name in self.numeric:
            out[inputs[name]] = X[name].to_numpy(dtype=np.float32).reshape(-1, 1)
        for name in self.categorical:
            values = ["" if not isinstance(v, str) else v for v in X[name]]
            out[inputs[name]] = np.asarray(values, dtype=object).reshape(-1, 1)
        return out

    def run(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities (N, n_classes; columns as ``classes``) or predictions (N,), float32;
        a row whose answer is not finite is refused (``check_output``)."""
        name = "probabilities" if self.task == "classification" else "prediction"
        return check_output(self.session.run([name], self.feeds(X))[0])


def predict_file(
    path: str | Path, model_dir: str | Path, *, backend: str = "torch", tta: bool = False
) -> pd.DataFrame:
    """The served model's predictions for a CSV/parquet/PNG input: ``prediction`` and
    ``proba_<class>`` per class, named and ordered as the directory serves them.

    A ``file`` column (images) or an ``id`` column in the input is carried over. ``tta`` (image
    classifiers): test-time augmentation, as ``evaluate.tta``; a directory that serves it runs it
    without being asked, and there the flag changes nothing. A plain ``model.onnx`` cannot
    augment: ``tta`` with the onnx backend is refused unless the file serves it.
    """
    pipe = load(model_dir)
    if tta and (pipe.task != "classification" or not pipe.is_image):
        raise InputError(
            f"test-time augmentation shifts images; {pipe.model_dir} is not an image classifier"
        )
    frame = read_input(path, pipe)
    X = prepare_frame(frame, pipe)
    if backend == "onnx":
        model = OnnxModel(Path(model_dir) / ONNX_FILE)
        if tta and model.served != "tta":
            raise InputError(
                "test-time augmentation runs in torch here: use --backend torch with --tta "
                "(this model.onnx is the plain network; the export stage builds the augmented "
                "one when the entry's evaluate.tta is on)"
            )
        proba, classes = model.run(X).astype(np.float64), model.classes
        served = model.served
    else:
        proba, classes = pipe.predict_proba(X, tta=True if tta else None), pipe.classes
        served = pipe.serving.served
    if tta and served == "tta":
        from tandem.console import console

        console.print(
            f"note: {pipe.model_dir} serves test-time augmentation already (evaluate.tta); "
            "--tta changes nothing", highlight=False, soft_wrap=True,
        )  # fmt: skip
    result = result_frame(pipe, proba, classes)
    for key in ("id", "file"):
        if key in frame.columns and key not in pipe.feature_names:
            result.insert(0, key, frame[key].to_numpy())
    return result


# ------------------------------------------------------------------------------ checking input
def prepare_frame(frame: pd.DataFrame, pipe: Pipeline) -> pd.DataFrame:
    """The model's raw columns, in training order, with checked types.

    Missing columns are named; extra columns (ids, the target) are ignored; numeric columns must
    hold numbers the model can compute with (``numeric_column``: NaN is allowed where the
    preprocessor imputes, i.e. tabular models); categorical values become strings, missing ones
    stay missing.
    """
    names = pipe.feature_names
    missing = [c for c in names if c not in frame.columns]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (" …" if len(missing) > 10 else "")
        raise InputError(f"{len(missing)} feature column(s) missing: {shown}")
    if len(frame) == 0:
        raise InputError("no rows to predict")
    out = {name: numeric_column(frame[name], name) for name in pipe.numeric}
    if not pipe.by_columns:
        X = pd.DataFrame(out, columns=names)
        nan = X.isna().any()
        if nan.any():  # an image scaler does not impute
            name = nan[nan].index[0]
            row = int(np.flatnonzero(X[name].isna().to_numpy())[0])
            raise InputError(
                f"column {name!r} has missing values (NaN), row {row} first; this model takes "
                "finite numbers only"
            )
        return X
    for name in pipe.categorical:
        col = frame[name].astype(object)
        out[name] = np.asarray([np.nan if _missing(v) else str(v) for v in col], dtype=object)
    return pd.DataFrame(out, columns=names)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def numeric_column(col: pd.Series, name: str) -> np.ndarray:
    """A column's values as float64: numbers and numeric text are taken, anything else is
    refused naming the column and row; missing values stay NaN; values the model cannot compute
    with are refused (``check_range``)."""
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiu":  # numbers already (fast)
        values = col.to_numpy(dtype=np.float64)
        check_range(values, name, col)
        return values
    try:
        values = pd.to_numeric(col, errors="coerce")
    except OverflowError:  # a Python integer beyond float64: infinite, as far as the model goes
        values = pd.to_numeric(col.map(_float_or_inf), errors="coerce")
    bad = values.isna() & col.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"column {name!r} must hold numbers; row {row} has {excerpt(col.iloc[row])}"
        )
    values = values.astype("float64").to_numpy()
    check_range(values, name, col)
    return values


def _float_or_inf(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.copysign(math.inf, value)
    return value


def number_problem(value: Any) -> str | None:
    """Why a number cannot reach the model, or None (also for anything that is not a number).

    The network and ``model.onnx`` compute in float32: a value beyond its range (about
    ±3.4e38) becomes infinity there and every probability NaN, so it is refused like NaN and
    infinity themselves. Exact for integers of any size (no conversion to float).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return "NaN"
    if abs(value) > FLOAT32_MAX:
        if isinstance(value, float | np.floating) and math.isinf(value):
            return "infinite"
        return f"beyond float32's range (±{FLOAT32_MAX:.3g}), in which the model computes"
    return None


def check_range(values: np.ndarray, name: str, shown: Sequence[Any] | pd.Series) -> None:
    """Refuse infinite values and values beyond float32's range (``number_problem``) in one
    column, naming it, the first such row and (an excerpt of) the value as given in ``shown``;
    NaN is left to the caller (a missing value where the model imputes)."""
    with np.errstate(invalid="ignore"):
        bad = np.abs(values) > FLOAT32_MAX
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = shown.iloc[row] if isinstance(shown, pd.Series) else shown[row]
        problem = number_problem(values[row])
        raise InputError(f"column {name!r}, row {row}: {excerpt(value)} is {problem}")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = EXCERPT_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` in at most about ``limit`` characters, for messages that quote input: a
    long string shows its start and length, a huge integer its number of digits, containers
    their first items."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 300:
        digits = int(math.log10(abs(value))) + 1
        digits -= abs(value) < 10 ** (digits - 1)  # log10 rounds 10**400 - 1 up to 400.0
        return f"an integer of about {digits:,} digits"
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[: limit - 20]!r}… ({len(value):,} characters)"
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_preprocessed(X: Any) -> None:
    """Refuse rows that preprocessing takes beyond float32's range (a raw value in range,
    scaled by a spread under 1): the network would see infinity there. ``model.onnx`` scales
    inside its graph, where ``check_output`` catches the same rows."""
    if hasattr(X, "tocsr"):  # scipy sparse
        largest = np.asarray(abs(X.tocsr()).max(axis=1).todense()).ravel()
    else:
        with np.errstate(invalid="ignore"):
            largest = np.nanmax(np.abs(np.asarray(X, dtype=np.float64)), axis=1, initial=0.0)
    bad = largest > FLOAT32_MAX
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"row {row}: after preprocessing a value lies beyond float32's range, in which the "
            f"model computes ({int(bad.sum())} row(s) in all): its raw values are far outside "
            "the range the model was trained on"
        )


def check_output(out: np.ndarray) -> np.ndarray:
    """The model's answer, refused where a row's is not finite: an input far outside what the
    model was trained on can overflow float32 inside it (after preprocessing) even when each raw
    value lies in range, and a NaN probability must never become a silent label."""
    finite = np.isfinite(out) if out.ndim == 1 else np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"row {row}: the model's output is not a finite number ({int((~finite).sum())} "
            "row(s) in all): values far outside the range the model was trained on overflow "
            "float32 inside it, after preprocessing"
        )
    return out


def result_frame(
    pipe: Pipeline, proba: np.ndarray, classes: Sequence[Any] | None = None
) -> pd.DataFrame:
    """``prediction`` (+ ``proba_<class>`` per class) as a frame, one row per input row.
    ``classes`` name the columns of ``proba`` (default: the served ``pipe.classes``)."""
    if pipe.task == "regression":
        return pd.DataFrame({"prediction": np.asarray(proba, dtype=float)})
    classes = list(pipe.classes if classes is None else classes)
    proba = np.asarray(proba)
    labels = np.empty(len(classes), dtype=object)
    labels[:] = classes
    frame = pd.DataFrame({"prediction": labels[proba.argmax(axis=1)]})
    for i, label in enumerate(classes):
        frame[f"proba_{label}"] = proba[:, i]
    return frame


# ------------------------------------------------------------------------------ images
class ImageTooLarge(InputError):
    """An image with more pixels than the caller decodes; said from its header, before decoding."""


def scale_image(pixels: np.ndarray) -> np.ndarray:
    """A grey image's pixels (any range) -> a row: each image stretched to exactly [-1, 1].

    USPS's pixels are per image min-max scaled (every image holds -1 and 1), so the same is done
    here; a blank image has no ink and is refused.
    """
    try:
        return data.stretch_pixels(pixels)
    except data.DataError as exc:
        raise InputError(f"{exc}: no digit to read") from None


def image_to_row(image, shape: tuple[int, int, int] = (1, 16, 16)) -> np.ndarray:
    """A PIL image -> a row of ``shape`` (channels, height, width): resized, light ink on dark
    when grey, scaled, exactly as an ``images`` data source reads its training images
    (``tandem.data.image_pixels``)."""
    channels, height, width = shape
    try:
        return data.image_pixels(image, (height, width), channels=channels)
    except data.DataError as exc:
        raise InputError(f"{exc}: no digit to read" if "blank" in str(exc) else str(exc)) from None


class _GreyLevels:
    """Grey levels (0 black .. 255 white, unrounded) in the one role ``data.image_pixels`` gives
    a decoded picture: ``convert("L")``. Numbers then go through the very code pictures go
    through (polarity, resizing, stretching), without rounding them to 8 bits."""

    def __init__(self, levels: np.ndarray):
        self.levels = levels

    def convert(self, mode: str) -> np.ndarray:
        return self.levels


def pixels_to_row(pixels: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """An image given as numbers (height x width grey levels, or channels x height x width) of
    any range -> a row, as ``image_to_row`` reads a picture: grey levels are read on the image's
    own range (its darkest value as black, its lightest as white), so dark ink on light paper
    is inverted exactly as in a picture, and an 8-bit picture that holds both black and white
    gives the same row either way. Numbers must be finite and in float32's range."""
    channels, height, width = shape
    want = (height, width) if channels == 1 else (channels, height, width)
    try:
        grid = np.asarray(pixels, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        grid = None
    if grid is None or grid.shape != want:
        got = "a ragged or non-numeric array" if grid is None else f"shape {grid.shape}"
        raise InputError(f"must be {' x '.join(map(str, want))} numbers, got {got}")
    bad = ~np.isfinite(grid) | (np.abs(np.nan_to_num(grid)) > FLOAT32_MAX)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"pixel {list(at)} is {number_problem(grid[at]) or 'not finite'}; pixels must be "
            "finite numbers"
        )
    if channels != 1:
        return scale_image(grid)
    low, high = grid.min(), grid.max()
    if high <= low:
        return scale_image(grid)  # blank: refused with the usual message
    return image_to_row(_GreyLevels((grid - low) / (high - low) * 255.0), shape)


def image_row(
    source: Any,
    name: str,
    shape: tuple[int, int, int],
    *,
    max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
) -> np.ndarray:
    """One image (a path or a binary file object) -> a row, as ``image_to_row``; errors say
    ``name`` (the file, or "image 3" of a request), never the object read from.

    ``max_pixels``: the most pixels (width x height) decoded, checked from the header before a
    byte of pixel data is decompressed (``ImageTooLarge``); None keeps PIL's own guard against
    decompression bombs, also an ``ImageTooLarge``. ``formats``: the PIL formats tried (None:
    all). Each image is decoded, reduced to its row and dropped before the next is opened.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(source, formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name} is too large to decode ({exc})") from None
    except UnidentifiedImageError:
        kind = "/".join(formats) if formats else "a format PIL reads"
        raise InputError(f"{name} is not a readable image (not {kind} data)") from None
    except OSError as exc:
        raise InputError(f"{name} is not a readable image ({excerpt(str(exc))})") from None
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLarge(
                f"{name} is {width}x{height} = {width * height:,} pixels; at most "
                f"{max_pixels:,} are decoded (--max-image-pixels): send it smaller"
            )
        try:
            image.load()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, zlib.error, ...
            raise InputError(f"{name} is not a readable image ({excerpt(str(exc))})") from None
        try:
            return image_to_row(image, shape)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None


def image_files(path: Path) -> list[Path]:
    """A folder's images (``IMAGE_SUFFIXES``, the ones training reads), sorted; a file as is."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return files
    return [path]


def read_images(paths: Sequence[Path], pipe: Pipeline) -> pd.DataFrame:
    """Image files -> one row per image in the model's pixel columns, plus a ``file`` column."""
    shape = pipe.image_shape
    if shape is None:
        raise InputError(
            f"images need a model trained on an image data set; this model takes "
            f"{len(pipe.feature_names)} columns"
        )
    rows = np.empty((len(paths), len(pipe.feature_names)))
    for i, path in enumerate(paths):
        rows[i] = image_row(path, str(path), shape)
    frame = pd.DataFrame(rows, columns=pipe.feature_names)
    frame.insert(0, "file", [str(p) for p in paths])
    return frame


def read_input(path: str | Path, pipe: Pipeline) -> pd.DataFrame:
    """CSV/parquet rows, an image, or a folder of images (``IMAGE_SUFFIXES``), as a frame the
    pipeline can take."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in IMAGE_SUFFIXES:
        return read_images(image_files(path), pipe)
    if suffix == ".csv":
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not a readable CSV file ({exc})") from None
    if suffix == ".parquet":
        try:
            return io.read_parquet(path)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    raise InputError(
        f"{path}: unknown input type {suffix!r}; use one of "
        f"{[*TABLE_SUFFIXES, *IMAGE_SUFFIXES]} or a folder of images"
    )


def check_output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(
            f"{path}: unknown output type {path.suffix!r}; use one of {list(OUTPUT_SUFFIXES)}"
        )
    return path


def write_predictions(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write predictions atomically, the format chosen by the extension."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return io.write_parquet(path, frame)
    if suffix == ".json":
        return io.write_json(path, frame.to_dict(orient="records"))
    with io.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


# ------------------------------------------------------------------------------ versions
def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(artifact: str | Path, root: str | Path | None = None) -> tuple[str | None, str]:
    """The artifact's hash as DVC recorded it in dvc.lock, else its computed md5.

    Returns (md5, source) with source "dvc.lock" or "computed"; a directory without a dvc.lock
    entry gets the md5 of its files' md5s (not DVC's own .dir hash, which only DVC computes).
    """
    import yaml

    artifact = Path(artifact)
    root = Path(root) if root is not None else _project_root(artifact)
    if root is not None and (root / "dvc.lock").is_file():
        try:
            rel = artifact.resolve().relative_to(root.resolve()).as_posix()
            lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}
        except (ValueError, yaml.YAMLError):
            lock = {}
            rel = None
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                if out.get("path") == rel and out.get("md5"):
                    return out["md5"], "dvc.lock"
    if artifact.is_dir():
        digest = hashlib.md5()
        for f in sorted(p for p in artifact.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(artifact).as_posix()}:{file_md5(f)}\n".encode())
        return digest.hexdigest(), "computed"
    if artifact.is_file():
        return file_md5(artifact), "computed"
    return None, "missing"


def _project_root(path: Path) -> Path | None:
    for folder in path.resolve().parents:
        if (folder / "dvc.yaml").is_file():
            return folder
    return None
