"""params.yaml as pydantic models: one model per stage section, unknown keys refused.

Every field is required here, so params.yaml is the single place where defaults live, and the file
DVC reads is always complete. ``--set key=value`` overrides are applied to the raw mapping before
validation, so an override gets exactly the same checks as the file.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SOURCES = "data/sources"  # local sources: data/sources/<source>/..., a dep of every fetch stage
WEIGHTS = f"{SOURCES}/weights"  # weights files for train.init_weights: a dep of every resolve
NETS = "nets"  # the project's own module classes (train.module: nets/FILE.py:Class): the same


class ParamsError(ValueError):
    """params.yaml or an override is wrong; the message names every offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitParams(Section):
    method: Literal["random", "ordered"]
    test_size: float = Field(gt=0, lt=1)
    seed: int
    n_train: int | None = Field(
        gt=0, description="method=ordered: the first n_train rows train; null: 1 - test_size"
    )

    @model_validator(mode="after")
    def _no_inert_keys(self) -> SplitParams:
        if self.method == "random" and self.n_train is not None:  # it would change nothing
            raise ValueError(
                f"n_train={self.n_train} does nothing with method random (test_size sets the "
                "sizes); it is the training rows of method ordered: set both, or neither"
            )
        return self


class PreprocessParams(Section):
    scaler: Literal["standard", "minmax", "robust", "none"]
    pca: int | float | None = Field(description="image entries: PCA n_components; null: none")
    numeric_imputer: Literal["median", "mean", "knn"] = Field(description="tabular entries")
    min_frequency: int | float | None = Field(description="rarer categories are grouped")
    numeric_encoding: Literal["none", "piecewise_linear"] = Field(
        description="piecewise_linear adds target-aware bin encodings of the numeric columns"
    )
    n_bins: int = Field(ge=2, description="bins per numeric column for piecewise_linear")


class AugmentParams(Section):
    """Ranges of the random affine transforms (and elastic distortion) of training images."""

    rotate: float = Field(0.0, ge=0, description="degrees, either way")
    translate: float = Field(0.0, ge=0, description="fraction of the side, either way")
    scale: float = Field(0.0, ge=0, description="relative zoom, either way")
    shear: float = Field(0.0, ge=0, description="degrees, either way")
    elastic: float = Field(0.0, ge=0, description="elastic displacement in pixels; 0: off")
    elastic_sigma: float = Field(3.0, gt=0, description="smoothness of the elastic field, pixels")


class TrainParams(Section):
    """The torch estimator's hyperparameters, shared by every entry (each may override keys)."""

    module: str = Field(
        description="auto: cnn for image entries, mlp for tabular ones; a registered name; or "
        "your own nn.Module class, nets/FILE.py:Class or package.module:Class"
    )
    module_kwargs: dict[str, dict[str, Any]] = Field(
        description="keyword arguments of each module, by module name"
    )
    criterion: str | None = Field(
        description="the loss: null (cross-entropy, or mse for regression), a name (mse, l1, "
        "huber, smooth_l1, cross_entropy), or your own nn.Module loss class, nets/FILE.py:Class "
        "(built with reduction='none')"
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    batch_size: int | Literal["auto"] = Field(
        description="auto: about 64 batches an epoch (a power of 2 between 16 and 256)"
    )
    max_epochs: int = Field(ge=1)
    min_steps: int = Field(ge=0, description="small sets train more epochs, to this many steps")
    patience: int | None = Field(ge=1)
    validation_fraction: float = Field(ge=0, lt=1)
    lr_schedule: Literal["onecycle", "cosine"] | None
    seed: int = Field(ge=0, lt=2**32, description="the estimator's random_state, used as given")
    device: str
    nproc: int = Field(ge=1, description="data-parallel processes under torchrun; 1: one process")
    amp: bool = Field(description="bf16 autocast on CUDA (ignored on the CPU)")
    compile: bool = Field(description="torch.compile the module")
    augment: AugmentParams | None = Field(description="image entries: augmentation; null: off")
    ema: float | None = Field(gt=0, lt=1, description="EMA decay of the weights; null: off")
    label_smoothing: float = Field(ge=0, lt=1)
    init_weights: str | None = Field(
        description="transfer learning: a .safetensors file under data/sources/weights/ whose "
        "tensors start the network where names and shapes match; null: a fresh network"
    )
    freeze: list[str] | None = Field(
        description="parameter-name prefixes kept fixed while training (e.g. ['1', '2'], the "
        "cnn's first conv and BatchNorm); null: none"
    )

    @field_validator("module", "criterion")
    @classmethod
    def _a_module(cls, value: str | None) -> str | None:
        where, colon, name = (value or "").rpartition(":")
        if not colon:
            return value  # auto or a registered name: the train stage names an unknown one
        if not where or not name.isidentifier():
            raise ValueError(f"{value!r}: a module class is FILE.py:Class or package.module:Class")
        path = PurePosixPath(where)
        if where.endswith(".py") and (".." in path.parts or path.parts[0] != NETS):
            raise ValueError(
                f"{value!r}: a module file lives under {NETS}/ (every entry's resolve stage "
                f"depends on it, and its hash goes into the recipe): {NETS}/{path.name}:{name}"
            )
        return value

    @field_validator("init_weights")
    @classmethod
    def _a_weights_source(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        outside = ".." in path.parts or not value.startswith(f"{WEIGHTS}/")
        if outside or path.suffix != ".safetensors":
            raise ValueError(
                f"{value!r} must be a .safetensors file under {WEIGHTS}/ (tracked like the other "
                "local sources; a pickle is never loaded). `tandem weights --dataset NAME -o "
                f"{WEIGHTS}/NAME.safetensors` writes an entry's trained weights there"
            )
        return value

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or auto")
        return value


class EvaluateParams(Section):
    n_worst: int = Field(ge=1, description="misclassified test images shown in the figure")
    tta: bool = Field(description="image entries: average the image and its 1-pixel shifts")


class LinearParams(Section):
    C: float = Field(gt=0, description="LogisticRegression's inverse regularisation")
    alpha: float = Field(gt=0, description="Ridge's regularisation")
    max_iter: int = Field(ge=1)


class RandomForestParams(Section):
    n_estimators: int = Field(ge=1)
    max_depth: int | None = Field(ge=1)


class SVCParams(Section):
    C: float = Field(gt=0)
    gamma: Literal["scale", "auto"] | float


class HistGradientBoostingParams(Section):
    max_iter: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    early_stopping: bool


class BaselinesParams(Section):
    seed: int
    linear: LinearParams
    random_forest: RandomForestParams
    hist_gradient_boosting: HistGradientBoostingParams
    svc: SVCParams = Field(description="image entries only (an RBF SVM on the pixels)")


# the shared sections an entry may override, and the model each is validated with
OVERRIDABLE: dict[str, type[Section]] = {
    "split": SplitParams,
    "preprocess": PreprocessParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "baselines": BaselinesParams,
}


class DataSpec(Section):
    """Where an entry's data comes from and what to predict (``datasets.NAME.data``)."""

    source: Literal["openml", "file", "images", "sklearn"]
    data_id: int | None = Field(None, gt=0, description="source openml: the OpenML data id")
    path: str | None = Field(None, description="source file (CSV/parquet) or images (a folder)")
    name: str | None = Field(None, description="source sklearn: a loader, e.g. load_digits")
    target: str = Field(description="the column to predict (images: the class folder's name)")
    task: Literal["classification", "regression"]
    drop: list[str] = Field([], description="columns removed before preprocessing (ids, leaks)")
    modality: Literal["tabular", "image"] = "tabular"
    image_shape: tuple[int, int] | None = Field(None, description="image entries: (height, width)")
    channels: Literal[1, 3] = Field(1, description="image entries: 1 (grey) or 3 (RGB)")
    dtypes: dict[str, Literal["numeric", "categorical"]] = Field(
        {}, description="column -> numeric (unparseable cells become missing) or categorical"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        needs = {"openml": "data_id", "file": "path", "images": "path", "sklearn": "name"}
        if getattr(self, needs[self.source]) is None:
            raise ValueError(f"source {self.source} needs {needs[self.source]}")
        if self.path is not None:
            folder = f"{SOURCES}/{self.source}/"
            path = PurePosixPath(self.path)
            if ".." in path.parts or not path.as_posix().startswith(folder):
                raise ValueError(
                    f"path {self.path!r} must lie under {folder} (the folder that the entry's "
                    "fetch stage depends on; see data/sources/README.md)"
                )
        if self.source == "images" and self.modality != "image":
            raise ValueError("source images needs modality: image")
        if self.modality == "image":
            if self.image_shape is None:
                raise ValueError("modality image needs image_shape: [height, width]")
            if self.task != "classification":
                raise ValueError("modality image supports task classification only")
            if min(self.image_shape) < 4:
                raise ValueError(f"image_shape {list(self.image_shape)}: each side must be >= 4")
        elif self.image_shape is not None or self.channels != 1:
            raise ValueError("image_shape and channels are for modality image only")
        return self

    @property
    def n_pixels(self) -> int:
        assert self.image_shape is not None
        return self.channels * self.image_shape[0] * self.image_shape[1]


class DatasetEntry(Section):
    """One entry of the registry: its data, how its labels are shown, and its overrides of each
    shared section ({} for none). Every section is written out, even empty, because each stage
    declares only the parts it reads (``datasets.NAME.data``, ``datasets.NAME.train``, ...) and
    DVC needs them present: an override of ``train`` then reruns that entry's training and
    nothing upstream. ``label_names`` is optional: the stages that show labels (evaluate,
    export) read it through the entry's recipes/NAME/labels.yaml."""

    data: DataSpec
    label_names: dict[str, str] | None = Field(
        None,
        description="how each label is shown and served (USPS: '1'..'10' are the digits "
        "0..9); null: as they are. Classification entries only",
    )
    split: dict[str, Any]
    preprocess: dict[str, Any]
    train: dict[str, Any]
    evaluate: dict[str, Any]
    baselines: dict[str, Any]


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied, nested mappings merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def resolve(shared: Section, entry: DatasetEntry, section: str) -> Any:
    """A shared section with one entry's overrides of it applied, validated like the section."""
    overrides = getattr(entry, section)
    if not overrides:
        return shared
    return OVERRIDABLE[section].model_validate(_merged(shared.model_dump(), overrides))


def module_name(train: Any, data: DataSpec) -> str:
    """The module an entry trains: ``train.module``, with ``auto`` the cnn for image entries and
    the mlp for tabular ones."""
    if train.module != "auto":
        return train.module
    return "cnn" if data.modality == "image" else "mlp"


def _image(d: DataSpec) -> bool:
    return d.modality == "image"


def _tabular(d: DataSpec) -> bool:
    return d.modality == "tabular"


def _classifies(d: DataSpec) -> bool:
    return d.task == "classification"


def _image_classifier(d: DataSpec) -> bool:
    return d.modality == "image" and d.task == "classification"


# The keys of a section that reach only some entries (every other key reaches all of them): in an
# entry's recipe the others are null, so that changing them changes no other entry's recipe.
APPLIES: dict[str, dict[str, Any]] = {
    "preprocess": {"pca": _image, "numeric_imputer": _tabular, "min_frequency": _tabular,
                   "numeric_encoding": _tabular, "n_bins": _tabular},
    "train": {"augment": _image, "label_smoothing": _classifies},
    "evaluate": {"n_worst": _image, "tta": _image_classifier},
    "baselines": {"svc": _image_classifier},
}  # fmt: skip


class Recipe:
    """One section as it reaches one entry: the shared section merged with the entry's own
    overrides (``resolve``), with the keys that do not reach the entry set to null and
    ``module_kwargs`` reduced to the module it trains. ``as_dict()`` is the entry's recipe file
    (recipes/NAME/SECTION.yaml), the params file its stages declare to DVC; attribute access
    gives the stages exactly what that file holds (a key that does not reach the entry reads as
    None), so a stage can never read a value whose change would not rerun it."""

    def __init__(self, section: str, values: dict[str, Any], typed: Any = None) -> None:
        self._section, self._values, self._typed = section, values, typed

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._values:
            raise AttributeError(f"{self._section}.{key} is not declared by this stage")
        value = self._values[key]
        typed = self._typed
        computed = typed is None or key not in type(typed).model_fields
        if value is None or key == "module_kwargs" or computed:
            return value  # a computed key (a file's hash), or the stage's view of some keys
        return getattr(self._typed, key)  # nested sections stay typed (augment, linear, ...)

    def model_copy(self, *, update: dict[str, Any]) -> Recipe:
        typed = None if self._typed is None else self._typed.model_copy(update=update)
        return Recipe(self._section, {**self._values, **update}, typed)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def recipe(params: Any, name: str, section: str) -> Recipe:
    """``section`` as it reaches entry ``name`` (see ``Recipe``). ``params`` may be a stage's
    restricted view: only the section's declared keys are then in the recipe."""
    entry = params.datasets[name]
    data, shared = entry.data, getattr(params, section)
    if isinstance(shared, BaseModel):
        typed = resolve(shared, entry, section)
        values = typed.model_dump(mode="json")
    else:  # a view of some keys: merged the way ``resolve`` merges
        typed, own = None, getattr(entry, section) or {}
        values = {}
        for key, value in vars(shared).items():
            value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            given = own.get(key, value)
            both = isinstance(value, dict) and isinstance(given, dict)
            values[key] = _merged(value, given) if both and key in own else given
    for key, reaches in APPLIES.get(section, {}).items():
        if key in values and not reaches(data):
            values[key] = None
    if "module_kwargs" in values and "module" in values:
        used = module_name(typed or SimpleNamespace(**values), data)
        values["module_kwargs"] = {used: values["module_kwargs"].get(used, {})}
    if values.get("init_weights") is not None:  # its content: a new file reruns the entry
        values["init_weights_sha256"] = file_sha256(values["init_weights"], "train.init_weights")
    module = values.get("module_kwargs") and next(iter(values["module_kwargs"]))
    for key, used in (("module", module), ("criterion", values.get("criterion"))):
        if used and used.partition(":")[0].endswith(".py"):  # the user's file, as above
            values[f"{key}_sha256"] = file_sha256(used.partition(":")[0], f"train.{key}")
    return Recipe(section, values, typed)


def file_sha256(path: str, key: str) -> str:
    """The sha256 of a file a param names, or a ParamsError naming the param."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ParamsError(f"{key}: cannot read {path!r} ({exc.strerror or exc})") from None


class CVParams(Section):
    dataset: str = Field(description="the entry of datasets to cross-validate")
    folds: int = Field(ge=2, description="StratifiedKFold splits")
    scoring: list[str] = Field(min_length=1, description="sklearn scorer names")
    max_rows: int | None = Field(ge=2, description="stratified subset of train; null: all rows")
    max_epochs: int | None = Field(ge=1, description="overrides train.max_epochs; null: keep")
    seed: int


class HalvingParams(Section):
    """Successive halving's settings (``tune.method`` halving_grid or halving_random only)."""

    resource: str = Field(
        "n_samples", description="n_samples, or an estimator parameter such as max_epochs"
    )
    factor: int = Field(3, ge=2)
    min_resources: int | Literal["exhaust", "smallest"] | None = Field(
        None, description="null: exhaust (halving_grid) / smallest (halving_random)"
    )
    max_resources: int | None = Field(
        None, description="null: all rows (n_samples) or the estimator's value (max_epochs)"
    )


class TuneParams(Section):
    dataset: str = Field(description="the entry of datasets to search on")
    method: Literal["grid", "random", "halving_grid", "halving_random"]
    estimator: dict[str, Any] = Field(
        description="fixed TorchClassifier params (module, max_epochs, ...); the rest default"
    )
    space: dict[str, Any] = Field(description="estimator param name -> list of values")
    n_iter: int | None = Field(None, ge=1, description="candidates of random / halving_random")
    halving: HalvingParams | None = Field(None, description="halving methods only; {}: defaults")
    folds: int = Field(ge=2)
    scoring: list[str] = Field(min_length=1)
    refit: str = Field(description="the scorer that picks the best candidate")
    max_rows: int | None = Field(ge=2, description="stratified subset of train; null: all rows")
    seed: int
    save_model: bool = Field(description="refit the best candidate and save it in models/tune")

    @model_validator(mode="after")
    def _no_inert_keys(self) -> TuneParams:
        """Each method's own keys, and no key another method would read (it would change
        nothing): random methods draw n_iter candidates, halving methods read halving."""
        draws, halves = self.method.endswith("random"), self.method.startswith("halving")
        if draws and self.n_iter is None:
            raise ValueError(f"method {self.method} draws n_iter candidates: set n_iter")
        if not draws and self.n_iter is not None:
            raise ValueError(f"n_iter does nothing with method {self.method} (it tries every "
                             "candidate of the space): remove it")  # fmt: skip
        if not halves and self.halving is not None:
            raise ValueError(f"halving does nothing with method {self.method}: remove it")
        return self

    @property
    def halving_settings(self) -> dict[str, Any]:
        """Successive halving's settings (HalvingParams' defaults where unset); {} otherwise."""
        if not self.method.startswith("halving"):
            return {}
        return (self.halving or HalvingParams()).model_dump()


class EnsembleParams(Section):
    """Seed ensembles of some entries: the train stage's model plus members - 1 more, each trained
    with the same recipe and another seed, their class probabilities averaged."""

    datasets: list[str] = Field(description="classification entries of datasets to ensemble")
    members: int = Field(ge=2, description="models in each ensemble, the train stage's included")


class Params(Section):
    datasets: dict[str, DatasetEntry] = Field(min_length=1)
    split: SplitParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    baselines: BaselinesParams
    cv: CVParams
    tune: TuneParams
    ensemble: EnsembleParams

    @model_validator(mode="after")
    def _check_entries(self) -> Params:
        problems = []
        for name, entry in self.datasets.items():
            if not name.replace("-", "").replace("_", "").isalnum() or name in RESERVED:
                problems.append(
                    f"datasets.{name}: a name of letters, digits, - and _, other than {RESERVED}"
                )
            resolved = {}
            for section in OVERRIDABLE:
                try:
                    resolved[section] = resolve(getattr(self, section), entry, section)
                except ValidationError as exc:
                    problems += [
                        ".".join([f"datasets.{name}.{section}", *map(str, e["loc"])]) + ": "
                        + ("unknown key" if e["type"] == "extra_forbidden"
                           else e["msg"].removeprefix("Value error, "))
                        for e in exc.errors()
                    ]  # fmt: skip
            if entry.label_names is not None and entry.data.task != "classification":
                problems.append(f"datasets.{name}.label_names: a regression entry has no labels "
                                "to name; remove it")  # fmt: skip
            if "train" in resolved and "preprocess" in resolved:
                problems += _modality_problems(name, entry.data, resolved)
        for section in ("cv", "tune"):
            name = getattr(self, section).dataset
            if name not in self.datasets:
                problems.append(
                    f"{section}.dataset: {name!r} is not in datasets {list(self.datasets)}"
                )
            elif self.datasets[name].data.task != "classification":
                problems.append(f"{section}.dataset: {name!r} is not a classification entry")
        for name in {n for n in self.ensemble.datasets if self.ensemble.datasets.count(n) > 1}:
            problems.append(f"ensemble.datasets: {name!r} is listed twice")
        for name in self.ensemble.datasets:
            if name not in self.datasets:
                problems.append(f"ensemble.datasets: {name!r} is not in datasets")
            elif self.datasets[name].data.task != "classification":
                problems.append(f"ensemble.datasets: {name!r} is not a classification entry")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


# entry names that would collide with another stage's outputs (models/tune, reports/tune)
RESERVED = ("tune",)


def _modality_problems(name: str, data: DataSpec, resolved: dict[str, Any]) -> list[str]:
    """Settings that make no sense for the entry's modality, named before anything runs."""
    train, prep = resolved["train"], resolved["preprocess"]
    if data.modality == "tabular" and train.augment is not None:
        return [
            f"datasets.{name}.train.augment: augmentation is for image entries; set it in an "
            "image entry's own train section (datasets.NAME.train.augment), not the shared one"
        ]
    problems = []
    if data.modality == "image" and prep.pca is not None and train.module != "mlp":
        problems.append(
            f"datasets.{name}.preprocess.pca: PCA components are not an image for the cnn; "
            "use train.module mlp with PCA, or pca null"
        )
    tta = "evaluate" in resolved and resolved["evaluate"].tta
    shifted = [key for key, on in (("train.augment", train.augment is not None),
                                   ("evaluate.tta", tta)) if on]  # fmt: skip
    if data.modality == "image" and shifted and prep.scaler != "none":
        problems.append(
            f"datasets.{name}.{shifted[0]}: augmentation and test-time augmentation move pixels, "
            f"but preprocess.scaler {prep.scaler!r} rescales each pixel position on its own, so a "
            "shifted image would carry another position's scale; set the entry's "
            "preprocess.scaler to none (datasets.NAME.preprocess: {scaler: none})"
        )
    return problems


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.003"`` -> (["train", "lr"], 0.003); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ParamsError(
            f"--set expects KEY=VALUE with a dotted key (train.lr=0.01); got {text!r}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ParamsError(f"--set {key}: cannot read value {raw!r} ({exc})") from exc
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key=value`` applied; unknown keys are refused by name."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise ParamsError(f"unknown key {'.'.join(path[: depth + 1])!r} in --set {text!r}")
            node = child
        # new keys are allowed only inside free-form mappings (module_kwargs); pydantic refuses
        # any other new key, naming its full path
        node[path[-1]] = value
    return out


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        loc = error["loc"]
        if len(loc) == 3 and loc[0] == "datasets" and loc[2] in OVERRIDABLE:
            return f"{key}: missing (write {loc[2]}: {{}} when the entry overrides nothing)"
        return f"{key}: missing"
    if error["type"] == "value_error":  # a validator's message; ours name the full key paths
        message = error["msg"].removeprefix("Value error, ")
        return message if not key or message.startswith(f"{key}.") else f"{key}: {message}"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def validate(raw: Any, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source} is invalid:\n  {lines}") from None


def shadowed(params: Params, overrides: list[str], dataset: str) -> list[str]:
    """The ``--set`` keys of a shared section that the entry's own section overrides, so that
    they do not reach its stage (``train.max_epochs`` when ``datasets.usps.train`` has
    ``max_epochs``): a note for each, naming the key that would."""
    notes, entry = [], params.datasets[dataset]
    for text in overrides:
        path, _ = parse_override(text)
        if len(path) < 2 or path[0] not in OVERRIDABLE:
            continue
        node: Any = getattr(entry, path[0])
        for part in path[1:]:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            key = ".".join(path)
            notes.append(
                f"--set {key} does not reach {dataset!r}: its own datasets.{dataset}.{key} "
                f"({node!r}) wins; --set datasets.{dataset}.{key}=... changes it"
            )
    return notes


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override and validate params.yaml; raise ParamsError naming every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    raw = apply_overrides(raw or {}, overrides or [])
    return validate(raw, str(path))
